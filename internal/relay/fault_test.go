package relay_test

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"paradigm/internal/faultproxy"
	"paradigm/internal/relay"
)

// faultSetup runs a relay and one playnode "p1" that dials it through a
// fault proxy; the playnode's service answers "hello".
func faultSetup(t *testing.T) (*faultRelay, *faultproxy.Proxy, *faultNode, uint16) {
	t.Helper()
	cfg := faultRelayConfig(t)
	keys := faultAuthorize(t, cfg.DataDir, "p1")
	r := faultStartRelay(t, cfg)
	p := faultProxy(t, r.Addr().String())
	n := faultStartNode(t, r, p.Addr(), "p1", keys["p1"], faultReply(t, "hello"), slog.LevelInfo, nil)
	port := faultOnline(t, r, "p1")
	faultWaitServed(t, port, "hello")
	return r, p, n, port
}

// TestFaultLinkCutReconnects cuts the node's link (a reset both ways)
// several times: each time the node reconnects through the proxy and keeps
// its portalias.
func TestFaultLinkCutReconnects(t *testing.T) {
	r, p, _, port := faultSetup(t)
	for i := range 5 {
		before := p.Accepted()
		start := time.Now()
		if n := p.Cut(); n != 1 {
			t.Fatalf("cut %d: got %d connections, want 1", i, n)
		}
		faultWaitFor(t, "a new connection through the proxy", func() bool { return p.Accepted() > before })
		faultWaitServed(t, port, "hello")
		if got := faultOnline(t, r, "p1"); got != port {
			t.Fatalf("cut %d: portalias after reconnect: got %d, want %d", i, got, port)
		}
		t.Logf("cut %d: served again after %v", i, time.Since(start).Round(time.Millisecond))
	}
}

// TestFaultBlackholeThenOutage blackholes the link: both ends must find the
// session dead on their own (the relay takes the playnode offline, the node
// logs its disconnection), and the node must come back once the link is
// restored after an outage of 20 keepalive intervals, with the same
// portalias. Detection times are measured and logged, not asserted. Through
// the proxy, whose kernel acknowledges what it then drops, each end sees its
// keepalive request acknowledged and so waits for 2 keepalives of silence
// after that acknowledgement too: about 3.25 keepalives instead of the 2.25
// of a blackhole that acknowledges nothing (see mux/liveness.go).
func TestFaultBlackholeThenOutage(t *testing.T) {
	r, p, n, port := faultSetup(t)
	disconnects := n.log.Count(`msg="disconnected from relay"`)
	start := time.Now()
	p.Set(faultproxy.Faults{Blackhole: true})

	var relayDetect, nodeDetect time.Duration
	faultWaitFor(t, "both ends to find the link dead", func() bool {
		if _, online := r.Online("p1"); !online && relayDetect == 0 {
			relayDetect = time.Since(start)
		}
		if n.log.Count(`msg="disconnected from relay"`) > disconnects && nodeDetect == 0 {
			nodeDetect = time.Since(start)
		}
		return relayDetect != 0 && nodeDetect != 0
	})
	t.Logf("blackhole detected after %v by the relay, %v by the node (keepalive %v)",
		relayDetect.Round(time.Millisecond), nodeDetect.Round(time.Millisecond), faultKeepalive)
	if got, err := faultFetch(port); err == nil && got == "hello" {
		t.Fatal("fetch through the portalias of a playnode whose link is dead was answered")
	}

	// The outage goes on; the node keeps trying (into the blackhole).
	<-time.After(time.Until(start.Add(20 * faultKeepalive)))
	restored := time.Now()
	p.Restore()
	faultWaitServed(t, port, "hello")
	if got := faultOnline(t, r, "p1"); got != port {
		t.Fatalf("portalias after the outage: got %d, want %d", got, port)
	}
	t.Logf("served again %v after the link was restored (backoff max %v, handshake timeout %v)",
		time.Since(restored).Round(time.Millisecond), faultBackoff, faultHandshake)
}

// TestFaultRelayDownThenUp rejects every connection for 20 keepalive
// intervals (a relay that is down), then lets them through.
func TestFaultRelayDownThenUp(t *testing.T) {
	r, p, _, port := faultSetup(t)
	p.Set(faultproxy.Faults{Reject: true})
	p.Cut()
	faultWaitFor(t, "p1 offline", func() bool { _, ok := r.Online("p1"); return !ok })
	<-time.After(20 * faultKeepalive)
	restored := time.Now()
	p.Restore()
	faultWaitServed(t, port, "hello")
	t.Logf("served again %v after the relay came back (backoff max %v)", time.Since(restored).Round(time.Millisecond), faultBackoff)
}

// TestFaultOtherNodesStreamsStayExact cuts one playnode's link over and
// over while another playnode's portalias carries checksummed transfers:
// every one of them must arrive byte-exact.
func TestFaultOtherNodesStreamsStayExact(t *testing.T) {
	cfg := faultRelayConfig(t)
	keys := faultAuthorize(t, cfg.DataDir, "steady", "flaky")
	r := faultStartRelay(t, cfg)
	pSteady := faultProxy(t, r.Addr().String())
	pFlaky := faultProxy(t, r.Addr().String())
	faultStartNode(t, r, pSteady.Addr(), "steady", keys["steady"], faultEcho(t), slog.LevelInfo, nil)
	faultStartNode(t, r, pFlaky.Addr(), "flaky", keys["flaky"], faultEcho(t), slog.LevelInfo, nil)
	steady := faultOnline(t, r, "steady")
	flaky := faultOnline(t, r, "flaky")

	stop := make(chan struct{})
	var cuts int
	var cutter sync.WaitGroup
	cutter.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			before := pFlaky.Accepted()
			cuts += pFlaky.Cut()
			// Wait (bounded) for the reconnection before cutting again.
			end := time.Now().Add(faultWait)
			for pFlaky.Accepted() == before && time.Now().Before(end) {
				select {
				case <-stop:
					return
				case <-time.After(5 * time.Millisecond): // polling interval
				}
			}
			faultFetch(flaky) // its own streams may fail; not checked
		}
	})
	const transfers, parallel, size = 16, 4, 1 << 20
	errs := make(chan error, transfers)
	var wg sync.WaitGroup
	sem := make(chan struct{}, parallel)
	for range transfers {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			errs <- faultTransfer(steady, size)
		})
	}
	wg.Wait()
	close(stop)
	cutter.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("transfer through the steady playnode: %v", err)
		}
	}
	if cuts == 0 {
		t.Fatal("the flaky playnode's link was never cut during the transfers")
	}
	t.Logf("%d transfers of %d bytes byte-exact while the other playnode's link was cut %d times", transfers, size, cuts)
}

// TestFaultCutStreamEndsWithError cuts a playnode's link in the middle of
// a download: the client of the portalias and the playnode's local service
// must both see their connection fail (a reset), never a clean end that
// would pass truncated data off as complete.
func TestFaultCutStreamEndsWithError(t *testing.T) {
	cfg := faultRelayConfig(t)
	keys := faultAuthorize(t, cfg.DataDir, "p1")
	r := faultStartRelay(t, cfg)
	p := faultProxy(t, r.Addr().String())
	serviceErr := make(chan error, 1)
	// An endless download. A reset is reported once, to whichever call
	// meets it first: the writer usually gets ECONNRESET or EPIPE and the
	// reader then sees EOF, so the service's verdict is the first
	// non-EOF error of either.
	service := faultServe(t, func(c *net.TCPConn) {
		writeErr := make(chan error, 1)
		go func() {
			buf := make([]byte, 32<<10)
			for {
				if _, err := c.Write(buf); err != nil {
					writeErr <- err
					return
				}
			}
		}()
		_, err := c.Read(make([]byte, 1))
		if err == nil || errors.Is(err, io.EOF) {
			err = <-writeErr
		}
		serviceErr <- err
	})
	faultStartNode(t, r, p.Addr(), "p1", keys["p1"], service, slog.LevelInfo, nil)
	port := faultOnline(t, r, "p1")

	c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(faultWait))
	if _, err := io.ReadFull(c, make([]byte, 1<<20)); err != nil {
		t.Fatalf("download before the cut: %v", err)
	}
	p.Cut()
	n, err := io.Copy(io.Discard, c)
	if err == nil || errors.Is(err, io.EOF) {
		t.Fatalf("client after the cut: read %d more bytes, then err %v; want a reset", n, err)
	}
	if isTimeout(err) {
		t.Fatalf("client after the cut: no end within %v", faultWait)
	}
	t.Logf("client: %d more bytes, then %v", n, err)
	select {
	case err := <-serviceErr:
		if err == nil || errors.Is(err, io.EOF) {
			t.Fatalf("service after the cut: read err %v, want a reset", err)
		}
		t.Logf("service: %v", err)
	case <-time.After(faultWait):
		t.Fatalf("the service's connection did not end within %v of the cut", faultWait)
	}
}

// TestFaultNodeMovesAddress: a playnode whose link is cut comes back from
// another source address (a move to another network): same portalias, and
// the relay's status shows the new address.
func TestFaultNodeMovesAddress(t *testing.T) {
	r, p, _, port := faultSetup(t)
	for _, ip := range []string{"127.0.0.2", "127.0.0.3"} {
		p.SetSource(net.ParseIP(ip))
		before := p.Accepted()
		p.Cut()
		faultWaitFor(t, "a reconnection from "+ip, func() bool { return p.Accepted() > before })
		faultWaitServed(t, port, "hello")
		if got := faultOnline(t, r, "p1"); got != port {
			t.Fatalf("after moving to %s: portalias %d, want %d", ip, got, port)
		}
		faultWaitFor(t, "the relay to list p1 at "+ip, func() bool {
			rows, _, err := relay.List(r.cfg.DataDir)
			return err == nil && len(rows) == 1 && strings.HasPrefix(rows[0].Remote, ip+":")
		})
	}
}
