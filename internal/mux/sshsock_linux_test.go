package mux

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/sys/unix"
)

// TestSocketWriterCountsOnlyWaits: the pacer's measure of a slow link is
// the time writes wait for the socket. Small writes the socket takes at
// once wait for nothing, however long write(2) itself took (timing whole
// writes counted the CPU's time as the link's: on loopback under load
// the relay, sending only window adjusts, read its link as 2 MB/s and
// paced it); a write larger than the socket's buffers, to a peer that
// reads only once the socket is full, completes.
func TestSocketWriterCountsOnlyWaits(t *testing.T) {
	c, s := tcpPair(t)
	write := socketWriter(c)
	if write == nil {
		t.Fatal("no socket writer for a TCP connection")
	}
	read := make(chan error, 1)
	go func() { _, err := io.CopyN(io.Discard, s, 301*64); read <- err }()
	small := make([]byte, 64)
	for i := range 200 {
		n, waited, err := write(small)
		if n != len(small) || err != nil || waited != 0 {
			t.Fatalf("small write %d: n %d, waited %v, err %v; want %d, 0, nil", i, n, waited, err, len(small))
		}
	}
	// Every SSH packet goes through it: no allocation per write.
	if allocs := testing.AllocsPerRun(100, func() { write(small) }); allocs != 0 {
		t.Errorf("%v allocations per write, want 0", allocs)
	}
	if err := <-read; err != nil {
		t.Fatal(err)
	}

	// Both ends' buffers fixed at 1 MiB (the kernel doubles them: 4 MiB
	// in all; sizes of several 64 KiB loopback segments, so that delayed
	// acknowledgements do not stall the transfer); the peer reads only
	// once the socket is full, so 16 MiB cannot go without waiting.
	setBuf := func(conn *net.TCPConn, opt int) {
		rc, _ := conn.SyscallConn()
		rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, opt, 1<<20) })
	}
	setBuf(c, unix.SO_SNDBUF)
	setBuf(s, unix.SO_RCVBUF)
	big := make([]byte, 16<<20)
	type result struct {
		n      int
		waited time.Duration
		err    error
	}
	done := make(chan result, 1)
	go func() {
		n, waited, err := write(big)
		done <- result{n, waited, err}
	}()
	queue := tcpQueue(c)
	for i := 0; ; i++ {
		if q, _, _, ok := queue(); ok && q >= 1<<20 {
			break
		}
		if i == 1e6 {
			t.Fatal("the socket never filled")
		}
		runtime.Gosched()
	}
	if _, err := io.CopyN(io.Discard, s, int64(len(big))); err != nil {
		t.Fatal(err)
	}
	r := <-done
	// Whether this write met a full socket depends on how fast the peer
	// drained it; TestSockWriteCountsWaits pins the accounting.
	if r.n != len(big) || r.err != nil {
		t.Fatalf("large write: n %d, err %v; want %d, nil", r.n, r.err, len(big))
	}
}

// TestSockWriteCountsWaits: a write's waited time is the time from each
// EAGAIN until the socket is offered again, summed; the write(2) calls'
// own time is not in it. A fake socket under synctest: it takes part of
// the bytes, is full for 7 ms, takes a little more, is full for 3 ms.
func TestSockWriteCountsWaits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newSockWrite()
		calls := 0
		s.sys = func(_ int, p []byte) (int, error) {
			calls++
			switch calls {
			case 1, 3:
				time.Sleep(time.Millisecond) // write(2)'s own time: not waited
				return min(len(p), 1000), nil
			case 2, 4:
				return 0, unix.EAGAIN
			default:
				return len(p), nil
			}
		}
		s.b = make([]byte, 3000)
		for _, wait := range []time.Duration{7 * time.Millisecond, 3 * time.Millisecond} {
			if s.step(0) {
				t.Fatal("the write finished on a full socket")
			}
			time.Sleep(wait) // the RawConn waiting for the socket
		}
		if !s.step(0) {
			t.Fatal("the write did not finish")
		}
		if s.n != 3000 || s.err != nil || s.waited != 10*time.Millisecond {
			t.Fatalf("n %d, err %v, waited %v; want 3000, nil, 10ms", s.n, s.err, s.waited)
		}
	})
}

// TestSocketWriterErrors: the socket writer fails as net.Conn's Write
// does: deadline, closed connection, peer gone.
func TestSocketWriterErrors(t *testing.T) {
	c, s := tcpPair(t)
	write := socketWriter(c)
	c.SetWriteDeadline(time.Now().Add(-time.Second))
	_, _, err := write([]byte("x"))
	var ne net.Error
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("past deadline: %v, want a timeout", err)
	}
	c.SetWriteDeadline(time.Time{})

	s.SetLinger(0)
	s.Close()
	var werr error
	for range 100 { // the reset arrives after the first write
		if _, _, werr = write([]byte("x")); werr != nil {
			break
		}
	}
	if !errors.Is(werr, unix.ECONNRESET) && !errors.Is(werr, unix.EPIPE) {
		t.Fatalf("peer reset: %v, want ECONNRESET or EPIPE", werr)
	}

	c.Close()
	if _, _, err := write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("closed: %v, want net.ErrClosed", err)
	}
}

// TestPacedConnUsesSocketWriter: a TCP transport's writes are measured by
// the socket writer; another connection's (the tests' slow link) whole.
func TestPacedConnUsesSocketWriter(t *testing.T) {
	c, _ := tcpPair(t)
	if newPacedConn(c, c, newPacer(nil, nil)).write == nil {
		t.Fatal("TCP: whole writes timed")
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if newPacedConn(a, a, newPacer(nil, nil)).write != nil {
		t.Fatal("pipe: socket writer")
	}
}

// TestSocketWriterConcurrent: net.Conn allows concurrent writes, and so
// does the socket writer (x/crypto/ssh never makes them): every write's
// bytes arrive whole, not interleaved with another's, and all of them.
func TestSocketWriterConcurrent(t *testing.T) {
	c, s := tcpPair(t)
	write := socketWriter(c)
	const writers, writes, size = 4, 200, 8 << 10
	got := make(chan error, 1)
	go func() {
		buf := make([]byte, size)
		for range writers * writes {
			if _, err := io.ReadFull(s, buf); err != nil {
				got <- err
				return
			}
			for _, b := range buf {
				if b != buf[0] {
					got <- errors.New("one write's bytes interleaved with another's")
					return
				}
			}
		}
		got <- nil
	}()
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			chunk := bytes.Repeat([]byte{byte('a' + i)}, size)
			for range writes {
				if n, _, err := write(chunk); n != size || err != nil {
					t.Errorf("writer %d: n %d, err %v", i, n, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := <-got; err != nil {
		t.Fatal(err)
	}
}
