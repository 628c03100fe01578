package node

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"paradigm/internal/identity"
	"paradigm/internal/relay"
	"paradigm/internal/testenv"
)

const waitTimeout = 10 * time.Second

// logBuf collects a role's log lines for assertions.
type logBuf = testenv.LogBuf

func newLog(t *testing.T, role string) (*slog.Logger, *logBuf) {
	t.Helper()
	return testenv.NewLog(t, role, slog.LevelDebug)
}

// waitFor polls cond until it holds, failing t after waitTimeout.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testenv.WaitFor(t, waitTimeout, what, cond)
}

func newKey(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name+".key")
	if _, err := identity.GenerateKey(p, name); err != nil {
		t.Fatal(err)
	}
	return p
}

func hostKey(t *testing.T) ssh.Signer {
	t.Helper()
	k, err := identity.GenerateKey(filepath.Join(t.TempDir(), "host"), "")
	if err != nil {
		t.Fatal(err)
	}
	return k
}

var relayAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4422}

func TestHostKeyPinned(t *testing.T) {
	good, other := hostKey(t), hostKey(t)
	cfg := &Config{Relay: "relay.example:4422", Fingerprint: identity.Fingerprint(good.PublicKey())}
	check := hostKeyCallback(cfg, slog.New(slog.DiscardHandler))
	if err := check("relay.example:4422", relayAddr, good.PublicKey()); err != nil {
		t.Fatalf("pinned key: %v", err)
	}
	err := check("relay.example:4422", relayAddr, other.PublicKey())
	if !errors.Is(err, ErrHostKey) || !strings.Contains(err.Error(), identity.Fingerprint(other.PublicKey())) {
		t.Fatalf("other key: got %v, want ErrHostKey naming the presented fingerprint", err)
	}
}

func TestHostKeyKnownHosts(t *testing.T) {
	dir := t.TempDir()
	key := hostKey(t)
	kh := filepath.Join(dir, "known_hosts")
	line := "other.example " + identity.PublicLine(hostKey(t).PublicKey(), "") + "\n"
	if err := os.WriteFile(kh, []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := &Config{Relay: "relay.example:4422", KnownHosts: kh}
	check := hostKeyCallback(cfg, slog.New(slog.DiscardHandler))
	err := check("relay.example:4422", relayAddr, key.PublicKey())
	if !errors.Is(err, ErrHostKey) || !strings.Contains(err.Error(), "is not in") {
		t.Fatalf("relay not in known_hosts: got %v, want ErrHostKey ... is not in", err)
	}
	if data, _ := os.ReadFile(kh); string(data) != line {
		t.Fatalf("known_hosts changed without trust on first use:\n%s", data)
	}

	cfg.KnownHosts = filepath.Join(dir, "missing")
	if err := check("relay.example:4422", relayAddr, key.PublicKey()); !errors.Is(err, ErrHostKey) {
		t.Fatalf("missing known_hosts: got %v, want ErrHostKey", err)
	}
	if _, err := os.Stat(cfg.KnownHosts); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing known_hosts was created without trust on first use")
	}
}

func TestHostKeyTrustOnFirstUse(t *testing.T) {
	first, second := hostKey(t), hostKey(t)
	for _, existing := range []string{"", "other.example " + identity.PublicLine(second.PublicKey(), "") + "\n"} {
		kh := filepath.Join(t.TempDir(), "known_hosts")
		if existing != "" {
			if err := os.WriteFile(kh, []byte(existing), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		log, logs := newLog(t, "node")
		cfg := &Config{Relay: "relay.example:4422", KnownHosts: kh, TrustOnFirstUse: true}
		check := hostKeyCallback(cfg, log)
		if err := check("relay.example:4422", relayAddr, first.PublicKey()); err != nil {
			t.Fatalf("first use: %v", err)
		}
		if !strings.Contains(logs.String(), identity.Fingerprint(first.PublicKey())) {
			t.Errorf("trusting a key on first use is not logged with its fingerprint")
		}
		if err := check("relay.example:4422", relayAddr, first.PublicKey()); err != nil {
			t.Fatalf("second connection with the recorded key: %v", err)
		}
		err := check("relay.example:4422", relayAddr, second.PublicKey())
		if !errors.Is(err, ErrHostKey) || !strings.Contains(err.Error(), kh+":") {
			t.Fatalf("changed key: got %v, want ErrHostKey naming %s:LINE", err, kh)
		}
		data, err := os.ReadFile(kh)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Count(string(data), "relay.example"); got != 1 {
			t.Fatalf("known_hosts has %d lines for the relay, want 1:\n%s", got, data)
		}
		// A fresh process with the recorded file trusts the same key only.
		again := hostKeyCallback(cfg, log)
		if err := again("relay.example:4422", relayAddr, first.PublicKey()); err != nil {
			t.Fatalf("restarted node, recorded key: %v", err)
		}
		if err := again("relay.example:4422", relayAddr, second.PublicKey()); !errors.Is(err, ErrHostKey) {
			t.Fatalf("restarted node, other key: got %v, want ErrHostKey", err)
		}
	}
}

// transports are what every transport-independent test runs over.
var transports = []string{TransportSSH, TransportQUIC}

// forEachTransport runs test as a subtest per transport.
func forEachTransport(t *testing.T, test func(t *testing.T, tr string)) {
	t.Helper()
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) { test(t, tr) })
	}
}

// testRelay is a real relay running until the test ends.
type testRelay struct {
	*relay.Relay
	cfg     relay.Config // with its addresses resolved, for a restart
	keyFile string       // dev1's
	log     *logBuf
	stop    func()
}

// startRelay runs a real relay with one authorized playnode "dev1". For
// TransportQUIC it also serves QUIC, on the UDP port of the same number as
// its TCP port, as deployed; for TransportSSH it serves SSH only.
func startRelay(t *testing.T, transport string) *testRelay {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "relay")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	keyFile := newKey(t, "dev1")
	key, err := identity.LoadKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := relay.Authorize(filepath.Join(dir, relay.AuthorizedFile), "dev1", key.PublicKey(), ""); err != nil {
		t.Fatal(err)
	}
	low := uint16(30000 + time.Now().UnixNano()%30*1000)
	cfg := relay.Config{DataDir: dir, Listen: "127.0.0.1:0", PortLow: low, PortHigh: low + 999,
		Keepalive: 2 * time.Second, ReloadInterval: 50 * time.Millisecond}
	if transport != TransportQUIC {
		r := runRelay(t, cfg)
		r.keyFile = keyFile
		return r
	}
	// A free TCP port, then both bound at its number; rarely another
	// program takes it in between, and then another port is tried.
	for range 5 {
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

// runRelay runs a relay with cfg until the test ends, failing t if it
// cannot start.
func runRelay(t *testing.T, cfg relay.Config) *testRelay {
	t.Helper()
	r, err := newRelay(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func newRelay(t *testing.T, cfg relay.Config) (*testRelay, error) {
	t.Helper()
	var logs *logBuf
	cfg.Logger, logs = newLog(t, "relay")
	r, err := relay.New(cfg)
	if err != nil {
		return nil, err
	}
	cfg.Listen = r.Addr().String()
	if a := r.QUICAddr(); a != nil {
		cfg.QUICListen = a.String()
	}
	return &testRelay{Relay: r, cfg: cfg, log: logs, stop: runUntilCleanup(t, "relay", r.Run)}, nil
}

// runUntilCleanup runs run in the background and cancels it, waiting for
// it, when the test ends.
func runUntilCleanup(t *testing.T, what string, run func(context.Context) error) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("%s Run: %v", what, err)
				}
			case <-time.After(waitTimeout):
				t.Errorf("%s Run did not return within %v of cancel", what, waitTimeout)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func startNode(t *testing.T, cfg Config) (*logBuf, func()) {
	t.Helper()
	log, logs := newLog(t, "node")
	cfg.Logger = log
	cfg.Keepalive, cfg.BackoffMax = 2*time.Second, 200*time.Millisecond
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return logs, runUntilCleanup(t, "node", n.Run)
}

// TestUntrustedRelay checks that a node never completes a session with a
// relay whose host key it cannot verify, and keeps saying why.
func TestUntrustedRelay(t *testing.T) {
	forEachTransport(t, func(t *testing.T, transport string) {
		r := startRelay(t, transport)
		kh := filepath.Join(t.TempDir(), "known_hosts")
		if err := os.WriteFile(kh, []byte("other.example "+identity.PublicLine(hostKey(t).PublicKey(), "")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			name string
			edit func(*Config)
			want string
		}{
			{"wrong fingerprint", func(c *Config) { c.Fingerprint = identity.Fingerprint(hostKey(t).PublicKey()) }, "pinned fingerprint is"},
			{"not in known_hosts", func(c *Config) { c.KnownHosts = kh }, "is not in " + kh},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				cfg := Config{Relay: r.Addr().String(), Transport: transport, KeyFile: r.keyFile, Name: "dev1", Services: []Service{{"ssh", "127.0.0.1:22"}}}
				tt.edit(&cfg)
				logs, stop := startNode(t, cfg)
				waitFor(t, "two refused attempts", func() bool {
					return strings.Count(logs.String(), ErrHostKey.Error()) >= 2 && strings.Contains(logs.String(), tt.want)
				})
				stop()
				if online(r, "dev1") || strings.Contains(logs.String(), "connected to relay") {
					t.Fatal("the node connected to an untrusted relay")
				}
			})
		}
	})
}

// TestTrustOnFirstUseRelay connects with trust on first use, then again
// with the recorded known_hosts file alone.
func TestTrustOnFirstUseRelay(t *testing.T) {
	forEachTransport(t, func(t *testing.T, transport string) {
		r := startRelay(t, transport)
		kh := filepath.Join(t.TempDir(), "known_hosts")
		cfg := Config{Relay: r.Addr().String(), Transport: transport, KnownHosts: kh, TrustOnFirstUse: true, KeyFile: r.keyFile, Name: "dev1",
			Services: []Service{{"ssh", "127.0.0.1:22"}}}
		logs, stop := startNode(t, cfg)
		waitFor(t, "dev1 online", func() bool { return online(r, "dev1") })
		stop()
		if !strings.Contains(logs.String(), "transport="+transport) {
			t.Fatalf("the node did not connect over %s", transport)
		}
		data, err := os.ReadFile(kh)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(data), identity.PublicLine(r.HostKey(), "")) {
			t.Fatalf("known_hosts does not hold the relay's key:\n%s", data)
		}
		waitFor(t, "dev1 offline", func() bool { return !online(r, "dev1") })

		cfg.TrustOnFirstUse = false
		startNode(t, cfg)
		waitFor(t, "dev1 online with the recorded key", func() bool { return online(r, "dev1") })
	})
}

// online reports whether the relay has playnode online now.
func online(r interface{ Snapshot() relay.Snapshot }, playnode string) bool {
	p, ok := r.Snapshot().Playnode(playnode)
	return ok && p.Online
}
