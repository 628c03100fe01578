package mux_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"paradigm/internal/mux"
	"paradigm/internal/mux/muxtest"
	"paradigm/internal/testenv"
)

// yamuxInitialWindow is what a peer may send on a stream it opened before
// the other end accepts it: yamux's initialStreamWindow.
const yamuxInitialWindow = 256 << 10

// floodStreams is the attack of a node that has authenticated and never
// says hello: it opens streams (the first is its control stream) and
// sends on each what the relay's window allows without the relay reading,
// writes of Splice's size. It returns the bytes sent and the streams
// opened; it stops at the first error, which the caller judges.
func floodStreams(node mux.Session, streams int) (sent int64, opened int, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), muxtest.Timeout)
	defer cancel()
	chunk := make([]byte, 32<<10-12)
	for range streams {
		st, err := node.OpenStream(ctx)
		if err != nil {
			return sent, opened, err
		}
		opened++
		// A deadline in the past: yamux sends what the window allows,
		// then fails instead of waiting.
		st.SetWriteDeadline(time.Unix(1, 0))
		for range yamuxInitialWindow/len(chunk) + 1 {
			n, err := st.Write(chunk)
			sent += int64(n)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			if err != nil {
				return sent, opened, err
			}
		}
	}
	return sent, opened, nil
}

// TestPendingStreamsMemory attacks as issue 14 did: connections that
// authenticate, open their control stream, never say hello, and open 127
// more streams and fill each to the window yamux gives a stream nobody
// accepted. Without MaxPeerStreams each stream waits in the relay's accept
// backlog (128) with 256 KiB of data for the session's life; with the
// relay's setting of 1 the first extra stream ends the connection, and
// what the relay holds for the attack is what any connection costs.
func TestPendingStreamsMemory(t *testing.T) {
	const (
		conns   = 2
		streams = 128
		perConn = 1 << 20 // SSH and yamux state of both ends, in this process
	)
	for _, limit := range []int{0, 1} {
		t.Run(fmt.Sprintf("MaxPeerStreams=%d", limit), func(t *testing.T) {
			e := newSSHEnv(t)
			e.server.MaxPeerStreams = limit
			base := liveHeap()
			var sent int64
			var relays []mux.Session
			for range conns {
				node, relay, _ := e.pair(t, e.ln.Addr().String())
				relays = append(relays, relay)
				muxtest.Open(t, node, relay) // the control stream, accepted to read the hello
				n, _, _ := floodStreams(node, streams-1)
				sent += n
			}
			if limit == 0 {
				testenv.WaitFor(t, muxtest.Timeout, fmt.Sprintf("the heap to grow by the %d bytes sent", sent), func() bool {
					return liveHeap()-base >= sent
				})
				grown := min(liveHeap()-base, liveHeap()-base)
				t.Logf("%d connections x %d streams, no limit: sent %d KiB, heap grew %d KiB, %d KiB per connection",
					conns, streams, sent>>10, grown>>10, grown/conns>>10)
				return
			}
			for _, relay := range relays {
				muxtest.WaitDone(t, relay)
				if err := relay.Err(); !errors.Is(err, mux.ErrPeerStreams) {
					t.Errorf("relay session ended with %v, want ErrPeerStreams", err)
				}
			}
			grown := min(liveHeap()-base, liveHeap()-base)
			t.Logf("%d connections x %d streams, MaxPeerStreams 1: sent %d KiB before the relay hung up, heap grew %d KiB, %d KiB per connection",
				conns, streams, sent>>10, grown>>10, grown/conns>>10)
			if grown > conns*perConn {
				t.Errorf("heap grew by %d bytes for %d connections, want at most %d", grown, conns, conns*perConn)
			}
		})
	}
}

// TestMaxPeerStreams: with the relay's setting of 1, a node's control
// stream works and its next stream is refused: over SSH the relay ends
// the session (ErrPeerStreams) and logs nothing at Warn itself (the relay
// logs the session's end, rate-limited), over QUIC the node has no credit
// to open it, and the relay can still open its own streams.
func TestMaxPeerStreams(t *testing.T) {
	t.Run("ssh", func(t *testing.T) {
		e := newSSHEnv(t)
		e.server.MaxPeerStreams = 1
		var warnings *testenv.LogBuf
		e.server.Logger, warnings = testenv.NewLog(t, "relay", slog.LevelWarn)
		node, relay, _ := e.pair(t, e.ln.Addr().String())
		muxtest.Open(t, node, relay)
		muxtest.Open(t, relay, node)
		// Opening and writing may fail: the relay hangs up at the SYN.
		if st, err := node.OpenStream(muxtest.Context(t)); err == nil {
			st.Write([]byte("x"))
		}
		muxtest.WaitDone(t, relay)
		muxtest.WaitDone(t, node)
		if err := relay.Err(); !errors.Is(err, mux.ErrPeerStreams) {
			t.Errorf("relay session ended with %v, want ErrPeerStreams", err)
		}
		if w := warnings.String(); w != "" {
			t.Errorf("relay session logged at Warn:\n%s\nwant nothing", w)
		}
	})
	t.Run("ssh, another lane", func(t *testing.T) {
		e := newSSHEnv(t) // no limit: the relay never accepts a stream on another lane
		node, relay, _ := e.pair(t, e.ln.Addr().String())
		muxtest.Open(t, node, relay)
		if err := mux.OpenLane(relay); err != nil {
			t.Fatal(err)
		}
		testenv.WaitFor(t, muxtest.Timeout, "the node to take the second lane", func() bool { return mux.NumLanes(node) == 2 })
		mux.OpenStreamOnLane(node, 1) // may fail: the relay hangs up at the SYN
		muxtest.WaitDone(t, relay)
		if err := relay.Err(); !errors.Is(err, mux.ErrPeerStreams) {
			t.Errorf("relay session ended with %v, want ErrPeerStreams", err)
		}
	})
	t.Run("quic", func(t *testing.T) {
		e := newQUICEnv(t, func(e *quicEnv) { e.server.MaxPeerStreams = 1 })
		node, relay := e.pair(t, nil, nil)
		muxtest.Open(t, node, relay)
		var limited *quic.StreamLimitReachedError
		if err := mux.OpenQUICStreamNow(node); !errors.As(err, &limited) {
			t.Errorf("second stream of the node: %v, want quic.StreamLimitReachedError", err)
		}
		for range 3 {
			muxtest.Open(t, relay, node)
		}
		if err := relay.Err(); err != nil {
			t.Errorf("relay session: %v, want it alive", err)
		}
	})
}
