package admin_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"paradigm/internal/admin"
	"paradigm/internal/identity"
	"paradigm/internal/node"
	"paradigm/internal/relay"
	"paradigm/internal/testenv"
)

const waitTimeout = 10 * time.Second

// fixture is a relay with its admin endpoint, running until the test ends.
type fixture struct {
	t      *testing.T
	relay  *relay.Relay
	admin  *admin.Server
	cfg    relay.Config
	url    string
	token  string
	cancel context.CancelFunc
	done   chan struct{}
}

// newFixture starts a relay with playnodes authorized for names, and its
// admin endpoint on loopback with a token file; edit tweaks the admin
// configuration.
func newFixture(t *testing.T, names []string, edit func(*admin.Config)) *fixture {
	t.Helper()
	low, high := testenv.PortWindow(1000)
	dir := filepath.Join(t.TempDir(), "relay")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	lg, _ := testenv.NewLog(t, "relay", slog.LevelDebug)
	cfg := relay.Config{DataDir: dir, Listen: "127.0.0.1:0", PortLow: uint16(low), PortHigh: uint16(high),
		Keepalive: 2 * time.Second, ReloadInterval: 50 * time.Millisecond, Logger: lg}
	for _, n := range names {
		key, err := identity.GenerateKey(filepath.Join(dir, "..", n+".key"), n)
		if err != nil {
			t.Fatal(err)
		}
		if err := relay.Authorize(filepath.Join(dir, relay.AuthorizedFile), n, key.PublicKey(), ""); err != nil {
			t.Fatal(err)
		}
	}
	r, err := relay.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	token := "test-token-0123456789abcdef"
	tokenFile := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(tokenFile, []byte("# operators\n"+token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	alg, _ := testenv.NewLog(t, "admin", slog.LevelDebug)
	acfg := admin.Config{Relay: r, Listen: "127.0.0.1:0", TokenFile: tokenFile, Logger: alg}
	if edit != nil {
		edit(&acfg)
	}
	a, err := admin.New(acfg)
	if err != nil {
		r.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &fixture{t: t, relay: r, admin: a, cfg: cfg, url: a.URL(), token: token, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(f.done)
		if err := admin.RunWith(ctx, r, a); err != nil {
			t.Errorf("RunWith: %v", err)
		}
	}()
	t.Cleanup(f.stop)
	return f
}

func (f *fixture) stop() {
	f.cancel()
	select {
	case <-f.done:
	case <-time.After(waitTimeout):
		f.t.Fatalf("relay and admin did not stop within %v", waitTimeout)
	}
}

// startNode runs playnode name with services (NAME=ADDR) until the test
// ends or the returned stop is called.
func (f *fixture) startNode(name string, services ...string) (stop func()) {
	t := f.t
	t.Helper()
	lg, _ := testenv.NewLog(t, "node "+name, slog.LevelDebug)
	cfg := node.Config{
		Relay:       f.relay.Addr().String(),
		Fingerprint: identity.Fingerprint(f.relay.HostKey()),
		KeyFile:     filepath.Join(f.cfg.DataDir, "..", name+".key"),
		Transport:   node.TransportSSH,
		Name:        name,
		Keepalive:   2 * time.Second,
		BackoffMax:  200 * time.Millisecond,
		Logger:      lg,
	}
	for _, s := range services {
		svc, err := node.ParseService(s)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Services = append(cfg.Services, svc)
	}
	n, err := node.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		n.Run(ctx)
	}()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case <-done:
		case <-time.After(waitTimeout):
			t.Fatalf("node %s did not stop", name)
		}
	}
	t.Cleanup(stop)
	return stop
}

// waitState waits on the relay's events until cond holds.
func (f *fixture) waitState(what string, cond func(relay.Snapshot) bool) relay.Snapshot {
	f.t.Helper()
	snap, sub := f.relay.Subscribe(256)
	defer sub.Close()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for !cond(snap) {
		select {
		case _, ok := <-sub.C:
			if !ok {
				f.t.Fatalf("the relay stopped while waiting for %s", what)
			}
			snap = f.relay.Snapshot()
		case <-deadline.C:
			f.t.Fatalf("timed out after %v waiting for %s", waitTimeout, what)
		}
	}
	return snap
}

func (f *fixture) waitOnline(name string, online bool) relay.PlaynodeState {
	f.t.Helper()
	snap := f.waitState(name+" online="+map[bool]string{true: "true", false: "false"}[online], func(s relay.Snapshot) bool {
		p, ok := s.Playnode(name)
		if !online {
			return ok && !p.Online
		}
		if !ok || !p.Online {
			return false
		}
		for _, svc := range p.Services {
			if svc.State != relay.StateOnline {
				return false
			}
		}
		return true
	})
	p, _ := snap.Playnode(name)
	return p
}

// do sends a request; token "" sends none. It returns the status and body.
func (f *fixture) do(method, path, token, body string, header ...string) (int, []byte) {
	f.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, f.url+path, rd)
	if err != nil {
		f.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		if header[i] == "Host" {
			req.Host = header[i+1]
			continue
		}
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		f.t.Fatal(err)
	}
	return resp.StatusCode, b
}

// getJSON GETs path (no token) and decodes a 200 answer into v.
func (f *fixture) getJSON(path string, v any) {
	f.t.Helper()
	code, b := f.do("GET", path, "", "")
	if code != http.StatusOK {
		f.t.Fatalf("GET %s: got %d %s, want 200", path, code, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		f.t.Fatalf("GET %s: %v in %s", path, err, b)
	}
}

// wantError checks a JSON error answer.
func wantError(t *testing.T, what string, code int, b []byte, wantCode int, wantText string) {
	t.Helper()
	var e struct{ Error string }
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("%s: body %q is not a JSON error: %v", what, b, err)
	}
	if code != wantCode || !strings.Contains(e.Error, wantText) {
		t.Fatalf("%s: got %d %q, want %d with %q", what, code, e.Error, wantCode, wantText)
	}
}

// echoService is a local service that echoes.
func echoService(t *testing.T) string {
	return testenv.Serve(t, waitTimeout, func(c *net.TCPConn) { io.Copy(c, c) })
}

// newRelayOnly is a relay that is never run, closed when the test ends.
func newRelayOnly(t *testing.T) *relay.Relay {
	t.Helper()
	r, err := relay.New(relay.Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}
