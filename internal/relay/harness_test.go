package relay_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"paradigm/internal/identity"
	"paradigm/internal/node"
	"paradigm/internal/relay"
	"paradigm/internal/testenv"
)

// waitTimeout bounds every wait on a condition; waits end on the condition,
// never on time passing, so it is generous.
const waitTimeout = 10 * time.Second

// Short timings so that reconnects and reloads happen within milliseconds.
// No test relies on keepalives; under -race on a loaded machine a 200ms
// keepalive fired while 100 connections were busy and killed sessions.
const (
	testKeepalive = 2 * time.Second
	testReload    = 50 * time.Millisecond
	testBackoff   = 200 * time.Millisecond
)

// logBuf collects a role's log lines for assertions.
type logBuf = testenv.LogBuf

// newLog returns a debug logger writing into a fresh logBuf, dumped to the
// test log if the test fails.
func newLog(t *testing.T, role string) (*slog.Logger, *logBuf) {
	t.Helper()
	return testenv.NewLog(t, role, slog.LevelDebug)
}

// waitFor polls cond until it holds, failing t after waitTimeout.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testenv.WaitFor(t, waitTimeout, what, cond)
}

// portWindow picks a random 1000-port range outside the ephemeral range,
// so that tests running in parallel (other packages, other runs) rarely
// meet and no client socket holds one of its ports.
func portWindow() (low, high uint16) {
	l, h := testenv.PortWindow(1000)
	return uint16(l), uint16(h)
}

// transports are what every transport-independent test runs over.
var transports = []string{node.TransportSSH, node.TransportQUIC}

// forEachTransport runs test as a subtest per transport.
func forEachTransport(t *testing.T, test func(t *testing.T, tr string)) {
	t.Helper()
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) { test(t, tr) })
	}
}

// testRelay is a relay running in the background of a test.
type testRelay struct {
	*relay.Relay
	cfg       relay.Config // with the addresses resolved: a restart reuses them
	transport string       // what its nodes dial with
	log       *logBuf
	cancel    context.CancelFunc
	done      chan error
}

// relayConfig is a relay configuration for a fresh data folder.
func relayConfig(t *testing.T) relay.Config {
	t.Helper()
	low, high := portWindow()
	dir := filepath.Join(t.TempDir(), "relay")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return relay.Config{
		DataDir:        dir,
		Listen:         "127.0.0.1:0",
		PortLow:        low,
		PortHigh:       high,
		Keepalive:      testKeepalive,
		ReloadInterval: testReload,
	}
}

// startRelay runs a relay with cfg until the test ends; its nodes dial
// with transport. For QUIC it also listens on UDP, at the port number of
// its TCP address, as deployed: nodes dial both at the same HOST:PORT.
func startRelay(t *testing.T, cfg relay.Config, transport string) *testRelay {
	t.Helper()
	lg, buf := newLog(t, "relay")
	cfg.Logger = lg
	r, err := newRelay(t, &cfg, transport)
	if err != nil {
		t.Fatalf("relay.New: %v", err)
	}
	cfg.Listen = r.Addr().String()
	if a := r.QUICAddr(); a != nil {
		cfg.QUICListen = a.String()
	}
	ctx, cancel := context.WithCancel(context.Background())
	tr := &testRelay{Relay: r, cfg: cfg, transport: transport, log: buf, cancel: cancel, done: make(chan error, 1)}
	go func() { tr.done <- r.Run(ctx) }()
	t.Cleanup(func() { tr.stop(t) })
	return tr
}

// newRelay is relay.New, giving a QUIC relay whose QUICListen is unset one
// TCP and UDP port number: a free TCP port is picked, then both bound, and
// the few times another program takes one in between it tries again.
func newRelay(t *testing.T, cfg *relay.Config, transport string) (*relay.Relay, error) {
	t.Helper()
	if transport != node.TransportQUIC || cfg.QUICListen != "" {
		return relay.New(*cfg)
	}
	var err error
	for range 5 {
		c := *cfg
		c.Listen = net.JoinHostPort("127.0.0.1", strconv.Itoa(testenv.FreePort(t)))
		c.QUICListen = c.Listen
		var r *relay.Relay
		if r, err = relay.New(c); err == nil || !errors.Is(err, syscall.EADDRINUSE) {
			*cfg = c
			return r, err
		}
	}
	return nil, err
}

// stop cancels Run and waits for it; it may be called more than once.
func (r *testRelay) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	select {
	case err, ok := <-r.done:
		if ok && err != nil {
			t.Errorf("relay Run: %v", err)
		}
		if ok {
			close(r.done)
		}
	case <-time.After(waitTimeout):
		var stacks strings.Builder
		pprof.Lookup("goroutine").WriteTo(&stacks, 1)
		t.Fatalf("relay Run did not return within %v of cancel; goroutines:\n%s", waitTimeout, stacks.String())
	}
}

// authorize binds a new node key to name in the data folder of cfg and
// returns its key file. A running relay notices within its reload interval,
// so tests authorize before they start the relay.
func authorize(t *testing.T, cfg relay.Config, name string) (keyFile string, key ssh.Signer) {
	t.Helper()
	keyFile = filepath.Join(t.TempDir(), name+".key")
	key, err := identity.GenerateKey(keyFile, name)
	if err != nil {
		t.Fatal(err)
	}
	if err := relay.Authorize(filepath.Join(cfg.DataDir, relay.AuthorizedFile), name, key.PublicKey(), ""); err != nil {
		t.Fatalf("authorize %s: %v", name, err)
	}
	return keyFile, key
}

// nodeConfig is a node configuration for playnode name on r; services are
// NAME=ADDR pairs.
func (r *testRelay) nodeConfig(t *testing.T, name, keyFile string, services ...string) node.Config {
	t.Helper()
	cfg := node.Config{
		Relay:        r.Addr().String(),
		Fingerprint:  identity.Fingerprint(r.HostKey()),
		KeyFile:      keyFile,
		Transport:    r.transport,
		Name:         name,
		Keepalive:    testKeepalive,
		BackoffMax:   testBackoff,
		RefusedRetry: testBackoff, // refused nodes retry as fast as others here
		MaxStreams:   128,         // TestConcurrentConnections forwards 100 at once
	}
	for _, s := range services {
		svc, err := node.ParseService(s)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Services = append(cfg.Services, svc)
	}
	return cfg
}

// testNode is a node running in the background of a test.
type testNode struct {
	cfg    node.Config
	log    *logBuf
	cancel context.CancelFunc
	done   chan error
}

// startNode runs a node with cfg until stop or the end of the test.
func startNode(t *testing.T, cfg node.Config) *testNode {
	t.Helper()
	lg, buf := newLog(t, "node "+cfg.Name)
	cfg.Logger = lg
	n, err := node.New(cfg)
	if err != nil {
		t.Fatalf("node.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tn := &testNode{cfg: cfg, log: buf, cancel: cancel, done: make(chan error, 1)}
	go func() { tn.done <- n.Run(ctx) }()
	t.Cleanup(func() { tn.stop(t) })
	return tn
}

// stop cancels Run and waits for it; it may be called more than once.
func (n *testNode) stop(t *testing.T) {
	t.Helper()
	n.cancel()
	select {
	case err, ok := <-n.done:
		if ok && err != nil {
			t.Errorf("node Run: %v", err)
		}
		if ok {
			close(n.done)
		}
	case <-time.After(waitTimeout):
		t.Fatalf("node Run did not return within %v of cancel", waitTimeout)
	}
}

// waitState waits on the relay's events until cond holds for its live
// state, and returns that state: no log text, no sleeping.
func waitState(t *testing.T, r *relay.Relay, what string, cond func(relay.Snapshot) bool) relay.Snapshot {
	t.Helper()
	snap, sub := r.Subscribe(256)
	defer sub.Close()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for !cond(snap) {
		select {
		case _, ok := <-sub.C:
			if !ok {
				t.Fatalf("the relay stopped while waiting for %s", what)
			}
			snap = r.Snapshot()
		case <-deadline.C:
			t.Fatalf("timed out after %v waiting for %s", waitTimeout, what)
		}
	}
	return snap
}

// waitOnline waits until playnode is online over the relay's transport with
// n reachable portaliases and returns them by service.
func waitOnline(t *testing.T, r *testRelay, playnode string, n int) map[string]uint16 {
	t.Helper()
	m := map[string]uint16{}
	waitState(t, r.Relay, playnode+" online over "+r.transport+" with "+strconv.Itoa(n)+" portaliases", func(s relay.Snapshot) bool {
		p, ok := s.Playnode(playnode)
		if !ok || !p.Online || p.Transport != r.transport {
			return false
		}
		clear(m)
		for _, svc := range p.Services {
			if svc.State == relay.StateOnline {
				m[svc.Name] = svc.Portalias
			}
		}
		return len(m) == n
	})
	return m
}

func waitOffline(t *testing.T, r *testRelay, playnode string) {
	t.Helper()
	waitState(t, r.Relay, playnode+" offline", func(s relay.Snapshot) bool {
		p, ok := s.Playnode(playnode)
		return !ok || !p.Online
	})
}

// echoServer is a local service that echoes each connection until the
// client half-closes, then half-closes too.
func echoServer(t *testing.T) string {
	t.Helper()
	return serve(t, func(c *net.TCPConn) {
		io.Copy(c, c)
		c.CloseWrite()
	})
}

// replyServer is a local service that answers every connection with reply.
func replyServer(t *testing.T, reply string) string {
	t.Helper()
	return serve(t, func(c *net.TCPConn) {
		io.WriteString(c, reply)
		c.CloseWrite()
		io.Copy(io.Discard, c)
	})
}

// serve runs handle for each connection to a new loopback listener until
// the test ends.
func serve(t *testing.T, handle func(*net.TCPConn)) string {
	t.Helper()
	return testenv.Serve(t, waitTimeout, handle)
}

// deadAddr is a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// dialPortalias connects to a portalias on loopback, with a deadline that
// turns a hang into a test failure.
func dialPortalias(t *testing.T, port uint16) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", portAddr(port))
	if err != nil {
		t.Fatalf("dial portalias %d: %v", port, err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(waitTimeout))
	return c.(*net.TCPConn)
}

func portAddr(port uint16) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))) }

// fetch connects to port, half-closes, and returns everything it receives.
func fetch(t *testing.T, port uint16) (string, error) {
	t.Helper()
	c := dialPortalias(t, port)
	if err := c.CloseWrite(); err != nil {
		return "", err
	}
	b, err := io.ReadAll(c)
	return string(b), err
}

// closedAtOnce connects to port and checks that the server closes the
// connection without sending anything: a read ends in EOF or a reset well
// before the deadline. A reset may come so fast that it fails the connect
// itself, which is as good.
func closedAtOnce(t *testing.T, port uint16) {
	t.Helper()
	closedAtOnceAt(t, portAddr(port))
}

// closedAtOnceAt is closedAtOnce for a portalias at addr.
func closedAtOnceAt(t *testing.T, addr string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if errors.Is(err, syscall.ECONNRESET) {
		return
	}
	if err != nil {
		t.Fatalf("dial portalias %s: %v", addr, err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, err := c.Read(make([]byte, 1))
	if n != 0 || err == nil || isTimeout(err) {
		t.Fatalf("read from portalias: got %d bytes, err %v; want EOF or reset at once", n, err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// isBound reports whether something listens on port: a new listener there
// fails.
func isBound(port uint16) bool {
	ln, err := net.Listen("tcp", portAddr(port))
	if err != nil {
		return true
	}
	ln.Close()
	return false
}
