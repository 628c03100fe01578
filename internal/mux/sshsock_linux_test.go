package mux

import (
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestSocketWriterCountsOnlyWaits: the pacer's measure of a slow link is
// the time writes wait for the socket. Small writes the socket takes at
// once wait for nothing, however long write(2) itself took (timing whole
// writes counted the CPU's time as the link's: on loopback under load
// the relay, sending only window adjusts, read its link as 2 MB/s and
// paced it); a write larger than the socket's buffers, to a peer that
// reads only later, waits.
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

	// Small buffers on both ends: 1 MiB cannot fit; the peer reads only
	// once the socket is full.
	setBuf := func(conn *net.TCPConn, opt int) {
		rc, _ := conn.SyscallConn()
		rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, opt, 16<<10) })
	}
	setBuf(c, unix.SO_SNDBUF)
	setBuf(s, unix.SO_RCVBUF)
	big := make([]byte, 1<<20)
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
		if q, _, _, ok := queue(); ok && q >= 16<<10 {
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
	if r.n != len(big) || r.err != nil || r.waited <= 0 {
		t.Fatalf("large write: n %d, waited %v, err %v; want %d, > 0, nil", r.n, r.waited, r.err, len(big))
	}
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
