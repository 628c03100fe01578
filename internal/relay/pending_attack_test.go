package relay_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"paradigm/internal/mux"
	"paradigm/internal/node"
	"paradigm/internal/proto"
)

// floodBeforeHello is issue 14's attack on the relay's memory from one
// authorized connection that never says hello: it opens its control
// stream, sends one byte of a hello and no more, then tries to open 127
// more streams and to send each the 256 KiB that yamux lets a peer send on
// a stream nobody accepted. Opening waits at most a second for stream
// credit, and each write a second for window. It returns the streams it
// opened, the control stream included.
func floodBeforeHello(sess mux.Session) int {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	ctrl, err := sess.OpenStream(ctx)
	if err != nil {
		return 0
	}
	ctrl.Write([]byte{0})
	chunk := make([]byte, 32<<10)
	opened := 1
	var wg sync.WaitGroup
	for range 127 {
		st, err := sess.OpenStream(ctx)
		if err != nil {
			break
		}
		opened++
		wg.Go(func() {
			st.SetWriteDeadline(time.Now().Add(time.Second))
			for range 8 {
				if _, err := st.Write(chunk); err != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	return opened
}

// TestPendingConnectionsMemory runs that attack from 8 keys at once (one
// pending connection per key is all the relay keeps) and measures what the
// relay holds while the connections wait for their hellos. The relay
// accepts only the control stream from a node (mux's MaxPeerStreams 1):
// over SSH the first extra stream ends the connection, over QUIC the node
// gets no credit to open one; either way a pending connection holds its
// control stream and nothing more. Without the bound the relay grew by
// about 64 MiB per SSH connection (127 streams of 256 KiB, in buffers that
// double). Heap and RSS are the test process's, attackers included.
func TestPendingConnectionsMemory(t *testing.T) {
	const (
		keys    = 8
		perConn = 1 << 20 // both ends of a pending connection, in this process
	)
	forEachTransport(t, func(t *testing.T, tr string) {
		cfg := relayConfig(t)
		cfg.HandshakeTimeout = time.Minute // the attack is measured while it is pending
		var thieves []string
		for i := range keys {
			k, _ := authorize(t, cfg, fmt.Sprintf("thief-%d", i))
			thieves = append(thieves, k)
		}
		honest, _ := authorize(t, cfg, "honest")
		r := startRelay(t, cfg, tr)
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()

		baseHeap, baseRSS := liveHeap(), rss(t)
		sessions := make([]mux.Session, keys)
		t.Cleanup(func() {
			for _, s := range sessions {
				if s != nil {
					s.Close()
				}
			}
		})
		opened := make([]int, keys)
		var wg sync.WaitGroup
		for i, k := range thieves {
			sessions[i] = rawDial(ctx, t, r, k, fmt.Sprintf("thief-%d", i))
			wg.Go(func() { opened[i] = floodBeforeHello(sessions[i]) })
		}
		wg.Wait()
		for i, s := range sessions {
			switch {
			case tr == node.TransportSSH:
				select {
				case <-s.Done():
				case <-ctx.Done():
					t.Fatalf("thief-%d opened %d streams and is still connected, want the relay to end the connection at the second", i, opened[i])
				}
			case opened[i] != 1:
				t.Errorf("thief-%d opened %d streams, want only its control stream", i, opened[i])
			}
		}
		if tr == node.TransportSSH {
			// Ended by the relay: what the attackers' ends still hold is
			// theirs, not the relay's.
			for i := range sessions {
				sessions[i].Close()
				sessions[i] = nil
			}
		}
		heap, grownRSS := min(liveHeap(), liveHeap())-baseHeap, rss(t)-baseRSS
		t.Logf("%s: %d pending connections, each trying 128 streams of 256 KiB: heap grew %d KiB (%d KiB per connection), RSS %d KiB",
			tr, keys, heap>>10, heap/keys>>10, grownRSS>>10)
		if heap > keys*perConn {
			t.Errorf("heap grew by %d bytes for %d pending connections, want at most %d", heap, keys, keys*perConn)
		}
		if m := rawHello(t, r, honest, helloWith("honest", "svc", 1)); m.(*proto.Welcome) == nil {
			t.Fatalf("another playnode during the attack: %#v, want a welcome", m)
		}
	})
}

// liveHeap is the bytes of live heap objects, after a collection.
func liveHeap() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// rss is the test process's resident set, from /proc (Linux).
func rss(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("VmRSS %q: %v", v, err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS in /proc/self/status")
	return 0
}
