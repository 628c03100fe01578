// Package muxtest is the conformance suite every mux.Session transport
// passes: yamux over SSH (with its lanes) and native QUIC streams.
package muxtest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"

	"paradigm/internal/mux"
)

// PairFunc returns a connected client (node) and server (relay) Session.
// It registers their Close with t.Cleanup.
type PairFunc func(t *testing.T) (client, server mux.Session)

// Timeout bounds every wait in the suite; it is generous because waits end
// on conditions, never on time passing.
const Timeout = 10 * time.Second

// Run runs the suite; each subtest gets a fresh pair.
func Run(t *testing.T, pair PairFunc) {
	tests := []struct {
		name string
		fn   func(*testing.T, PairFunc)
	}{
		{"OpenAcceptBothWays", testOpenAccept},
		{"Transfer8MiBBothWays", testTransfer},
		{"HalfClose", testHalfClose},
		{"ConcurrentStreams", testConcurrentStreams},
		{"CloseIdempotentUnblocks", testCloseUnblocks},
		{"PeerCloseEndsSession", testPeerClose},
		{"ContextEndsWithSession", testContextEnds},
		{"ContextCancel", testContextCancel},
		{"DeadSessionReadIsError", testDeadSessionRead},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, pair) })
	}
}

// Context returns a context bounded by Timeout.
func Context(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), Timeout)
	t.Cleanup(cancel)
	return ctx
}

// WaitDone fails t unless s dies within Timeout.
func WaitDone(t *testing.T, s mux.Session) {
	t.Helper()
	select {
	case <-s.Done():
	case <-time.After(Timeout):
		t.Fatalf("session not done after %v", Timeout)
	}
	if s.Err() == nil {
		t.Fatal("Err() = nil after Done, want the reason")
	}
	if !errors.Is(s.Err(), mux.ErrSessionClosed) {
		t.Errorf("Err() = %v, want it to match ErrSessionClosed", s.Err())
	}
}

// Open opens a stream from a and accepts it on b.
func Open(t *testing.T, a, b mux.Session) (opened, accepted mux.Stream) {
	t.Helper()
	ctx := Context(t)
	opened, err := a.OpenStream(ctx)
	if err != nil {
		t.Fatalf("OpenStream: %v", err)
	}
	t.Cleanup(func() { opened.Close() })
	// yamux announces a stream with its first frame; write a byte so the
	// peer sees it, then read it back on the other side.
	if _, err := opened.Write([]byte{0x5a}); err != nil {
		t.Fatalf("write first byte: %v", err)
	}
	accepted, err = b.AcceptStream(ctx)
	if err != nil {
		t.Fatalf("AcceptStream: %v", err)
	}
	t.Cleanup(func() { accepted.Close() })
	var one [1]byte
	if _, err := io.ReadFull(accepted, one[:]); err != nil || one[0] != 0x5a {
		t.Fatalf("read first byte: got %x, %v, want 5a", one, err)
	}
	return opened, accepted
}

func testOpenAccept(t *testing.T, pair PairFunc) {
	client, server := pair(t)
	for _, dir := range []struct {
		name   string
		o, a   mux.Session
		expect int
	}{{"node to relay", client, server, 1}, {"relay to node", server, client, 2}} {
		o, a := Open(t, dir.o, dir.a)
		msg := []byte("hello " + dir.name)
		if _, err := a.Write(msg); err != nil {
			t.Fatalf("%s: write reply: %v", dir.name, err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(o, got); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("%s: got %q, %v, want %q", dir.name, got, err, msg)
		}
		if n := dir.o.NumStreams(); n != dir.expect {
			t.Errorf("%s: NumStreams() = %d, want %d", dir.name, n, dir.expect)
		}
	}
	if client.LocalAddr() == nil || client.RemoteAddr() == nil {
		t.Error("client addresses are nil")
	}
}

// sendAll writes size seeded random bytes, then half-closes; it returns
// their SHA-256.
func sendAll(s mux.Stream, size int, seed uint64) ([32]byte, error) {
	h := sha256.New()
	rng := rand.NewChaCha8([32]byte{byte(seed)})
	buf := make([]byte, 64<<10)
	for left := size; left > 0; left -= len(buf) {
		b := buf[:min(left, len(buf))]
		rng.Read(b)
		h.Write(b)
		if _, err := s.Write(b); err != nil {
			return [32]byte{}, fmt.Errorf("write: %w", err)
		}
	}
	if err := s.CloseWrite(); err != nil {
		return [32]byte{}, fmt.Errorf("close write: %w", err)
	}
	return [32]byte(h.Sum(nil)), nil
}

// recvAll reads to EOF and returns the byte count and SHA-256.
func recvAll(s mux.Stream) (int64, [32]byte, error) {
	h := sha256.New()
	n, err := io.Copy(h, s)
	return n, [32]byte(h.Sum(nil)), err
}

func testTransfer(t *testing.T, pair PairFunc) {
	const size = 8 << 20
	client, server := pair(t)
	c, s := Open(t, client, server)
	type result struct {
		sent, got        [32]byte
		n                int64
		sendErr, recvErr error
	}
	var cr, sr result
	var wg sync.WaitGroup
	for _, x := range []struct {
		st   mux.Stream
		seed uint64
		out  *result
	}{{c, 1, &cr}, {s, 2, &sr}} {
		wg.Go(func() { x.out.sent, x.out.sendErr = sendAll(x.st, size, x.seed) })
		wg.Go(func() { x.out.n, x.out.got, x.out.recvErr = recvAll(x.st) })
	}
	wg.Wait()
	if err := errors.Join(cr.sendErr, cr.recvErr, sr.sendErr, sr.recvErr); err != nil {
		t.Fatal(err)
	}
	if sr.n != size || sr.got != cr.sent {
		t.Errorf("node to relay: got %d bytes %x, want %d bytes %x", sr.n, sr.got[:4], size, cr.sent[:4])
	}
	if cr.n != size || cr.got != sr.sent {
		t.Errorf("relay to node: got %d bytes %x, want %d bytes %x", cr.n, cr.got[:4], size, sr.sent[:4])
	}
}

func testHalfClose(t *testing.T, pair PairFunc) {
	client, server := pair(t)
	c, s := Open(t, client, server)
	request := []byte("request body, then EOF")
	reply := bytes.Repeat([]byte("reply after EOF "), 64<<10) // 1 MiB
	go func() {
		c.Write(request)
		c.CloseWrite()
	}()
	got, err := io.ReadAll(s)
	if err != nil || !bytes.Equal(got, request) {
		t.Fatalf("relay read: got %q, %v, want %q then EOF", got, err, request)
	}
	// The relay has seen EOF and still replies on the same stream.
	go func() {
		s.Write(reply)
		s.Close()
	}()
	got, err = io.ReadAll(c)
	if err != nil || !bytes.Equal(got, reply) {
		t.Fatalf("node read: got %d bytes, %v, want %d bytes then EOF", len(got), err, len(reply))
	}
}

// testConcurrentStreams echoes 200 streams at once. The relay opens them,
// as it opens every forwarded connection, and the node accepts them.
func testConcurrentStreams(t *testing.T, pair PairFunc) {
	const streams, size = 200, 32 << 10
	client, server := pair(t)
	ctx := Context(t)
	var echoes sync.WaitGroup
	defer echoes.Wait()
	echoes.Go(func() {
		for range streams {
			st, err := client.AcceptStream(ctx)
			if err != nil {
				t.Errorf("AcceptStream: %v", err)
				return
			}
			echoes.Go(func() {
				defer st.Close()
				if _, err := io.Copy(st, st); err != nil {
					t.Errorf("echo: %v", err)
				}
				st.CloseWrite()
			})
		}
	})
	var wg sync.WaitGroup
	for i := range streams {
		wg.Go(func() {
			st, err := server.OpenStream(ctx)
			if err != nil {
				t.Errorf("stream %d: OpenStream: %v", i, err)
				return
			}
			defer st.Close()
			var sent [32]byte
			var sendErr error
			done := make(chan struct{})
			go func() {
				defer close(done)
				sent, sendErr = sendAll(st, size, uint64(i))
			}()
			n, got, err := recvAll(st)
			<-done
			if err != nil || sendErr != nil {
				t.Errorf("stream %d: recv: %v, send: %v", i, err, sendErr)
				return
			}
			if n != size || got != sent {
				t.Errorf("stream %d: got %d bytes %x, want %d bytes %x", i, n, got[:4], size, sent[:4])
			}
		})
	}
	wg.Wait()
}

func testCloseUnblocks(t *testing.T, pair PairFunc) {
	client, server := pair(t)
	c, _ := Open(t, client, server)
	acceptErr := make(chan error, 1)
	go func() {
		_, err := client.AcceptStream(context.Background())
		acceptErr <- err
	}()
	readErr := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 1))
		readErr <- err
	}()
	for i := range 2 {
		if err := client.Close(); err != nil {
			t.Errorf("Close #%d: %v", i+1, err)
		}
	}
	WaitDone(t, client)
	for name, ch := range map[string]chan error{"AcceptStream": acceptErr, "Read": readErr} {
		select {
		case err := <-ch:
			if err == nil || errors.Is(err, io.EOF) {
				t.Errorf("%s after Close: got %v, want an error other than EOF", name, err)
			}
		case <-time.After(Timeout):
			t.Fatalf("%s still blocked %v after Close", name, Timeout)
		}
	}
	if _, err := client.OpenStream(context.Background()); err == nil {
		t.Error("OpenStream after Close: got nil error")
	}
}

func testPeerClose(t *testing.T, pair PairFunc) {
	client, server := pair(t)
	Open(t, client, server)
	if client.Err() != nil {
		t.Fatalf("Err() = %v while alive, want nil", client.Err())
	}
	server.Close()
	WaitDone(t, client)
}

// testContextEnds: Context is cancelled once the session is dead, on both
// ends, on the end that closed it and on its peer, never before Done.
func testContextEnds(t *testing.T, pair PairFunc) {
	client, server := pair(t)
	Open(t, client, server)
	if client.Context().Err() != nil || server.Context().Err() != nil {
		t.Fatal("Context cancelled while the session is alive")
	}
	server.Close()
	for _, side := range []struct {
		name string
		s    mux.Session
	}{{"relay (closed it)", server}, {"node (its peer)", client}} {
		select {
		case <-side.s.Context().Done():
		case <-time.After(Timeout):
			t.Fatalf("%s: Context not cancelled %v after the session ended", side.name, Timeout)
		}
		select {
		case <-side.s.Done():
		default:
			t.Errorf("%s: Context cancelled before Done was closed", side.name)
		}
	}
}

func testContextCancel(t *testing.T, pair PairFunc) {
	client, server := pair(t)
	ctx, cancel := context.WithCancel(t.Context())
	acceptErr := make(chan error, 1)
	go func() {
		_, err := server.AcceptStream(ctx)
		acceptErr <- err
	}()
	cancel()
	select {
	case err := <-acceptErr:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("AcceptStream: got %v, want context.Canceled", err)
		}
	case <-time.After(Timeout):
		t.Fatal("AcceptStream not unblocked by cancel")
	}
	if _, err := client.OpenStream(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("OpenStream(cancelled): got %v, want context.Canceled", err)
	}
	// Open without the peer accepting until flow control blocks OpenStream;
	// its context must unblock it. The relay opens, as it does in use: the
	// node opens only its control stream.
	for i := range 10000 {
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		st, err := server.OpenStream(ctx)
		cancel()
		if err != nil {
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("OpenStream #%d: got %v, want context.DeadlineExceeded", i, err)
			}
			return
		}
		st.Write([]byte{0})
	}
	t.Fatal("OpenStream never blocked on 10000 unaccepted streams")
}

func testDeadSessionRead(t *testing.T, pair PairFunc) {
	client, server := pair(t)
	c, s := Open(t, client, server)
	if _, err := s.Write([]byte("partial")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len("partial"))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	readErr := make(chan error, 1)
	go func() {
		_, err := io.ReadAll(c)
		readErr <- err
	}()
	server.Close() // no FIN on the stream: the response is cut off
	select {
	case err := <-readErr:
		if err == nil || errors.Is(err, io.EOF) {
			t.Errorf("Read on a dead session: got %v, want an error that is not EOF", err)
		}
	case <-time.After(Timeout):
		t.Fatal("Read still blocked after the peer closed the session")
	}
}

// Throughput measures one stream from client to server on an established
// pair, 256 KiB per iteration, so every transport is benchmarked alike.
func Throughput(b *testing.B, client, server mux.Session) {
	st, err := client.OpenStream(b.Context())
	if err != nil {
		b.Fatal(err)
	}
	drained := make(chan error, 1)
	go func() {
		in, err := server.AcceptStream(b.Context())
		if err == nil {
			_, err = io.Copy(io.Discard, in)
		}
		drained <- err
	}()
	buf := make([]byte, 256<<10)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := st.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	st.CloseWrite()
	if err := <-drained; err != nil {
		b.Fatal(err)
	}
}

// AckChunk is what AckSink reads before it acknowledges, and what
// SendAcked sends per op: 1 MiB.
const AckChunk = 1 << 20

// AckSink reads c in AckChunk pieces and acknowledges each with one byte,
// until c fails.
func AckSink(c io.ReadWriter) {
	buf := make([]byte, AckChunk+1)
	ack := buf[AckChunk:] // not a fresh slice per write: no allocation per op
	for {
		if _, err := io.ReadFull(c, buf[:AckChunk]); err != nil {
			return
		}
		if _, err := c.Write(ack); err != nil {
			return
		}
	}
}

// SendAcked is the loop of a bulk benchmark: per op it writes AckChunk to
// c, whose far end runs AckSink, and waits for the acknowledgement. It
// reports MB/s, allocations, and allocs/32KiB: allocations of the whole
// process per 32 KiB moved, i.e. per forwarded splice buffer.
func SendAcked(b *testing.B, c io.ReadWriter) {
	payload := bytes.Repeat([]byte{'x'}, AckChunk)
	ack := make([]byte, 1)
	send := func() {
		if _, err := c.Write(payload); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, ack); err != nil {
			b.Fatal(err)
		}
	}
	send() // streams open, windows grown, buffer pools warm
	b.SetBytes(AckChunk)
	b.ReportAllocs()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	ops := 0
	for b.Loop() {
		send()
		ops++
	}
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/float64(ops*AckChunk/(32<<10)), "allocs/32KiB")
}
