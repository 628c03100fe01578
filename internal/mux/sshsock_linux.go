package mux

import (
	"io"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// tcpRaw returns conn as a TCP connection and its raw socket, or nils
// when conn is not a TCP connection.
func tcpRaw(conn net.Conn) (*net.TCPConn, syscall.RawConn) {
	tc, ok := conn.(*net.TCPConn)
	if !ok {
		return nil, nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil, nil
	}
	return tc, rc
}

// notSentLowat returns a function that sets the TCP_NOTSENT_LOWAT of conn
// (the bytes the kernel may hold unsent before the socket stops taking
// more), or nil when conn is not a TCP connection.
func notSentLowat(conn net.Conn) func(int) {
	_, rc := tcpRaw(conn)
	if rc == nil {
		return nil
	}
	return func(n int) {
		rc.Control(func(fd uintptr) {
			unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, n)
		})
	}
}

// tcpQueue returns, for a TCP socket, the bytes written but not yet
// acknowledged (in flight plus unsent: SIOCOUTQ, counted in bytes, where
// TCP_INFO counts segments, which on loopback's 64 KiB MSS made one
// unacknowledged 4 KiB packet read as 64 KiB), the kernel's delivery rate
// estimate in bytes per second and the minimum round-trip time.
func tcpQueue(conn net.Conn) func() (queued int, rate float64, minRTT time.Duration, ok bool) {
	_, rc := tcpRaw(conn)
	if rc == nil {
		return nil
	}
	return func() (int, float64, time.Duration, bool) {
		var info *unix.TCPInfo
		var queued int
		var serr, qerr error
		if err := rc.Control(func(fd uintptr) {
			info, serr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
			queued, qerr = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ)
		}); err != nil || serr != nil || qerr != nil {
			return 0, 0, 0, false
		}
		return queued, float64(info.Delivery_rate), time.Duration(info.Min_rtt) * time.Microsecond, true
	}
}

// socketWriter returns, for a TCP socket, a write that reports how long it
// waited for the socket to take the bytes (from each EAGAIN until the
// socket was writable again and the writer ran), not counting the time the
// write(2) calls themselves took: on a busy CPU, or on loopback where a
// write also runs the receiver's protocol work, that time is the CPU's,
// not the link's, and timing the whole Write counted it as the link
// setting the pace. nil when conn is not a TCP connection. Deadlines and
// Close interrupt the wait as they do a Write.
func socketWriter(conn net.Conn) func(b []byte) (n int, waited time.Duration, err error) {
	tc, rc := tcpRaw(conn)
	if rc == nil {
		return nil
	}
	w := &sockWriter{tc: tc, rc: rc, own: newSockWrite()}
	return w.write
}

// sockWriter is socketWriter's state. x/crypto/ssh writes one packet at a
// time, so every write reuses own, claimed with busy: no allocation per
// SSH packet (a closure per write was 0.8 % of a loopback transfer's CPU)
// and no lock held across the write. A concurrent write, which net.Conn
// allows, gets a state of its own; the socket's write lock, held by
// RawConn.Write for the whole of each write, keeps each write's bytes
// together.
type sockWriter struct {
	tc   *net.TCPConn
	rc   syscall.RawConn
	busy atomic.Bool // own is in use
	own  *sockWrite
}

// sockWrite is one write's progress.
type sockWrite struct {
	b      []byte
	n      int
	waited time.Duration
	since  time.Time // when the last EAGAIN was seen; zero if none pending
	err    error
	step   func(fd uintptr) bool               // writeSome, bound once
	sys    func(fd int, p []byte) (int, error) // write(2); the tests' fake socket
}

func newSockWrite() *sockWrite {
	s := &sockWrite{sys: unix.Write}
	s.step = s.writeSome
	return s
}

func (w *sockWriter) write(b []byte) (int, time.Duration, error) {
	s := w.own
	if w.busy.CompareAndSwap(false, true) {
		defer w.busy.Store(false)
	} else {
		s = newSockWrite()
	}
	s.b, s.n, s.waited, s.since, s.err = b, 0, 0, time.Time{}, nil
	err := w.rc.Write(s.step)
	if err == nil {
		err = s.err
	}
	if err != nil {
		err = &net.OpError{Op: "write", Net: "tcp", Source: w.tc.LocalAddr(), Addr: w.tc.RemoteAddr(), Err: err}
	}
	n, waited := s.n, s.waited
	s.b = nil // the caller's buffer is not kept
	return n, waited, err
}

// writeSome is the RawConn's write function: false asks it to wait until
// the socket is writable and call again.
func (s *sockWrite) writeSome(fd uintptr) bool {
	if !s.since.IsZero() {
		s.waited += time.Since(s.since)
		s.since = time.Time{}
	}
	for s.n < len(s.b) {
		m, err := s.sys(int(fd), s.b[s.n:])
		switch {
		case err == unix.EINTR:
		case err == unix.EAGAIN:
			s.since = time.Now()
			return false
		case err != nil:
			s.err = os.NewSyscallError("write", err)
			return true
		case m == 0:
			s.err = io.ErrUnexpectedEOF
			return true
		default:
			s.n += m
		}
	}
	return true
}
