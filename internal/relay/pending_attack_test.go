package relay_test

import (
	"context"
	"encoding/binary"
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
	"paradigm/internal/relay"
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
		thieves := authorizeAttackers(t, cfg, "thief", keys)
		honest, _ := authorize(t, cfg, "honest")
		r := startRelay(t, cfg, tr)
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()

		baseHeap, baseRSS := liveHeap(), rss(t)
		sessions := make([]mux.Session, keys)
		closeSessions(t, sessions)
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

// parkOnControlStream is the attack of an authorized node on the relay's
// memory through its control stream: it sends a valid hello, so that the
// relay welcomes it and stops reading, and then as much more as the relay
// lets it, in writes of Splice's size, each given a second. It returns
// the bytes its writes took after the hello: over SSH more than reach the
// relay's yamux when the relay hangs up meanwhile.
func parkOnControlStream(t *testing.T, sess mux.Session, hello *proto.Hello) int64 {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	ctrl, err := sess.OpenStream(ctx)
	if err != nil {
		t.Errorf("open control stream: %v", err)
		return 0
	}
	if err := proto.WriteMessage(ctrl, hello); err != nil {
		t.Errorf("send hello: %v", err)
		return 0
	}
	chunk := make([]byte, 32<<10)
	var sent int64
	for range 8 << 20 / len(chunk) {
		ctrl.SetWriteDeadline(time.Now().Add(time.Second))
		n, err := ctrl.Write(chunk)
		sent += int64(n)
		if err != nil {
			break
		}
	}
	return sent
}

// TestControlStreamParking: authorized nodes say hello, are welcomed, and
// then fill the control stream, which the relay no longer reads. Over SSH
// a node may send 256 KiB in all on its control stream (an Enroll and a
// Hello take at most 128 KiB) and the relay ends the session past that
// (mux's MaxPeerBytes); over QUIC what it parks is bounded by quic-go's
// stream receive window, 512 KiB, which grows only as the relay reads.
// Before the budget an SSH node parked the relay's whole 4 MiB stream
// window there: 4.3 MiB of heap per node. Heap is the test process's,
// attackers included.
func TestControlStreamParking(t *testing.T) {
	const keys = 8
	forEachTransport(t, func(t *testing.T, tr string) {
		cfg := relayConfig(t)
		thieves := authorizeAttackers(t, cfg, "parker", keys)
		honest, _ := authorize(t, cfg, "honest")
		r := startRelay(t, cfg, tr)
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()

		baseHeap, baseRSS := liveHeap(), rss(t)
		sessions := make([]mux.Session, keys)
		closeSessions(t, sessions)
		sent := make([]int64, keys)
		var wg sync.WaitGroup
		for i, k := range thieves {
			name := fmt.Sprintf("parker-%d", i)
			sessions[i] = rawDial(ctx, t, r, k, name)
			wg.Go(func() { sent[i] = parkOnControlStream(t, sessions[i], helloWith(name, "svc", 1)) })
		}
		wg.Wait()
		heap, grownRSS := min(liveHeap(), liveHeap())-baseHeap, rss(t)-baseRSS
		var most int64
		ended := 0
		for i, s := range sessions {
			most = max(most, sent[i])
			select {
			case <-s.Done():
				ended++
			default:
			}
		}
		t.Logf("%s: %d welcomed nodes filling their control streams: at most %d KiB written after the hello, %d sessions ended; heap grew %d KiB (%d KiB per node), RSS %d KiB",
			tr, keys, most>>10, ended, heap>>10, heap/keys>>10, grownRSS>>10)
		switch tr {
		case node.TransportSSH:
			// What the relay's yamux takes before it hangs up is pinned
			// by mux's TestControlStreamBudget.
			for i, s := range sessions {
				select {
				case <-s.Done():
				case <-ctx.Done():
					t.Fatalf("parker-%d wrote %d bytes on its control stream and is still connected, want the relay to end the session past 256 KiB", i, sent[i])
				}
			}
			if heap > keys*(1<<20) {
				t.Errorf("heap grew by %d bytes for %d nodes, want at most %d", heap, keys, keys*(1<<20))
			}
		case node.TransportQUIC:
			const window = 512 << 10
			if most > window {
				t.Errorf("a node sent %d bytes on its control stream after its hello, want at most quic-go's window, %d", most, window)
			}
			if heap > keys*(2<<20) {
				t.Errorf("heap grew by %d bytes for %d nodes, want at most %d", heap, keys, keys*(2<<20))
			}
		}
		if m := rawHello(t, r, honest, helloWith("honest", "svc", 1)); m.(*proto.Welcome) == nil {
			t.Fatalf("another playnode during the attack: %#v, want a welcome", m)
		}
	})
}

// TestPendingControlStream: authorized connections that never say hello
// and fill their control streams as far as they can. The relay reads the
// control stream until it holds one whole message, so all a pending
// connection can make it hold is the message it announces, at most
// proto.MaxMessageSize: a header announcing that much, then a byte less
// (one byte more would complete the message, which the relay would decode
// and refuse). Over SSH and QUIC alike the relay holds 64 KiB more per
// such connection until its handshake deadline, whatever the windows:
// heap 457 KiB per SSH connection and 156-165 KiB per QUIC one, both ends
// in process, before and after MaxPeerBytes.
func TestPendingControlStream(t *testing.T) {
	const keys = 8
	forEachTransport(t, func(t *testing.T, tr string) {
		cfg := relayConfig(t)
		cfg.HandshakeTimeout = time.Minute // the attack is measured while it is pending
		thieves := authorizeAttackers(t, cfg, "staller", keys)
		r := startRelay(t, cfg, tr)
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()

		baseHeap, baseRSS := liveHeap(), rss(t)
		sessions := make([]mux.Session, keys)
		closeSessions(t, sessions)
		frame := make([]byte, 5+proto.MaxMessageSize-1)
		frame[0] = byte(proto.TypeHello)
		binary.BigEndian.PutUint32(frame[1:5], proto.MaxMessageSize)
		for i, k := range thieves {
			sessions[i] = rawDial(ctx, t, r, k, fmt.Sprintf("staller-%d", i))
			ctrl, err := sessions[i].OpenStream(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := ctrl.Write(frame); err != nil {
				t.Fatalf("staller-%d: %v", i, err)
			}
		}
		// Each frame fits the window a stream starts with, so the writes
		// returned once it was handed to the transport; on loopback it is
		// in the relay (in its message buffer, or yamux's or quic-go's)
		// well before the collections are done.
		heap, grownRSS := min(liveHeap(), liveHeap())-baseHeap, rss(t)-baseRSS
		t.Logf("%s: %d pending connections, each holding an unfinished 64 KiB hello: heap grew %d KiB (%d KiB per connection), RSS %d KiB",
			tr, keys, heap>>10, heap/keys>>10, grownRSS>>10)
		for i, s := range sessions {
			if err := s.Err(); err != nil {
				t.Errorf("staller-%d: %v, want it pending", i, err)
			}
		}
		if heap > keys*(1<<20) {
			t.Errorf("heap grew by %d bytes for %d pending connections, want at most %d", heap, keys, keys*(1<<20))
		}
	})
}

// authorizeAttackers authorizes n keys, playnodes prefix-0 to prefix-(n-1),
// and returns their key files.
func authorizeAttackers(t *testing.T, cfg relay.Config, prefix string, n int) []string {
	t.Helper()
	keys := make([]string, n)
	for i := range keys {
		keys[i], _ = authorize(t, cfg, fmt.Sprintf("%s-%d", prefix, i))
	}
	return keys
}

// closeSessions closes, when the test ends, the sessions it dialled into
// sessions (a slot left nil is skipped).
func closeSessions(t *testing.T, sessions []mux.Session) {
	t.Cleanup(func() {
		for _, s := range sessions {
			if s != nil {
				s.Close()
			}
		}
	})
}
