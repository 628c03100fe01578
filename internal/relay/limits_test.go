package relay_test

import (
	"io"
	"log/slog"
	"net"
	"strconv"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"paradigm/internal/identity"
	"paradigm/internal/node"
	"paradigm/internal/relay"
)

// limitsDial connects to a portalias and proves the connection is
// forwarded with one echoed byte; the connection stays open.
func limitsDial(t *testing.T, port uint16) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(faultWait))
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatalf("echo through portalias %d: %v", port, err)
	}
	return c
}

// limitsRefused checks that a new connection to port is closed without a
// byte forwarded, well before the generous deadline.
func limitsRefused(t *testing.T, port uint16) {
	t.Helper()
	c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))))
	if err != nil {
		return // refused outright is fine too
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(faultWait))
	c.Write([]byte("x"))
	n, err := c.Read(make([]byte, 1))
	if n != 0 || err == nil || isTimeout(err) {
		t.Fatalf("connection over the limit to portalias %d: got %d bytes, err %v; want it closed at once", port, n, err)
	}
}

// TestLimitStreamsPerPortalias: connections beyond MaxStreamsPerPortalias
// are closed at once, with one log line, and admitted again once others end.
func TestLimitStreamsPerPortalias(t *testing.T) {
	cfg := faultRelayConfig(t)
	cfg.MaxStreamsPerPortalias = 2
	keys := faultAuthorize(t, cfg.DataDir, "p1")
	r := faultStartRelay(t, cfg)
	faultStartNode(t, r, r.Addr().String(), "p1", keys["p1"], faultEcho(t), slog.LevelInfo, nil)
	port := faultOnline(t, r, "p1")

	first := limitsDial(t, port)
	limitsDial(t, port)
	limitsRefused(t, port)
	limitsRefused(t, port)
	if got := r.log.Count("portalias connection limit reached"); got != 1 {
		t.Errorf("got %d log lines about the limit, want 1", got)
	}
	first.Close()
	faultWaitFor(t, "a connection to be admitted again", func() bool {
		c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))))
		if err != nil {
			return false
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(faultWait))
		c.Write([]byte("x"))
		_, err = io.ReadFull(c, make([]byte, 1))
		return err == nil
	})
}

// TestLimitStreamsPerNode: connections to one playnode beyond
// MaxStreamsPerNode, over all its portaliases, are closed at once.
func TestLimitStreamsPerNode(t *testing.T) {
	cfg := faultRelayConfig(t)
	cfg.MaxStreamsPerNode = 3
	keys := faultAuthorize(t, cfg.DataDir, "p1")
	r := faultStartRelay(t, cfg)
	echo := faultEcho(t)
	faultStartNode(t, r, r.Addr().String(), "p1", keys["p1"], echo, slog.LevelInfo, func(c *node.Config) {
		c.Services = append(c.Services, node.Service{Name: "other", Addr: echo})
	})
	var ports map[string]uint16
	faultWaitFor(t, "p1 online with two services", func() bool {
		ps, ok := r.Online("p1")
		if ok && len(ps) == 2 {
			ports = map[string]uint16{ps[0].Service: ps[0].Portalias, ps[1].Service: ps[1].Portalias}
		}
		return ports != nil
	})
	limitsDial(t, ports["svc"])
	limitsDial(t, ports["svc"])
	limitsDial(t, ports["other"])
	limitsRefused(t, ports["other"])
	limitsRefused(t, ports["svc"])
	if got := r.log.Count("playnode connection limit reached"); got != 1 {
		t.Errorf("got %d log lines about the limit, want 1", got)
	}
}

// TestLimitUnauthenticatedPerAddress: one source address may hold at most
// MaxUnauthPerAddress connections that have not authenticated; more are
// closed at once with a log line naming the address, and authenticated
// sessions do not count.
func TestLimitUnauthenticatedPerAddress(t *testing.T) {
	cfg := faultRelayConfig(t)
	cfg.MaxUnauthPerAddress = 2
	cfg.HandshakeTimeout = time.Minute // the held connections must outlast the test
	names := []string{"p1", "p2", "p3"}
	keys := faultAuthorize(t, cfg.DataDir, names...)
	r := faultStartRelay(t, cfg)

	// Two connections that never start their handshake. The relay's one
	// accept loop takes connections in the order they were established, so
	// both count before the third is judged.
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", r.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	c, err := net.Dial("tcp", r.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(faultWait))
	if n, err := c.Read(make([]byte, 4)); n != 0 || err == nil || isTimeout(err) {
		t.Fatalf("third unauthenticated connection: got %d bytes, err %v; want it closed at once", n, err)
	}
	faultWaitFor(t, "the log line naming the address", func() bool {
		return r.log.Count(`too many unauthenticated connections from one address, closed" remote=127.0.0.1:`) == 1
	})

	for _, c := range held {
		c.Close()
	}
	// Authenticated sessions leave the count: three playnodes from the one
	// address all get in.
	for _, name := range names {
		faultStartNode(t, r, r.Addr().String(), name, keys[name], faultEcho(t), slog.LevelInfo, nil)
	}
	for _, name := range names {
		faultOnline(t, r, name)
	}
}

// TestNodeCannotChoosePortaliasOrAddress: a hello carries service names and
// service ports, never an address or a portalias. Whatever service ports a
// playnode declares, its portaliases come from the relay's range and are
// bound to loopback only.
func TestNodeCannotChoosePortaliasOrAddress(t *testing.T) {
	cfg := faultRelayConfig(t)
	keys := faultAuthorize(t, cfg.DataDir, "p1")
	r := faultStartRelay(t, cfg)
	faultStartNode(t, r, r.Addr().String(), "p1", keys["p1"], faultReply(t, "hi"), slog.LevelInfo, func(c *node.Config) {
		// Service ports that are privileged, the relay's own, and the top.
		_, relayPort, _ := net.SplitHostPort(r.Addr().String())
		c.Services = []node.Service{{Name: "low", Addr: "127.0.0.1:1"}, {Name: "relay", Addr: "127.0.0.1:" + relayPort},
			{Name: "top", Addr: "127.0.0.1:65535"}}
	})
	var ports []uint16
	faultWaitFor(t, "p1 online with 3 portaliases", func() bool {
		ps, ok := r.Online("p1")
		ports = ports[:0]
		for _, p := range ps {
			ports = append(ports, p.Portalias)
		}
		return ok && len(ps) == 3
	})
	others := nonLoopbackAddrs(t)
	for _, port := range ports {
		if port < cfg.PortLow || port > cfg.PortHigh {
			t.Errorf("portalias %d outside the range %d-%d", port, cfg.PortLow, cfg.PortHigh)
		}
		for _, ip := range others {
			if c, err := net.DialTimeout("tcp", net.JoinHostPort(ip, strconv.Itoa(int(port))), faultWait); err == nil {
				c.Close()
				t.Errorf("portalias %d answers on %s, want loopback only", port, ip)
			}
		}
	}
	if len(others) == 0 {
		t.Log("no non-loopback address here: loopback-only binding not checked from outside")
	}
}

func nonLoopbackAddrs(t *testing.T) []string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() && ipn.IP.To4() != nil {
			out = append(out, ipn.IP.String())
		}
	}
	return out
}

// TestUnknownKeyGetsNothing: a client whose key is not authorized, or that
// offers a password or nothing, fails SSH authentication: it never gets
// to open a channel, and the relay records no session, status or
// portalias for it.
func TestUnknownKeyGetsNothing(t *testing.T) {
	cfg := faultRelayConfig(t)
	faultAuthorize(t, cfg.DataDir, "known")
	r := faultStartRelay(t, cfg)
	strangerFile := t.TempDir() + "/stranger.key"
	stranger, err := identity.GenerateKey(strangerFile, "stranger")
	if err != nil {
		t.Fatal(err)
	}
	for name, auth := range map[string][]ssh.AuthMethod{
		"unknown key": {ssh.PublicKeys(stranger)},
		"password":    {ssh.Password("known")},
		"none":        nil,
	} {
		t.Run(name, func(t *testing.T) {
			c, err := net.Dial("tcp", r.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(faultWait))
			_, _, _, err = ssh.NewClientConn(c, r.Addr().String(), &ssh.ClientConfig{
				User: "known", Auth: auth, HostKeyCallback: ssh.FixedHostKey(r.HostKey()),
			})
			if err == nil {
				t.Fatal("SSH authentication succeeded")
			}
		})
	}
	if _, ok := r.Online("known"); ok {
		t.Error("a session is registered for the name the stranger claimed")
	}
	rows, _, err := relay.List(r.cfg.DataDir)
	if err != nil || len(rows) != 0 {
		t.Errorf("portaliases after refused clients: %v, %v; want none", rows, err)
	}
}

// TestSlowlorisFromManyAddresses: idle connections from many source
// addresses, each within the per-address limit, hold no handshake slot:
// a real playnode still gets in at once.
func TestSlowlorisFromManyAddresses(t *testing.T) {
	cfg := relayConfig(t)
	cfg.MaxHandshakes = 4
	cfg.HandshakeTimeout = time.Minute // without the first-bytes gate, the idle ones would hold every slot this long
	cfg.FirstBytesTimeout = 30 * time.Second
	keyFile, _ := authorize(t, cfg, "dev1")
	r := startRelay(t, cfg, "ssh")
	var idle []net.Conn
	defer func() {
		for _, c := range idle {
			c.Close()
		}
	}()
	for i := range 60 { // 20 addresses, 3 each
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i%20))}}
		c, err := d.Dial("tcp", r.Addr().String())
		if err != nil {
			t.Fatalf("idle connection %d: %v", i, err)
		}
		idle = append(idle, c)
	}
	startNode(t, r.nodeConfig(t, "dev1", keyFile, "svc="+replyServer(t, "x")))
	waitOnline(t, r, "dev1", 1)
}

// TestLogFloodBounded: garbage connections from many addresses cost the
// relay's log a bounded number of lines (per reason and source, per
// minute), while every one of them is counted.
func TestLogFloodBounded(t *testing.T) {
	cfg := relayConfig(t)
	cfg.PeerLogLines = 5
	r := startRelay(t, cfg, "ssh")
	const conns, addrs = 400, 20
	for i := range conns {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i%addrs))}}
		c, err := d.Dial("tcp", r.Addr().String())
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		c.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
		c.Close()
	}
	waitFor(t, "every garbage connection counted", func() bool {
		return r.Snapshot().Counters.PeerEvents["first-bytes"] == conns
	})
	// At most PeerLogLines (5) lines a minute for the reason, whatever the
	// number of connections or addresses.
	if got := r.log.Count("no ssh version line in time"); got < 1 || got > 5 {
		t.Errorf("%d garbage connections from %d addresses logged %d lines, want 1 to 5", conns, addrs, got)
	}
}
