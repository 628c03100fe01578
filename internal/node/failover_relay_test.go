package node

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh/knownhosts"

	"paradigm/internal/identity"
	"paradigm/internal/relay"
	"paradigm/internal/testenv"
)

// relayFor runs a real relay on loopback for nodes on transport that knows
// keyFile's key as dev1 when authorize is set (and no key otherwise).
func relayFor(t *testing.T, keyFile, transport string, authorize bool) *testRelay {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "relay")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if authorize {
		key, err := identity.LoadKey(keyFile)
		if err != nil {
			t.Fatal(err)
		}
		if err := relay.Authorize(filepath.Join(dir, relay.AuthorizedFile), "dev1", key.PublicKey(), ""); err != nil {
			t.Fatal(err)
		}
	}
	low := uint16(30000 + time.Now().UnixNano()%30*1000)
	cfg := relay.Config{DataDir: dir, Listen: "127.0.0.1:0", PortLow: low, PortHigh: low + 999,
		Keepalive: 2 * time.Second, ReloadInterval: 50 * time.Millisecond}
	if transport != TransportQUIC {
		r := runRelay(t, cfg)
		r.keyFile = keyFile
		return r
	}
	for range 5 { // as startRelay: one port number for TCP and UDP
		cfg.Listen = net.JoinHostPort("127.0.0.1", strconv.Itoa(testenv.FreePort(t)))
		cfg.QUICListen = cfg.Listen
		if r, err := newRelay(t, cfg); err == nil {
			r.keyFile = keyFile
			return r
		} else if !errors.Is(err, syscall.EADDRINUSE) {
			t.Fatal(err)
		}
	}
	t.Fatal("no port number free on both TCP and UDP in 5 tries")
	return nil
}

func fingerprint(r *testRelay) string { return identity.Fingerprint(r.HostKey()) }

// TestFailoverFirstDown: the first relay refuses connections, the node
// comes up on the second.
func TestFailoverFirstDown(t *testing.T) {
	keyFile := newKey(t, "dev1")
	b := relayFor(t, keyFile, TransportSSH, true)
	startNode(t, Config{Relays: []string{closedPort(t), b.Addr().String()}, Fingerprints: []string{fingerprint(b)},
		KeyFile: keyFile, Name: "dev1", Services: []Service{{"ssh", "127.0.0.1:22"}}})
	waitFor(t, "dev1 online on the second relay", func() bool { return online(b, "dev1") })
}

// TestFailoverRefused: a relay that does not know the node's key is a
// reason to try the next one.
func TestFailoverRefused(t *testing.T) {
	keyFile := newKey(t, "dev1")
	a := relayFor(t, keyFile, TransportSSH, false)
	b := relayFor(t, keyFile, TransportSSH, true)
	startNode(t, Config{Relays: []string{a.Addr().String(), b.Addr().String()}, Fingerprints: []string{fingerprint(a), fingerprint(b)},
		KeyFile: keyFile, Name: "dev1", Services: []Service{{"ssh", "127.0.0.1:22"}}})
	waitFor(t, "dev1 online on the relay that knows it", func() bool { return online(b, "dev1") })
}

// TestFailoverMoveAndReturn: connected to the first relay, which stops;
// the node moves to the second, and back to the first once it is up again
// and a probe after PreferFirstAfter finds it. Each relay has its own host
// key, both pinned.
func TestFailoverMoveAndReturn(t *testing.T) {
	forEachTransport(t, testFailoverMoveAndReturn)
}

func testFailoverMoveAndReturn(t *testing.T, transport string) {
	keyFile := newKey(t, "dev1")
	a := relayFor(t, keyFile, transport, true)
	b := relayFor(t, keyFile, transport, true)
	cfg := Config{Relays: []string{a.Addr().String(), b.Addr().String()}, Fingerprints: []string{fingerprint(a), fingerprint(b)},
		Transport: transport, KeyFile: keyFile, Name: "dev1", Services: []Service{{"ssh", "127.0.0.1:22"}}, PreferFirstAfter: 300 * time.Millisecond}
	startNode(t, cfg)
	waitFor(t, "dev1 online on the first relay", func() bool { return online(a, "dev1") })
	if online(b, "dev1") {
		t.Fatal("dev1 online on both relays")
	}

	a.stop()
	stopped := time.Now()
	waitFor(t, "dev1 online on the second relay", func() bool { return online(b, "dev1") })
	t.Logf("first relay stopped: online on the second after %v", time.Since(stopped).Round(time.Millisecond))

	a2 := runRelay(t, a.cfg)
	restarted := time.Now()
	waitFor(t, "dev1 back on the first relay, gone from the second", func() bool { return online(a2, "dev1") && !online(b, "dev1") })
	t.Logf("first relay restarted: back on it after %v", time.Since(restarted).Round(time.Millisecond))
}

// TestFailoverDNSName: a relay name that resolves to two addresses is two
// relays; the first address has no relay, the second has, and its host key
// is checked under the name in known_hosts.
func TestFailoverDNSName(t *testing.T) {
	keyFile := newKey(t, "dev1")
	r := relayFor(t, keyFile, TransportSSH, true)
	_, port, _ := net.SplitHostPort(r.Addr().String())
	name := "relays.test:" + port
	kh := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(kh, []byte(knownhosts.Line([]string{knownhosts.Normalize(name)}, r.HostKey())+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	lookup := func(_ context.Context, host string) ([]string, error) {
		if host != "relays.test" {
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		}
		return []string{"127.0.0.2", "127.0.0.1"}, nil
	}
	startNode(t, Config{Relays: []string{name}, KnownHosts: kh, LookupHost: lookup,
		KeyFile: keyFile, Name: "dev1", Services: []Service{{"ssh", "127.0.0.1:22"}}})
	waitFor(t, "dev1 online through the name's second address", func() bool { return online(r, "dev1") })
}
