package relay_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"paradigm/internal/identity"
	"paradigm/internal/mux"
	"paradigm/internal/node"
	"paradigm/internal/proto"
	"paradigm/internal/relay"
	"paradigm/internal/store"
	"paradigm/internal/store/etcdstore"
	"paradigm/internal/store/etcdstore/etcdtest"
)

// clusterRelays starts n relays sharing one etcd (prefix), each binding
// the portaliases on its own loopback address, 127.0.0.2 upwards, as
// relays on separate servers would on theirs.
func clusterRelays(t *testing.T, e *etcdtest.Server, prefix string, n int) []*testRelay {
	t.Helper()
	low, high := portWindow()
	var rs []*testRelay
	for i := range n {
		cfg := relayConfig(t)
		cfg.PortLow, cfg.PortHigh = low, high
		cfg.Bind = fmt.Sprintf("127.0.0.%d", i+2)
		cfg.Listen = cfg.Bind + ":0"
		s, err := etcdstore.Open([]string{e.Client}, prefix, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		cfg.Store = s
		rs = append(rs, startRelay(t, cfg, node.TransportSSH))
	}
	return rs
}

// clusterID is the id a relay has in its cluster: its resolved address.
func clusterID(r *testRelay) string { return r.Addr().String() }

// waitHome waits until r shows playnode online at home on relay home, its
// service online, and returns the service's portalias.
func waitHome(t *testing.T, r *testRelay, playnode, home, service string) uint16 {
	t.Helper()
	var port uint16
	waitState(t, r.Relay, playnode+" at home on "+home+" as "+r.cfg.Bind+" sees it", func(s relay.Snapshot) bool {
		p, ok := s.Playnode(playnode)
		if !ok || !p.Online || p.Relay != home {
			return false
		}
		for _, svc := range p.Services {
			if svc.Name == service && svc.State == relay.StateOnline {
				port = svc.Portalias
				return true
			}
		}
		return false
	})
	return port
}

// echoVia checks that the portalias at addr reaches the echo service.
func echoVia(t *testing.T, addr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, waitTimeout)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(waitTimeout))
	msg := "through " + addr
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != msg {
		t.Fatalf("echo through %s: got %q, %v; want %q", addr, got, err, msg)
	}
}

// TestClusterMesh: three relays sharing etcd. A playnode connected to A
// answers on the same portalias on all three (B and C forward one hop to
// A); a newer session of it on B takes over from A across relays, and A
// then forwards to B; when it stops, every relay shows it offline; when a
// relay stops, its playnodes are gone from the others' view at once.
func TestClusterMesh(t *testing.T) {
	e := etcdtest.Start(t)
	rs := clusterRelays(t, e, "mesh", 3)
	a, b, c := rs[0], rs[1], rs[2]
	var keyFile string
	for _, r := range rs {
		keyFile, _ = authorizeKey(t, r.cfg, "pi", keyFile)
	}
	echo := echoServer(t)
	for _, r := range rs { // joined, with no playnode yet: ready
		waitFor(t, r.cfg.Bind+" to report its cluster store reachable", func() bool {
			c := r.Snapshot().Cluster
			return c != nil && c.StoreOK && len(c.Members) == 3
		})
	}

	onA := startNode(t, a.nodeConfig(t, "pi", keyFile, "echo="+echo))
	port := waitOnline(t, a, "pi", 1)["echo"]
	for _, r := range []*testRelay{b, c} {
		if got := waitHome(t, r, "pi", clusterID(a), "echo"); got != port {
			t.Fatalf("relay %s shows portalias %d for pi echo, A assigned %d", r.cfg.Bind, got, port)
		}
	}
	for range 3 { // several connections over one mesh link
		for _, r := range rs {
			echoVia(t, net.JoinHostPort(r.cfg.Bind, strconv.Itoa(int(port))))
		}
	}

	// The same playnode connects to B (it moved): B's session is newer,
	// A ends its own as replaced and forwards to B from then on.
	snapA, subA := a.Subscribe(64)
	defer subA.Close()
	_ = snapA
	onB := startNode(t, b.nodeConfig(t, "pi", keyFile, "echo="+echo))
	nextEvent(t, subA, "A ends its session of pi as replaced", func(ev relay.Event) bool {
		return ev.Kind == relay.EventDown && ev.Playnode == "pi" && ev.Relay == clusterID(a) && ev.Reason == relay.ReasonReplaced
	})
	onA.stop(t)
	for _, r := range []*testRelay{a, c} {
		waitHome(t, r, "pi", clusterID(b), "echo")
	}
	for _, r := range rs {
		echoVia(t, net.JoinHostPort(r.cfg.Bind, strconv.Itoa(int(port))))
	}

	onB.stop(t)
	for _, r := range rs {
		waitOffline(t, r, "pi")
		closedAtOnceAt(t, net.JoinHostPort(r.cfg.Bind, strconv.Itoa(int(port))))
	}

	// A relay that stops takes its playnodes' presence with it.
	startNode(t, c.nodeConfig(t, "pi", keyFile, "echo="+echo))
	waitHome(t, a, "pi", clusterID(c), "echo")
	c.stop(t)
	waitOffline(t, a, "pi")
	waitOffline(t, b, "pi")
}

// authorizeKey binds playnode name to the key in keyFile (a new key when
// keyFile is empty) in cfg's data folder, and returns the key file.
func authorizeKey(t *testing.T, cfg relay.Config, name, keyFile string) (string, ssh.Signer) {
	t.Helper()
	if keyFile == "" {
		return authorize(t, cfg, name)
	}
	key, err := identity.LoadKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := relay.Authorize(filepath.Join(cfg.DataDir, relay.AuthorizedFile), name, key.PublicKey(), ""); err != nil {
		t.Fatal(err)
	}
	return keyFile, key
}

// TestClusterEtcdOutage: etcd dies for longer than the relays' lease. No
// session drops and every portalias keeps working, through the mesh too;
// the relay says its cluster store is unreachable; a playnode that needs
// a new portalias is admitted once etcd is back, and nothing assigned
// before is lost or moved.
func TestClusterEtcdOutage(t *testing.T) {
	e := etcdtest.Start(t)
	rs := clusterRelays(t, e, "outage", 2)
	a, b := rs[0], rs[1]
	var piKey, tvKey string
	for _, r := range rs {
		piKey, _ = authorizeKey(t, r.cfg, "pi", piKey)
		tvKey, _ = authorizeKey(t, r.cfg, "tv", tvKey)
	}
	echo := echoServer(t)
	startNode(t, a.nodeConfig(t, "pi", piKey, "echo="+echo))
	port := waitOnline(t, a, "pi", 1)["echo"]
	waitHome(t, b, "pi", clusterID(a), "echo")

	_, sub := a.Subscribe(256)
	defer sub.Close()
	e.Kill()
	waitState(t, a.Relay, "A reports its cluster store unreachable", func(s relay.Snapshot) bool {
		return s.Cluster != nil && !s.Cluster.StoreOK
	})
	for _, r := range rs {
		echoVia(t, net.JoinHostPort(r.cfg.Bind, strconv.Itoa(int(port))))
	}
	// A new playnode cannot get a portalias now; it is admitted once etcd
	// is back (it retries after its backoff).
	startNode(t, a.nodeConfig(t, "tv", tvKey, "echo="+echo))
	e.Restart()
	tvPort := waitOnline(t, a, "tv", 1)["echo"]
	waitState(t, a.Relay, "A reports its cluster store reachable again", func(s relay.Snapshot) bool {
		return s.Cluster != nil && s.Cluster.StoreOK
	})
	waitHome(t, b, "tv", clusterID(a), "echo")
	if got := waitHome(t, b, "pi", clusterID(a), "echo"); got != port {
		t.Errorf("after the outage pi's portalias is %d, want %d", got, port)
	}
	if tvPort == port {
		t.Errorf("tv got pi's portalias %d", port)
	}
	for _, r := range rs {
		echoVia(t, net.JoinHostPort(r.cfg.Bind, strconv.Itoa(int(port))))
		echoVia(t, net.JoinHostPort(r.cfg.Bind, strconv.Itoa(int(tvPort))))
	}
	for {
		select {
		case ev := <-sub.C:
			if ev.Kind == relay.EventDown && ev.Playnode == "pi" {
				t.Fatalf("pi's session dropped during the etcd outage: %+v", ev)
			}
			continue
		default:
		}
		break
	}
}

// TestClusterAliasAndMirror: the operator's alias commands change the
// shared store (given with --store), and refuse the data folder's file,
// which is only the relay's mirror of it; every relay serves the moved
// portalias; ls reads the mirror once the relay is gone.
func TestClusterAliasAndMirror(t *testing.T) {
	e := etcdtest.Start(t)
	rs := clusterRelays(t, e, "alias", 2)
	a, b := rs[0], rs[1]
	var keyFile string
	for _, r := range rs {
		keyFile, _ = authorizeKey(t, r.cfg, "pi", keyFile)
	}
	startNode(t, a.nodeConfig(t, "pi", keyFile, "echo="+echoServer(t)))
	old := waitOnline(t, a, "pi", 1)["echo"]
	waitFor(t, "A to record its settings", func() bool {
		_, running, _ := relay.List(a.cfg.DataDir)
		return running
	})
	moved := old + 1
	if moved > a.cfg.PortHigh {
		moved = old - 1
	}
	set := store.Assignment{Playnode: "pi", Service: "echo", Portalias: moved}
	err := relay.AliasSet(context.Background(), a.cfg.DataDir, nil, set, false)
	if err == nil || !strings.Contains(err.Error(), "--store etcd://") {
		t.Fatalf("alias set on a cluster relay's folder without --store: got %v, want an error asking for --store", err)
	}
	if err := relay.AliasSet(context.Background(), a.cfg.DataDir, a.cfg.Store, set, false); err != nil {
		t.Fatalf("alias set with the shared store: %v", err)
	}
	for _, r := range []*testRelay{a, b} {
		waitState(t, r.Relay, "pi echo moved on "+r.cfg.Bind, func(s relay.Snapshot) bool {
			p, _ := s.Playnode("pi")
			return len(p.Services) == 1 && p.Services[0].Portalias == moved && p.Services[0].State == relay.StateOnline
		})
		echoVia(t, net.JoinHostPort(r.cfg.Bind, strconv.Itoa(int(moved))))
	}
	a.stop(t)
	rows, running, err := relay.List(a.cfg.DataDir)
	if err != nil || running || len(rows) != 1 || rows[0].Portalias != moved {
		t.Fatalf("ls of the stopped relay's folder: %+v, running %v, %v; want pi echo at %d from the mirror", rows, running, err, moved)
	}
}

// TestProbeCounted: a node that authenticates and hangs up before its
// hello (failover checking that a relay it prefers is up) is counted as a
// probe, not as a failed handshake.
func TestProbeCounted(t *testing.T) {
	cfg := relayConfig(t)
	_, key := authorize(t, cfg, "pi")
	r := startRelay(t, cfg, node.TransportSSH)
	conn, err := net.Dial("tcp", r.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sess, err := mux.DialSSH(context.Background(), conn, &mux.SSHClientConfig{Key: key, User: "pi", HostKeyCallback: ssh.FixedHostKey(r.HostKey())})
	if err != nil {
		t.Fatal(err)
	}
	sess.Close()
	waitFor(t, "the probe counted", func() bool { return r.Snapshot().Counters.Probes == 1 })
	if c := r.Snapshot().Counters; c.HandshakeFailed != 0 {
		t.Errorf("a probe counted as a failed handshake: %+v", c)
	}
}

// TestMeshRefusesStrangers: the mesh is open only to the host keys the
// cluster's relays registered. A playnode's key, or any other, asking for
// the mesh user is refused at authentication; a relay's own host key is
// let in.
func TestMeshRefusesStrangers(t *testing.T) {
	e := etcdtest.Start(t)
	rs := clusterRelays(t, e, "strangers", 2)
	a, b := rs[0], rs[1]
	_, nodeKey := authorize(t, a.cfg, "pi")
	waitFor(t, "both relays members", func() bool { c := a.Snapshot().Cluster; return c != nil && len(c.Members) == 2 })
	dial := func(key ssh.Signer) error {
		conn, err := net.Dial("tcp", a.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		sess, err := mux.DialSSH(context.Background(), conn, &mux.SSHClientConfig{Key: key, User: proto.MeshUser, HostKeyCallback: ssh.FixedHostKey(a.HostKey())})
		if err == nil {
			sess.Close()
		}
		return err
	}
	if err := dial(nodeKey); !errors.Is(err, mux.ErrKeyRefused) {
		t.Errorf("a playnode's key as %s: %v, want refused", proto.MeshUser, err)
	}
	bKey, err := identity.LoadKey(filepath.Join(b.cfg.DataDir, relay.HostKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := dial(bKey); err != nil {
		t.Errorf("relay B's host key as %s: %v, want admitted", proto.MeshUser, err)
	}
}
