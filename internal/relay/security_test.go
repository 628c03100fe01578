package relay_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"paradigm/internal/identity"
	"paradigm/internal/lockfile"
	"paradigm/internal/mux"
	"paradigm/internal/node"
	"paradigm/internal/proto"
	"paradigm/internal/relay"
)

// rawHello connects to r over its transport as a playnode with the key in
// keyFile, sends hello as is and returns the relay's answer, bypassing the
// node's own validation.
func rawHello(t *testing.T, r *testRelay, keyFile string, hello *proto.Hello) proto.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	sess := rawDial(ctx, t, r, keyFile, hello.Playnode)
	defer sess.Close()
	ctrl, err := sess.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// A relay that refuses at once may close the session before the write
	// is reported done; its answer is buffered all the same.
	werr := proto.WriteMessage(ctrl, hello)
	m, err := proto.ReadMessage(ctrl)
	if err != nil {
		t.Fatalf("read answer to hello: %v (write: %v)", err, werr)
	}
	return m
}

// rawDial opens an authenticated session to r over its transport.
func rawDial(ctx context.Context, t *testing.T, r *testRelay, keyFile, user string) mux.Session {
	t.Helper()
	if r.transport == node.TransportQUIC {
		key, err := identity.LoadEd25519(keyFile)
		if err != nil {
			t.Fatal(err)
		}
		pconn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		sess, err := mux.DialQUIC(ctx, pconn, r.QUICAddr(), &mux.QUICClientConfig{
			Key:             key,
			User:            user,
			HostKeyCallback: ssh.FixedHostKey(r.HostKey()),
		})
		if err != nil {
			t.Fatalf("dial relay over quic: %v", err)
		}
		return sess
	}
	key, err := identity.LoadKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", r.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sess, err := mux.DialSSH(ctx, conn, &mux.SSHClientConfig{
		Key:             key,
		User:            user,
		HostKeyCallback: ssh.FixedHostKey(r.HostKey()),
	})
	if err != nil {
		t.Fatalf("dial relay: %v", err)
	}
	return sess
}

func wantRefuse(t *testing.T, m proto.Message, code proto.RefuseCode) {
	t.Helper()
	r, ok := m.(*proto.Refuse)
	if !ok {
		t.Fatalf("got %T %+v, want a refusal with code %s", m, m, code)
	}
	if r.Code != code {
		t.Fatalf("got refusal %s (%s), want code %s", r.Code, r.Reason, code)
	}
}

func TestUnknownKeyRefused(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr string) {
		r := startRelay(t, relayConfig(t), tr)
		keyFile := filepath.Join(t.TempDir(), "stranger.key")
		key, err := identity.GenerateKey(keyFile, "stranger")
		if err != nil {
			t.Fatal(err)
		}
		startNode(t, r.nodeConfig(t, "stranger", keyFile, "echo="+echoServer(t)))
		fp := identity.Fingerprint(key.PublicKey())
		// Repeated refusals are counted; the log, rate-limited per
		// source, names the key once.
		waitFor(t, "two refused attempts, the key's fingerprint logged", func() bool {
			return r.Snapshot().Counters.AuthFailed >= 2 && r.log.Contains(fp)
		})
		if _, ok := r.Online("stranger"); ok {
			t.Fatal("a node with an unknown key is online")
		}
		if rows, _, err := relay.List(r.cfg.DataDir); err != nil || len(rows) != 0 {
			t.Fatalf("portaliases for an unknown key: %v, %v; want none", rows, err)
		}
	})
}

// TestNameBoundToKey checks that a key authorized for one playnode cannot
// register as another.
func TestNameBoundToKey(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr string) {
		cfg := relayConfig(t)
		keyFile, _ := authorize(t, cfg, "dev1")
		authorize(t, cfg, "dev2")
		r := startRelay(t, cfg, tr)
		m := rawHello(t, r, keyFile, &proto.Hello{Version: proto.Version, Playnode: "dev2", Services: []proto.Service{{Name: "ssh", Port: 22}}})
		wantRefuse(t, m, proto.RefuseName)

		n := startNode(t, r.nodeConfig(t, "dev2", keyFile, "echo="+echoServer(t)))
		waitFor(t, "the node to be refused 5 times", func() bool { return n.log.Count("disconnected from relay") >= 5 })
		n.stop(t)
		if got, want := n.log.Count("disconnected from relay"), n.log.Count("relay refused: name"); got != want {
			t.Errorf("node saw %d disconnects but only %d refusals for its name", got, want)
		}
		for _, name := range []string{"dev1", "dev2"} {
			if _, ok := r.Online(name); ok {
				t.Errorf("%s is online", name)
			}
		}
	})
}

// TestRevokedWhileConnected checks that deleting a playnode's line ends its
// session and keeps it out, and leaves other playnodes alone.
func TestRevokedWhileConnected(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr string) {
		cfg := relayConfig(t)
		key1, _ := authorize(t, cfg, "dev1")
		key2, _ := authorize(t, cfg, "dev2")
		r := startRelay(t, cfg, tr)
		n1 := startNode(t, r.nodeConfig(t, "dev1", key1, "echo="+echoServer(t)))
		startNode(t, r.nodeConfig(t, "dev2", key2, "echo="+echoServer(t)))
		waitOnline(t, r, "dev1", 1)
		waitOnline(t, r, "dev2", 1)

		path := filepath.Join(r.cfg.DataDir, relay.AuthorizedFile)
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var kept []string
		for _, line := range strings.SplitAfter(string(data), "\n") {
			if !strings.HasPrefix(line, `playnode="dev1"`) {
				kept = append(kept, line)
			}
		}
		if len(kept) != strings.Count(string(data), "\n") {
			t.Fatalf("dev1's line not found in %s:\n%s", path, data)
		}
		if err := os.WriteFile(path, []byte(strings.Join(kept, "")), 0o644); err != nil {
			t.Fatal(err)
		}
		waitOffline(t, r, "dev1")
		waitFor(t, "the node to be told it was revoked", func() bool { return n1.log.Contains("relay refused: revoked") })
		waitFor(t, "a reconnection attempt to be refused", func() bool { return r.log.Contains("unknown node key refused") })
		if _, ok := r.Online("dev1"); ok {
			t.Fatal("revoked dev1 is online again")
		}
		if _, ok := r.Online("dev2"); !ok {
			t.Fatal("dev2 went offline when dev1 was revoked")
		}
	})
}

func TestBadHelloRefused(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr string) {
		cfg := relayConfig(t)
		keyFile, _ := authorize(t, cfg, "dev1")
		r := startRelay(t, cfg, tr)
		many := make([]proto.Service, proto.MaxServices+1)
		for i := range many {
			many[i] = proto.Service{Name: fmt.Sprintf("s%d", i), Port: uint16(1000 + i)}
		}
		tests := []struct {
			name     string
			version  int
			services []proto.Service
			code     proto.RefuseCode
		}{
			{"too many services", proto.Version, many, proto.RefuseServices},
			{"duplicate service", proto.Version, []proto.Service{{Name: "ssh", Port: 22}, {Name: "ssh", Port: 2222}}, proto.RefuseServices},
			{"invalid service name", proto.Version, []proto.Service{{Name: "bad name", Port: 22}}, proto.RefuseServices},
			{"service name with a slash", proto.Version, []proto.Service{{Name: "../etc", Port: 22}}, proto.RefuseServices},
			{"no services", proto.Version, nil, proto.RefuseServices},
			{"port 0", proto.Version, []proto.Service{{Name: "ssh", Port: 0}}, proto.RefuseServices},
			{"other version", proto.Version + 1, []proto.Service{{Name: "ssh", Port: 22}}, proto.RefuseVersion},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				m := rawHello(t, r, keyFile, &proto.Hello{Version: tt.version, Playnode: "dev1", Services: tt.services})
				wantRefuse(t, m, tt.code)
			})
		}
		if rows, _, err := relay.List(r.cfg.DataDir); err != nil || len(rows) != 0 {
			t.Fatalf("portaliases after refused hellos: %v, %v; want none", rows, err)
		}
		// The limit itself is accepted.
		m := rawHello(t, r, keyFile, &proto.Hello{Version: proto.Version, Playnode: "dev1", Services: many[:proto.MaxServices]})
		if w, ok := m.(*proto.Welcome); !ok || len(w.Portaliases) != proto.MaxServices {
			t.Fatalf("hello with %d services: got %T %+v, want a welcome with as many portaliases", proto.MaxServices, m, m)
		}
	})
}

// TestNotSSH checks that a peer speaking something else on the TCP port is
// dropped at once and the relay keeps serving playnodes. SSH only: the
// junk goes to the TCP port; TestNotQUIC sends it to the UDP port.
func TestNotSSH(t *testing.T) {
	cfg := relayConfig(t)
	keyFile, _ := authorize(t, cfg, "dev1")
	r := startRelay(t, cfg, node.TransportSSH)
	for _, junk := range []string{"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "\x00\x01\x02\x03\x04", "SSH-1.5-old\r\n"} {
		c, err := net.Dial("tcp", r.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte(junk)); err != nil {
			t.Fatal(err)
		}
		c.(*net.TCPConn).CloseWrite()
		// The relay may send its version line first; what matters is
		// that the connection ends without a handshake timeout.
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		buf := make([]byte, 512)
		var rerr error
		for rerr == nil {
			_, rerr = c.Read(buf)
		}
		if isTimeout(rerr) {
			t.Errorf("junk %q: connection still open: %v", junk, rerr)
		}
		c.Close()
	}
	startNode(t, r.nodeConfig(t, "dev1", keyFile, "echo="+echoServer(t)))
	waitOnline(t, r, "dev1", 1)
}

// TestNotQUIC checks that datagrams that are not QUIC, or are QUIC from a
// peer that never finishes its handshake, cost the relay nothing: it keeps
// serving playnodes over QUIC.
func TestNotQUIC(t *testing.T) {
	cfg := relayConfig(t)
	keyFile, _ := authorize(t, cfg, "dev1")
	r := startRelay(t, cfg, node.TransportQUIC)
	c, err := net.Dial("udp", r.QUICAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// A long header Initial (version 1) with garbage after it, padded to
	// the 1200 bytes a server demands, then short junk.
	initial := append([]byte{0xc0, 0, 0, 0, 1, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0}, make([]byte, 1200)...)
	for _, junk := range [][]byte{initial, []byte("GET / HTTP/1.1\r\n\r\n"), {0}, make([]byte, 1500)} {
		if _, err := c.Write(junk); err != nil {
			t.Fatalf("send %d junk bytes: %v", len(junk), err)
		}
	}
	startNode(t, r.nodeConfig(t, "dev1", keyFile, "echo="+echoServer(t)))
	waitOnline(t, r, "dev1", 1)
}

func TestDataFolderLocked(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr string) {
		r := startRelay(t, relayConfig(t), tr)
		cfg := r.cfg
		cfg.Logger = nil
		r2, err := relay.New(cfg)
		if err == nil {
			r2.Close()
			t.Fatal("second relay.New on the same data folder succeeded")
		}
		if !errors.Is(err, lockfile.ErrLocked) || !strings.Contains(err.Error(), "lock") {
			t.Fatalf("got %v, want an error about the lock", err)
		}
	})
}

func TestMalformedFiles(t *testing.T) {
	key, err := identity.GenerateKey(filepath.Join(t.TempDir(), "k"), "")
	if err != nil {
		t.Fatal(err)
	}
	pub := identity.PublicLine(key.PublicKey(), "c")
	tests := []struct {
		name, file, content, want string
	}{
		{"portalias missing field", relay.PortaliasFile, "# c\ndev1 ssh\n", relay.PortaliasFile + ":2:"},
		{"portalias bad port", relay.PortaliasFile, "dev1 ssh 22\ndev1 web 70000\n", relay.PortaliasFile + ":2:"},
		{"portalias port twice", relay.PortaliasFile, "dev1 ssh 30001\n\ndev2 ssh 30001\n", relay.PortaliasFile + ":3:"},
		{"authorized no playnode", relay.AuthorizedFile, "# c\n\n" + pub + "\n", relay.AuthorizedFile + ":3:"},
		{"authorized other option", relay.AuthorizedFile, `playnode="a",no-pty ` + pub + "\n", relay.AuthorizedFile + ":1:"},
		{"authorized bad key", relay.AuthorizedFile, `playnode="a" ssh-ed25519 AAAAnotakey` + "\n", relay.AuthorizedFile + ":1:"},
		{"authorized bad name", relay.AuthorizedFile, `playnode="a b" ` + pub + "\n", relay.AuthorizedFile + ":1:"},
		{"authorized key twice", relay.AuthorizedFile, `playnode="a" ` + pub + "\n" + `playnode="b" ` + pub + "\n", relay.AuthorizedFile + ":2:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := relayConfig(t)
			if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(cfg.DataDir, tt.file), []byte(tt.content), 0o644); err != nil {
				t.Fatal(err)
			}
			r, err := relay.New(cfg)
			if err == nil {
				r.Close()
				t.Fatal("relay.New accepted the malformed file")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want it to contain %q", err, tt.want)
			}
			// The failed New released the lock.
			cfg.Listen = "127.0.0.1:0"
			os.Remove(filepath.Join(cfg.DataDir, tt.file))
			r, err = relay.New(cfg)
			if err != nil {
				t.Fatalf("relay.New after fixing the file: %v", err)
			}
			r.Close()
		})
	}
}

// TestPortRangeExhausted checks that a full range costs only the services
// that get no port.
func TestPortRangeExhausted(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr string) {
		cfg := relayConfig(t)
		for range 10 {
			ln, err := net.Listen("tcp", portAddr(cfg.PortLow))
			if err == nil {
				ln.Close()
				break
			}
			cfg = relayConfig(t)
		}
		cfg.PortHigh = cfg.PortLow
		keyFile, _ := authorize(t, cfg, "dev1")
		key2, _ := authorize(t, cfg, "dev2")
		r := startRelay(t, cfg, tr)
		startNode(t, r.nodeConfig(t, "dev1", keyFile, "first="+replyServer(t, "1"), "second="+replyServer(t, "2")))
		ports := waitOnline(t, r, "dev1", 1)
		if ports["first"] != cfg.PortLow {
			t.Fatalf("got portaliases %v, want first=%d", ports, cfg.PortLow)
		}
		waitFor(t, "the relay to log the exhausted range", func() bool {
			return r.log.Contains("port range exhausted") && r.log.Contains("service=second")
		})
		if got, err := fetch(t, cfg.PortLow); err != nil || got != "1" {
			t.Fatalf("fetch first: got %q, %v, want %q", got, err, "1")
		}

		// A playnode none of whose services gets a port is refused.
		m := rawHello(t, r, key2, &proto.Hello{Version: proto.Version, Playnode: "dev2", Services: []proto.Service{{Name: "ssh", Port: 22}}})
		wantRefuse(t, m, proto.RefusePorts)
	})
}
