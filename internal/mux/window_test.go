package mux_test

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"testing"
	"time"

	"paradigm/internal/mux"
	"paradigm/internal/mux/muxtest"
	"paradigm/internal/testenv"
)

// relayWindow is the yamux window of Options.StreamWindow's default, what
// the relay runs with: 4 MiB less bytes.MinRead (yamuxWindow).
const relayWindow = 4<<20 - 512

// fillWindow sends on st until the window the peer granted is spent, in
// writes of Splice's size (frames as forwarding makes them): with a
// deadline in the past, yamux's Write sends what the window allows and then
// fails instead of waiting. It returns the bytes sent.
func fillWindow(t *testing.T, st mux.Stream) int64 {
	t.Helper()
	st.SetWriteDeadline(time.Unix(1, 0))
	chunk := make([]byte, 32<<10-12)
	var sent int64
	for range 2 * relayWindow / len(chunk) {
		n, err := st.Write(chunk)
		sent += int64(n)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return sent
		}
		if err != nil {
			break
		}
	}
	t.Fatalf("write to a peer that does not read: %d bytes, want its window, then a deadline error", sent)
	return 0
}

// TestControlStreamWindow pins what a node can park on its control stream,
// which the relay reads only up to the hello, when the relay sets no
// MaxPeerBytes: yamux announces the whole MaxStreamWindowSize as soon as a
// stream is accepted (the window update sent with the ACK), not the 256 KiB
// it starts from, so the node can send the relay's full stream window, and
// not a byte more, without the relay reading. The relay sets MaxPeerBytes
// because of it (TestControlStreamBudget).
func TestControlStreamWindow(t *testing.T) {
	e := newSSHEnv(t)
	node, relay, _ := e.pair(t, e.ln.Addr().String())
	ctrl, accepted := muxtest.Open(t, node, relay)
	// The welcome follows the accept's window update on the same lane:
	// once the node reads it, the node knows the whole window.
	if _, err := accepted.Write([]byte("w")); err != nil {
		t.Fatal(err)
	}
	ctrl.SetReadDeadline(time.Now().Add(muxtest.Timeout))
	if _, err := io.ReadFull(ctrl, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	var sent int64
	for range 3 { // window updates cannot be in flight: the relay reads nothing
		sent += fillWindow(t, ctrl)
	}
	if sent != relayWindow-1 { // muxtest.Open sent one byte, which the relay read
		t.Errorf("the node parked %d bytes on a control stream the relay does not read, want the relay's stream window, %d", sent, relayWindow)
	}
}

// TestControlStreamBudget: with the relay's settings a node may send 256
// KiB on its control stream over the session's life, which the relay's
// yamux takes whole, and the byte past it ends the session (ErrPeerBytes)
// before the relay's yamux holds it; the relay's own streams are not
// counted.
func TestControlStreamBudget(t *testing.T) {
	const budget = 256 << 10
	e := newSSHEnv(t)
	e.server.MaxPeerStreams, e.server.MaxPeerBytes = 1, budget
	node, relay, _ := e.pair(t, e.ln.Addr().String())
	ctrl, accepted := muxtest.Open(t, node, relay) // one byte, read
	fwd, fwdAccepted := muxtest.Open(t, relay, node)
	if _, err := fwdAccepted.Write(make([]byte, 2*budget)); err != nil { // a service answering
		t.Fatal(err)
	}
	if _, err := io.ReadFull(fwd, make([]byte, 2*budget)); err != nil {
		t.Fatal(err)
	}
	if _, err := ctrl.Write(make([]byte, budget-1)); err != nil {
		t.Fatal(err)
	}
	accepted.SetReadDeadline(time.Now().Add(muxtest.Timeout))
	if _, err := io.ReadFull(accepted, make([]byte, budget-1)); err != nil {
		t.Fatalf("read the control stream's %d bytes: %v", budget, err)
	}
	if err := relay.Err(); err != nil {
		t.Fatalf("relay session after %d bytes on the control stream: %v, want it alive", budget, err)
	}
	ctrl.Write([]byte{1}) // may fail: the relay hangs up
	muxtest.WaitDone(t, relay)
	if err := relay.Err(); !errors.Is(err, mux.ErrPeerBytes) {
		t.Errorf("relay session ended with %v, want ErrPeerBytes", err)
	}
	if n, err := accepted.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Errorf("read past the budget: %d bytes, %v; want none and the session's error", n, err)
	}
}

// TestPeerBytesNeedStreamLimit: a peer without a stream limit (the relay
// mesh, PeerStreams 0) forwards data on the streams it opens, so
// MaxPeerBytes does not apply to it.
func TestPeerBytesNeedStreamLimit(t *testing.T) {
	e := newSSHEnv(t)
	e.server.MaxPeerStreams, e.server.MaxPeerBytes = 1, 1024
	e.server.PeerStreams = func(string) int { return 0 }
	node, relay, _ := e.pair(t, e.ln.Addr().String())
	st, accepted := muxtest.Open(t, node, relay)
	if _, err := st.Write(make([]byte, 64<<10)); err != nil {
		t.Fatal(err)
	}
	accepted.SetReadDeadline(time.Now().Add(muxtest.Timeout))
	if _, err := io.ReadFull(accepted, make([]byte, 64<<10)); err != nil {
		t.Fatalf("read 64 KiB from a peer without a stream limit: %v", err)
	}
	if err := relay.Err(); err != nil {
		t.Errorf("relay session: %v, want it alive", err)
	}
}

// TestStalledStreamBuffer measures what the relay holds for streams whose
// reader stalls completely while the peer keeps sending: each stream's
// window of data, in a buffer that grows by doubling (bytes.Buffer), so at
// most twice the window, plus the stream's fixed cost. yamuxWindow keeps the
// buffer of a window filled in full frames at the window's own size (4.2
// MiB per stream measured, 8.1 MiB with a window of exactly 4 MiB); the
// bound is the worst case.
func TestStalledStreamBuffer(t *testing.T) {
	const (
		streams   = 8
		perStream = 256 << 10 // yamux state of a stream, both ends (in this process)
		fixed     = 8 << 21   // 8 lanes, each with up to a 2 MiB SSH channel window in flight
	)
	e := newSSHEnv(t)
	node, relay, _ := e.pair(t, e.ln.Addr().String())
	base := liveHeap()
	var sent int64
	for range streams {
		_, st := muxtest.Open(t, relay, node) // the relay opens, the node's service sends
		for range 3 {
			sent += fillWindow(t, st)
		}
	}
	if min := int64(streams * relayWindow); sent < min {
		t.Fatalf("the node could send %d bytes on %d streams, want at least their windows, %d", sent, streams, min)
	}
	// A relay that never reads holds all that was sent.
	var grown int64
	testenv.WaitFor(t, muxtest.Timeout, fmt.Sprintf("the heap to grow by the %d bytes sent", sent), func() bool {
		grown = liveHeap() - base
		return grown >= sent
	})
	// Collections that ran while data was still landing count the garbage
	// of buffers outgrown meanwhile; the system is quiet now.
	grown = min(grown, liveHeap()-base, liveHeap()-base)
	bound := int64(streams*(2*relayWindow+perStream) + fixed)
	t.Logf("%d stalled streams, window %d KiB: sent %d KiB, relay and node heap grew %d KiB, %d KiB per stream (bound %d KiB)",
		streams, relayWindow>>10, sent>>10, grown>>10, grown/streams>>10, bound>>10)
	if grown > bound {
		t.Errorf("heap grew by %d bytes for %d stalled streams, want at most %d", grown, streams, bound)
	}
}

// liveHeap is the bytes of live heap objects, after a collection.
func liveHeap() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}
