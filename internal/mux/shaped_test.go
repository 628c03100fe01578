package mux

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// slowSocket is one end of a link that drains at a fixed rate, modelled
// on a TCP socket: Write puts bytes in a send buffer (up to sndbuf, or
// while fewer than the TCP_NOTSENT_LOWAT set by the pacer wait unsent) and
// a goroutine delivers them to the peer at rate bytes per second. Reads
// are the other direction's, straight from the pipe.
type slowSocket struct {
	net.Conn // one end of a net.Pipe: Read, Close, addresses, deadlines
	rate     float64

	mu      sync.Mutex
	buf     []byte
	lowat   int           // 0: none, up to sndbuf
	changed chan struct{} // closed and replaced whenever buf shrinks or grows
	closed  bool
	done    chan struct{} // the drain goroutine ended
}

// sndbuf is the send buffer without TCP_NOTSENT_LOWAT: Linux autotunes it
// up to 4 MiB.
const sndbuf = 4 << 20

func newSlowSocket(c net.Conn, rate float64) *slowSocket {
	s := &slowSocket{Conn: c, rate: rate, changed: make(chan struct{}), done: make(chan struct{})}
	go s.drain()
	return s
}

// wake tells waiters that buf changed; call with mu held.
func (s *slowSocket) wake() {
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *slowSocket) Write(b []byte) (int, error) {
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return 0, net.ErrClosed
		}
		limit := sndbuf
		if s.lowat > 0 {
			limit = s.lowat
		}
		if len(s.buf) < limit {
			s.buf = append(s.buf, b...)
			s.wake()
			s.mu.Unlock()
			return len(b), nil
		}
		ch := s.changed
		s.mu.Unlock()
		<-ch
	}
}

// drain delivers the buffer at rate: every tick, what the link carried
// since the last one (at most 10 ms worth).
func (s *slowSocket) drain() {
	defer close(s.done)
	const tick = 2 * time.Millisecond
	last := time.Now()
	for {
		s.mu.Lock()
		for len(s.buf) == 0 && !s.closed {
			ch := s.changed
			s.mu.Unlock()
			<-ch
			s.mu.Lock()
			last = time.Now()
		}
		if s.closed {
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		time.Sleep(tick)
		now := time.Now()
		// At most 10 ms of link time per tick: a test starved of CPU
		// slows the link down instead of delivering a burst.
		credit := int(s.rate * min(now.Sub(last), 10*time.Millisecond).Seconds())
		last = now
		s.mu.Lock()
		n := min(len(s.buf), credit)
		seg := append([]byte(nil), s.buf[:n]...)
		s.mu.Unlock()
		if _, err := s.Conn.Write(seg); err != nil {
			return
		}
		s.mu.Lock()
		s.buf = s.buf[n:]
		s.wake()
		s.mu.Unlock()
	}
}

func (s *slowSocket) Close() error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		s.wake()
	}
	s.mu.Unlock()
	err := s.Conn.Close()
	<-s.done
	return err
}

func (s *slowSocket) setNotSentLowat(n int) {
	s.mu.Lock()
	s.lowat = n
	s.wake()
	s.mu.Unlock()
}

func (s *slowSocket) queueInfo() (int, float64, time.Duration, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.buf), s.rate, 0, true
}

// linkRate is 20 Mbit/s, a busy player's uplink.
const linkRate = 20e6 / 8

// slowPair connects a node (client) and a relay (server) session over a
// slowSocket pair.
func slowPair(t *testing.T) (node, relay Session) {
	t.Helper()
	return pairAt(t, linkRate)
}

// pairAt is slowPair over a link of rate bytes per second.
func pairAt(t *testing.T, rate float64) (node, relay Session) {
	t.Helper()
	signer := func() ssh.Signer {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		s, err := ssh.NewSignerFromKey(priv)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	hostKey, nodeKey := signer(), signer()
	a, b := net.Pipe()
	nodeConn, relayConn := newSlowSocket(a, rate), newSlowSocket(b, rate)
	type accepted struct {
		s   Session
		err error
	}
	ch := make(chan accepted, 1)
	go func() {
		s, _, err := AcceptSSH(context.Background(), relayConn, &SSHServerConfig{
			HostKey: hostKey,
			Authorize: func(net.Addr, string, ssh.PublicKey) (string, error) {
				return "player-1", nil
			},
		})
		ch <- accepted{s, err}
	}()
	node, err := DialSSH(context.Background(), nodeConn, &SSHClientConfig{
		Key: nodeKey, User: "player-1", HostKeyCallback: ssh.FixedHostKey(hostKey.PublicKey()),
	})
	if err != nil {
		t.Fatalf("DialSSH: %v", err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatalf("AcceptSSH: %v", r.err)
	}
	t.Cleanup(func() {
		node.Close()
		r.s.Close()
		nodeConn.Close()
		relayConn.Close()
	})
	// The node's control stream, as the relay's AcceptStream expects.
	ctrl, err := node.OpenStream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.s.AcceptStream(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ctrl.Close() })
	return node, r.s
}

// bulk opens a stream from the relay and writes total bytes into it from
// the sender's side (the node when up, the relay otherwise) while the other
// side reads and counts them. received reports the count so far; wait
// waits for both goroutines.
func bulk(t *testing.T, node, relay Session, total int, up bool) (received func() int, wait func()) {
	t.Helper()
	rs, err := relay.OpenStream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rs.Write([]byte{1}); err != nil { // makes the node accept it
		t.Fatal(err)
	}
	ns, err := node.AcceptStream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(ns, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	src, dst := rs, ns
	if up {
		src, dst = ns, rs
	}
	var mu sync.Mutex
	n := 0
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 32<<10)
		for sent := 0; sent < total; sent += len(buf) {
			if _, err := src.Write(buf); err != nil {
				return
			}
		}
		src.CloseWrite()
	})
	wg.Go(func() {
		buf := make([]byte, 64<<10)
		for {
			m, err := dst.Read(buf)
			mu.Lock()
			n += m
			mu.Unlock()
			if err != nil {
				return
			}
		}
	})
	return func() int {
			mu.Lock()
			defer mu.Unlock()
			return n
		}, func() {
			wg.Wait()
			rs.Close()
			ns.Close()
		}
}

// The tests below run in real time, not under testing/synctest: the SSH
// transport writes under a sync.Mutex, and a goroutine waiting for a mutex
// is not durably blocked, so a bubble whose socket write waits for the
// (fake) clock while another writer waits for the mutex never advances its
// clock. They assert an order of events, not durations: the small stream's
// bytes arrive while the bulk stream still has megabytes to send. Without
// pacing the whole bulk backlog sits in the socket's send buffer ahead of
// them (slowSocket models Linux's 4 MiB), and they arrive last.

// bulkTotal is 1.7 s of link time.
const bulkTotal = 4 << 20

// TestSmallStreamBesideBulk: over a 20 Mbit/s link, while the node uploads
// 4 MiB on one stream, a 64-byte request from the relay and its reply on
// another stream complete with at least 1 MiB of the upload still pending:
// the upload's backlog waits above the transport, not in the socket ahead
// of the reply.
func TestSmallStreamBesideBulk(t *testing.T) {
	{
		node, relay := slowPair(t)
		const total = bulkTotal
		received, wait := bulk(t, node, relay, total, true)
		waitFor(t, func() bool { return received() >= 256<<10 }) // the upload fills every queue it can

		rs, err := relay.OpenStream(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		ns, err := acceptAndEcho(t, node, rs)
		if err != nil {
			t.Fatal(err)
		}
		req := make([]byte, 64)
		if _, err := rs.Write(req); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(rs, req); err != nil {
			t.Fatal(err)
		}
		if pending := total - received(); pending < 1<<20 {
			t.Errorf("reply arrived with %d bytes of the upload pending, want at least 1 MiB (it waited for the upload)", pending)
		}
		rs.Close()
		ns.Close()
		wait()
		if got := received(); got != total {
			t.Errorf("upload: got %d bytes, want %d", got, total)
		}
	}
}

// acceptAndEcho accepts on the node the stream rs the relay opened (after
// rs's first byte) and echoes everything on it in a goroutine that ends
// with the stream; the test's cleanup closes the stream and waits for it.
func acceptAndEcho(t *testing.T, node Session, rs Stream) (Stream, error) {
	t.Helper()
	if _, err := rs.Write([]byte{0}); err != nil {
		return nil, err
	}
	ns, err := node.AcceptStream(context.Background())
	if err != nil {
		return nil, err
	}
	if _, err := io.ReadFull(ns, make([]byte, 1)); err != nil {
		return nil, err
	}
	var wg sync.WaitGroup
	wg.Go(func() { io.Copy(ns, ns) })
	t.Cleanup(func() {
		ns.Close()
		wg.Wait()
	})
	return ns, nil
}

// TestNewStreamNotBehindBacklog: while the relay pushes 4 MiB to the node
// on one stream, a stream the relay opens afterwards delivers its first
// bytes to the node with at least 1 MiB of the push still pending.
func TestNewStreamNotBehindBacklog(t *testing.T) {
	{
		node, relay := slowPair(t)
		const total = bulkTotal
		received, wait := bulk(t, node, relay, total, false)
		waitFor(t, func() bool { return received() >= 256<<10 })

		rs, err := relay.OpenStream(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		first := []byte("GET /status")
		if _, err := rs.Write(first); err != nil {
			t.Fatal(err)
		}
		ns, err := node.AcceptStream(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(first))
		if _, err := io.ReadFull(ns, got); err != nil || string(got) != string(first) {
			t.Fatalf("first bytes: got %q, %v, want %q", got, err, first)
		}
		if pending := total - received(); pending < 1<<20 {
			t.Errorf("first bytes arrived with %d bytes of the push pending, want at least 1 MiB", pending)
		}
		rs.Close()
		ns.Close()
		wait()
		if got := received(); got != total {
			t.Errorf("push: got %d bytes, want %d", got, total)
		}
	}
}

// waitFor polls cond until it holds, failing the test after muxtestTimeout.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(muxtestTimeout); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("condition not met in time")
		}
	}
}

// muxtestTimeout bounds every wait (muxtest.Timeout, which this internal
// test cannot import without a cycle).
const muxtestTimeout = 30 * time.Second
