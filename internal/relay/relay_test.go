package relay_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"paradigm/internal/relay"
)

// startPair runs a relay and one playnode "dev1" with the given services,
// connected over transport tr, and waits until it is online.
func startPair(t *testing.T, tr string, services ...string) (*testRelay, *testNode, map[string]uint16) {
	t.Helper()
	cfg := relayConfig(t)
	keyFile, _ := authorize(t, cfg, "dev1")
	r := startRelay(t, cfg, tr)
	n := startNode(t, r.nodeConfig(t, "dev1", keyFile, services...))
	return r, n, waitOnline(t, r, "dev1", len(services))
}

func TestForwardByteExact(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr string) {
		_, _, ports := startPair(t, tr, "echo="+echoServer(t))
		c := dialPortalias(t, ports["echo"])

		data := make([]byte, 4<<20)
		rand.Read(data)
		werr := make(chan error, 1)
		go func() {
			_, err := c.Write(data)
			if err == nil {
				err = c.CloseWrite()
			}
			werr <- err
		}()
		h := sha256.New()
		n, err := io.Copy(h, c)
		if err != nil {
			t.Fatalf("read echo: %v after %d bytes", err, n)
		}
		if err := <-werr; err != nil {
			t.Fatalf("write: %v", err)
		}
		if n != int64(len(data)) {
			t.Fatalf("got %d bytes back, want %d", n, len(data))
		}
		if got, want := h.Sum(nil), sha256.Sum256(data); !bytes.Equal(got, want[:]) {
			t.Fatalf("echo checksum %x, want %x", got, want)
		}
	})
}

// TestHalfClose checks that a client that shuts its write side still gets
// the whole reply of a service that answers only after reading to EOF.
func TestHalfClose(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr string) {
		reply := bytes.Repeat([]byte("reply "), 200<<10) // 1.2 MiB, more than a window
		svc := serve(t, func(c *net.TCPConn) {
			req, err := io.ReadAll(c)
			if err != nil {
				return
			}
			fmt.Fprintf(c, "got %d bytes %x\n", len(req), sha256.Sum256(req))
			c.Write(reply)
			c.CloseWrite()
		})
		_, _, ports := startPair(t, tr, "svc="+svc)
		c := dialPortalias(t, ports["svc"])
		req := bytes.Repeat([]byte("request "), 1000)
		if _, err := c.Write(req); err != nil {
			t.Fatal(err)
		}
		if err := c.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(c)
		if err != nil {
			t.Fatalf("read reply: %v after %d bytes", err, len(got))
		}
		want := append(fmt.Appendf(nil, "got %d bytes %x\n", len(req), sha256.Sum256(req)), reply...)
		if !bytes.Equal(got, want) {
			t.Fatalf("got %d bytes of reply, want %d (first line %q)", len(got), len(want), bytes.SplitN(got, []byte("\n"), 2)[0])
		}
	})
}

func TestConcurrentConnections(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr string) {
		_, _, ports := startPair(t, tr, "echo="+echoServer(t))
		const conns = 100
		var wg sync.WaitGroup
		errs := make(chan error, conns)
		for i := range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := net.Dial("tcp", portAddr(ports["echo"]))
				if err != nil {
					errs <- err
					return
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(waitTimeout))
				msg := bytes.Repeat(fmt.Appendf(nil, "conn %03d ", i), 3000)
				go func() {
					c.Write(msg)
					c.(*net.TCPConn).CloseWrite()
				}()
				got, err := io.ReadAll(c)
				if err != nil {
					errs <- fmt.Errorf("conn %d: read: %v after %d bytes", i, err, len(got))
					return
				}
				if !bytes.Equal(got, msg) {
					errs <- fmt.Errorf("conn %d: got %d bytes back, want %d, equal prefix %v", i, len(got), len(msg), bytes.HasPrefix(msg, got))
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
}

// TestServiceDown checks that a connection to a portalias whose service is
// not running on the device is closed at once, not left hanging.
func TestServiceDown(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr string) {
		r, _, ports := startPair(t, tr, "down="+deadAddr(t))
		closedAtOnce(t, ports["down"])
		waitFor(t, "relay to log the failed dial", func() bool { return r.log.Contains("service unavailable on playnode") })
	})
}

func TestPortaliasesStableAcrossNodeReconnect(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr string) {
		cfg := relayConfig(t)
		keyFile, _ := authorize(t, cfg, "dev1")
		r := startRelay(t, cfg, tr)
		ncfg := r.nodeConfig(t, "dev1", keyFile, "a="+replyServer(t, "A"), "b="+replyServer(t, "B"))
		n := startNode(t, ncfg)
		first := waitOnline(t, r, "dev1", 2)
		if first["a"] == first["b"] {
			t.Fatalf("services a and b share portalias %d", first["a"])
		}
		for svc, port := range first {
			if port < r.cfg.PortLow || port > r.cfg.PortHigh {
				t.Errorf("service %s: portalias %d outside the range %d-%d", svc, port, r.cfg.PortLow, r.cfg.PortHigh)
			}
		}
		n.stop(t)
		waitOffline(t, r, "dev1")
		startNode(t, ncfg)
		if second := waitOnline(t, r, "dev1", 2); second["a"] != first["a"] || second["b"] != first["b"] {
			t.Fatalf("portaliases after reconnect %v, want %v", second, first)
		}
		for svc, want := range map[string]string{"a": "A", "b": "B"} {
			if got, err := fetch(t, first[svc]); err != nil || got != want {
				t.Errorf("service %s: got %q, %v, want %q", svc, got, err, want)
			}
		}
	})
}

func TestPortaliasesStableAcrossRelayRestart(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr string) {
		cfg := relayConfig(t)
		keyFile, _ := authorize(t, cfg, "dev1")
		r := startRelay(t, cfg, tr)
		startNode(t, r.nodeConfig(t, "dev1", keyFile, "a="+replyServer(t, "A"), "b="+replyServer(t, "B")))
		first := waitOnline(t, r, "dev1", 2)
		r.stop(t)
		for svc, port := range first {
			if isBound(port) {
				t.Errorf("service %s: portalias %d still bound after the relay stopped", svc, port)
			}
		}

		// The node keeps dialling the same address and pins the same host key.
		r2 := startRelay(t, r.cfg, tr)
		if second := waitOnline(t, r2, "dev1", 2); second["a"] != first["a"] || second["b"] != first["b"] {
			t.Fatalf("portaliases after relay restart %v, want %v", second, first)
		}
		for svc, want := range map[string]string{"a": "A", "b": "B"} {
			if got, err := fetch(t, first[svc]); err != nil || got != want {
				t.Errorf("service %s: got %q, %v, want %q", svc, got, err, want)
			}
		}
	})
}

// TestBusyPortSkipped checks that a port of the range some other program
// already holds is skipped, not assigned.
func TestBusyPortSkipped(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr string) {
		var (
			cfg  relay.Config
			busy net.Listener
			err  error
		)
		for range 10 {
			cfg = relayConfig(t)
			if busy, err = net.Listen("tcp", portAddr(cfg.PortLow)); err == nil {
				break
			}
		}
		if err != nil {
			t.Fatalf("no free low port to occupy: %v", err)
		}
		defer busy.Close()
		keyFile, _ := authorize(t, cfg, "dev1")
		r := startRelay(t, cfg, tr)
		startNode(t, r.nodeConfig(t, "dev1", keyFile, "echo="+echoServer(t)))
		port := waitOnline(t, r, "dev1", 1)["echo"]
		if port == cfg.PortLow || port < cfg.PortLow || port > cfg.PortHigh {
			t.Fatalf("got portalias %d, want one in %d-%d other than the busy %d", port, cfg.PortLow, cfg.PortHigh, cfg.PortLow)
		}
		if !r.log.Contains("port in use on the server, skipped") {
			t.Errorf("relay log does not say the busy port was skipped")
		}
		if got, err := fetch(t, port); err != nil || got != "" {
			t.Errorf("fetch through portalias %d: got %q, %v, want an empty echo", port, got, err)
		}
	})
}

// TestOfflinePortalias checks that a playnode's portalias stays bound while
// it is offline, and that connections to it are closed at once.
func TestOfflinePortalias(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr string) {
		r, n, ports := startPair(t, tr, "echo="+echoServer(t))
		n.stop(t)
		waitOffline(t, r, "dev1")
		port := ports["echo"]
		if !isBound(port) {
			t.Fatalf("portalias %d is not bound while its playnode is offline", port)
		}
		closedAtOnce(t, port)
	})
}

// TestSessionReplaced checks that a second process of the same playnode
// takes over at once: the old one is told it was replaced, the new one
// serves the portalias, and the port never looks busy.
func TestSessionReplaced(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr string) {
		cfg := relayConfig(t)
		keyFile, _ := authorize(t, cfg, "dev1")
		r := startRelay(t, cfg, tr)
		oldCfg := r.nodeConfig(t, "dev1", keyFile, "svc="+replyServer(t, "old"))
		oldCfg.BackoffMax = waitTimeout // so that it does not take over again before it is stopped
		old := startNode(t, oldCfg)
		port := waitOnline(t, r, "dev1", 1)["svc"]
		if got, err := fetch(t, port); err != nil || got != "old" {
			t.Fatalf("before replacement: got %q, %v, want %q", got, err, "old")
		}

		newer := startNode(t, r.nodeConfig(t, "dev1", keyFile, "svc="+replyServer(t, "new")))
		waitFor(t, "the old node to be refused as replaced", func() bool { return old.log.Contains("relay refused: replaced") })
		old.stop(t)
		// The new session was registered before the old one was refused.
		if got, err := fetch(t, port); err != nil || got != "new" {
			t.Fatalf("after replacement: got %q, %v, want %q", got, err, "new")
		}
		if ps := waitOnline(t, r, "dev1", 1); ps["svc"] != port {
			t.Errorf("portalias after replacement %d, want %d", ps["svc"], port)
		}
		if newer.log.Contains("relay refused") {
			t.Errorf("the new node was refused")
		}
		// Some other program may hold a port of the window at the first
		// assignment; the takeover itself must bind nothing.
		_, after, _ := strings.Cut(r.log.String(), "session replaced")
		for _, s := range []string{"port in use", "bind portalias", "portalias assigned"} {
			if strings.Contains(after, s) {
				t.Errorf("relay log after the takeover contains %q", s)
			}
		}
	})
}
