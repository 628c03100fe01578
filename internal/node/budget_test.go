package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"testing"
	"time"

	"paradigm/internal/identity"
	"paradigm/internal/mux"
	"paradigm/internal/proto"
	"paradigm/internal/testenv"
)

// TestStreamBudget attacks the node the way a stalled service invites:
// the relay opens as many streams as the node serves, to a service that
// never reads, and sends on every one as long as the node lets it. What the
// node holds for them must stay within its budget, derived from
// --max-buffer and --max-streams, and the streams beyond --max-streams must
// be refused with a status.
func TestStreamBudget(t *testing.T) {
	const (
		maxStreams = 32
		maxBuffer  = 16 << 20
		extra      = 4 // streams beyond the limit
		// perStream is what a served stream costs besides its window: two
		// 32 KiB splice buffers, goroutines, yamux and TCP state, and the
		// fake relay's side of the stream, all in this process.
		perStream = 256 << 10
		fixed     = 4 << 20 // lanes, and the heap's own slack
	)
	addr, host, sessions := fakeRelay(t, TransportSSH)
	// The service accepts and never reads, until the test ends.
	stalled, release := context.WithCancel(context.Background())
	sink := testenv.Serve(t, 0, func(*net.TCPConn) { <-stalled.Done() })
	t.Cleanup(release)
	cfg := Config{Relay: addr, Fingerprint: identity.Fingerprint(host.PublicKey()), KeyFile: newKey(t, "dev1"),
		Name: "dev1", Services: []Service{{"sink", sink}}, MaxStreams: maxStreams, MaxBuffer: maxBuffer}
	startNode(t, cfg)
	var sess mux.Session
	select {
	case sess = <-sessions:
	case <-time.After(waitTimeout):
		t.Fatal("the node did not connect to the fake relay")
	}
	window := int64(maxBuffer / maxStreams / bufferPerWindow)
	chunk := make([]byte, 32<<10-12)
	base := liveHeap()

	open := func() (mux.Stream, error) {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		st, err := sess.OpenStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		st.SetDeadline(time.Now().Add(waitTimeout))
		if _, err := st.Write(proto.AppendStreamHeader(nil, "sink")); err != nil {
			t.Fatal(err)
		}
		return st, proto.ReadStreamStatus(st)
	}
	var served []mux.Stream
	for i := range maxStreams {
		st, err := open()
		if err != nil {
			t.Fatalf("stream %d of %d: status %v, want ok", i+1, maxStreams, err)
		}
		served = append(served, st)
	}
	for i := range extra {
		var se *proto.StreamError
		if _, err := open(); !errors.As(err, &se) || se.Status != proto.StatusRefused {
			t.Errorf("stream %d beyond --max-streams %d: status %v, want %s", i+1, maxStreams, err, proto.StatusRefused)
		}
	}

	// Send on every stream until its window is spent, in writes of the
	// relay's splice size: with a deadline in the past, a Write sends what
	// the window allows and then fails instead of waiting. Three rounds,
	// for window updates in flight.
	opened := liveHeap() - base
	var sent int64
	for range 3 {
		for _, st := range served {
			st.SetWriteDeadline(time.Unix(1, 0))
			for {
				n, err := st.Write(chunk)
				sent += int64(n)
				if errors.Is(err, os.ErrDeadlineExceeded) {
					break
				}
				if err != nil || sent > 4*maxBuffer {
					t.Fatalf("write to a stalled stream: %d bytes sent in all, err %v; want the windows, then a deadline error", sent, err)
				}
			}
		}
	}
	if min := int64(maxStreams) * window; sent < min {
		t.Fatalf("the relay could send %d bytes on %d streams, want at least their windows, %d", sent, maxStreams, min)
	}
	// What was sent lands in the node's buffers (at least half of each
	// window stays unread there); then it must fit the budget.
	landed := int64(maxStreams) * window / 2
	var grown int64
	waitFor(t, fmt.Sprintf("the node to hold %d bytes sent to stalled streams", landed), func() bool {
		grown = liveHeap() - base
		return grown >= landed
	})
	// Collections that ran while data was still landing count the garbage
	// of buffers outgrown meanwhile; the system is quiet now.
	grown = min(grown, liveHeap()-base, liveHeap()-base)
	// --max-buffer covers the windows' buffers (twice the windows), each
	// stream's fixed cost comes on top.
	bound := int64(maxBuffer + maxStreams*perStream + fixed)
	t.Logf("%d streams, window %d KiB: opening them grew the heap by %d KiB; sent %d KiB, heap grew %d KiB (bound %d KiB)", maxStreams, window>>10, opened>>10, sent>>10, grown>>10, bound>>10)
	if grown > bound {
		t.Errorf("heap grew by %d bytes with %d stalled streams, want at most %d (--max-buffer %d + %d per stream + %d)",
			grown, maxStreams, bound, maxBuffer, perStream, fixed)
	}
}

// liveHeap is the bytes of live heap objects, after a collection.
func liveHeap() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}
