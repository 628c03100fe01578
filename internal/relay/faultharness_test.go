package relay_test

// Fault tests: a real relay and real nodes with a faultproxy between them,
// over the SSH transport (the proxy speaks TCP; QUIC's resilience to loss
// and migration is quic-go's and is tested in internal/mux). Their helpers
// are prefixed with "fault" so that they stay independent of harness_test.go.

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"paradigm/internal/faultproxy"
	"paradigm/internal/identity"
	"paradigm/internal/node"
	"paradigm/internal/relay"
	"paradigm/internal/testenv"
)

// Fault timings: keepalives short enough that dead links are found within
// a second or two, backoff short enough that reconnecting is quick.
const (
	faultKeepalive = 300 * time.Millisecond
	faultBackoff   = 300 * time.Millisecond
	faultHandshake = 2 * time.Second
	faultWait      = 30 * time.Second // generous bound on every wait
)

// faultLog is a concurrency-safe log buffer, dumped if the test fails.
type faultLog = testenv.LogBuf

func faultLogger(t testing.TB, role string, level slog.Level) (*slog.Logger, *faultLog) {
	t.Helper()
	return testenv.NewLog(t, role, level)
}

// faultWaitFor polls cond until it holds, failing t after faultWait.
func faultWaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	testenv.WaitFor(t, faultWait, what, cond)
}

type faultRelay struct {
	*relay.Relay
	cfg    relay.Config
	log    *faultLog
	cancel context.CancelFunc
	done   chan error
}

// faultRelayConfig is a relay configuration on a fresh data folder with a
// port window from faultPorts.
func faultRelayConfig(t testing.TB) relay.Config {
	low, high := faultPorts()
	dir := filepath.Join(t.TempDir(), "relay")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return relay.Config{DataDir: dir, Listen: "127.0.0.1:0", PortLow: low, PortHigh: high,
		Keepalive: faultKeepalive, ReloadInterval: 50 * time.Millisecond, HandshakeTimeout: faultHandshake}
}

// faultStartRelay runs a relay until stop or the end of the test; Listen
// is resolved in its cfg so that a restart binds the same port.
func faultStartRelay(t testing.TB, cfg relay.Config) *faultRelay {
	t.Helper()
	lg, buf := faultLogger(t, "relay", slog.LevelInfo)
	cfg.Logger = lg
	r, err := relay.New(cfg)
	if err != nil {
		t.Fatalf("relay.New: %v", err)
	}
	cfg.Listen = r.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	fr := &faultRelay{Relay: r, cfg: cfg, log: buf, cancel: cancel, done: make(chan error, 1)}
	go func() { fr.done <- r.Run(ctx) }()
	t.Cleanup(func() { fr.stop(t) })
	return fr
}

func (r *faultRelay) stop(t testing.TB) {
	r.cancel()
	select {
	case err, ok := <-r.done:
		if ok {
			close(r.done)
			if err != nil {
				t.Errorf("relay Run: %v", err)
			}
		}
	case <-time.After(faultWait):
		t.Fatalf("relay Run did not return within %v of cancel", faultWait)
	}
}

// faultAuthorize writes one key per name and authorizes them all in one
// write of authorized_nodes; it returns the key files by name.
func faultAuthorize(t testing.TB, dataDir string, names ...string) map[string]string {
	t.Helper()
	keys := map[string]string{}
	var lines strings.Builder
	dir := t.TempDir()
	for _, name := range names {
		file := filepath.Join(dir, name+".key")
		k, err := identity.GenerateKey(file, name)
		if err != nil {
			t.Fatal(err)
		}
		keys[name] = file
		lines.WriteString(`playnode="` + name + `" ` + identity.PublicLine(k.PublicKey(), name) + "\n")
	}
	if err := os.WriteFile(filepath.Join(dataDir, relay.AuthorizedFile), []byte(lines.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return keys
}

type faultNode struct {
	name   string
	log    *faultLog
	cancel context.CancelFunc
	done   chan error
}

// faultStartNode runs playnode name, dialling relayAddr (the relay or a
// proxy in front of it), with one service "svc" at target.
func faultStartNode(t testing.TB, r *faultRelay, relayAddr, name, keyFile, target string, level slog.Level, tune func(*node.Config)) *faultNode {
	t.Helper()
	lg, buf := faultLogger(t, "node "+name, level)
	cfg := node.Config{Relay: relayAddr, Fingerprint: identity.Fingerprint(r.HostKey()), KeyFile: keyFile,
		Name: name, Services: []node.Service{{Name: "svc", Addr: target}}, Keepalive: faultKeepalive,
		BackoffMax: faultBackoff, RefusedRetry: faultBackoff, HandshakeTimeout: faultHandshake, Logger: lg}
	if tune != nil {
		tune(&cfg)
	}
	n, err := node.New(cfg)
	if err != nil {
		t.Fatalf("node.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	fn := &faultNode{name: name, log: buf, cancel: cancel, done: make(chan error, 1)}
	go func() { fn.done <- n.Run(ctx) }()
	t.Cleanup(func() { fn.stop(t) })
	return fn
}

func (n *faultNode) stop(t testing.TB) {
	n.cancel()
	select {
	case err, ok := <-n.done:
		if ok {
			close(n.done)
			if err != nil {
				t.Errorf("node Run: %v", err)
			}
		}
	case <-time.After(faultWait):
		t.Fatalf("node %s Run did not return within %v of cancel", n.name, faultWait)
	}
}

// faultOnline waits until playnode is online and returns its portalias.
func faultOnline(t testing.TB, r *faultRelay, playnode string) uint16 {
	t.Helper()
	var port uint16
	faultWaitFor(t, playnode+" online", func() bool {
		ps, ok := r.Online(playnode)
		if ok && len(ps) == 1 {
			port = ps[0].Portalias
		}
		return ok && len(ps) == 1
	})
	return port
}

func faultProxy(t testing.TB, target string) *faultproxy.Proxy {
	t.Helper()
	p, err := faultproxy.New(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// faultServe runs handle for every connection to a new loopback listener
// until the test ends.
func faultServe(t testing.TB, handle func(*net.TCPConn)) string {
	t.Helper()
	return testenv.Serve(t, faultWait, handle)
}

func faultEcho(t testing.TB) string {
	return faultServe(t, func(c *net.TCPConn) { io.Copy(c, c); c.CloseWrite() })
}

func faultReply(t testing.TB, reply string) string {
	return faultServe(t, func(c *net.TCPConn) { io.WriteString(c, reply); c.CloseWrite(); io.Copy(io.Discard, c) })
}

// faultFetch connects to a portalias, half-closes and reads the reply.
func faultFetch(port uint16) (string, error) {
	c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))))
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(faultWait))
	c.(*net.TCPConn).CloseWrite()
	b, err := io.ReadAll(c)
	return string(b), err
}

// faultWaitServed waits until a fetch through port returns reply: the
// playnode's session works end to end.
func faultWaitServed(t testing.TB, port uint16, reply string) {
	t.Helper()
	faultWaitFor(t, "portalias "+strconv.Itoa(int(port))+" to answer", func() bool {
		got, err := faultFetch(port)
		return err == nil && got == reply
	})
}

// faultTransfer echoes size random bytes through port and checks them.
func faultTransfer(port uint16, size int) error {
	c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))))
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(faultWait))
	data := make([]byte, size)
	rand.Read(data)
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		werr <- err
	}()
	got, err := io.ReadAll(c)
	if err := errors.Join(err, <-werr); err != nil {
		return err
	}
	if sha256.Sum256(got) != sha256.Sum256(data) {
		return errors.New("echo differs from what was sent (" + strconv.Itoa(len(got)) + " of " + strconv.Itoa(size) + " bytes)")
	}
	return nil
}

// faultPorts is a random 100-port window above the kernel's ephemeral
// range, so that the many outgoing connections of these tests never hold a
// port a portalias wants.
func faultPorts() (low, high uint16) {
	low = uint16(61000 + mrand.N(30)*100)
	return low, low + 99
}
