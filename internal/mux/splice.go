package mux

import (
	"errors"
	"io"
	"net"
	"sync"
)

// HalfCloser is one end of a spliced connection: a *net.TCPConn or a Stream.
type HalfCloser interface {
	io.ReadWriteCloser
	CloseWrite() error
}

// spliceBufSize is the copy buffer per direction: one full buffer plus its
// 12-byte yamux header fills exactly one 32 KiB SSH channel packet
// (frameWriter), where 32 KiB would spill 12 bytes into a second packet.
const spliceBufSize = sshMaxPayload - yamuxHeaderSize

var splicePool = sync.Pool{New: func() any { b := make([]byte, spliceBufSize); return &b }}

// Splice copies a to b and b to a until both directions end, propagating
// half-close: when one side's reader reaches EOF the other side's write half
// is closed, and the opposite direction keeps flowing until it ends too, so a
// client that shuts its write side still receives the whole reply. An error in
// either direction (reset, dead session) aborts both, so a cut connection is
// never reported as a clean end. Both a and b are closed when Splice returns.
// It returns the bytes copied each way and the first error.
//
// A TCP side is set to reset on close (SO_LINGER 0) for as long as data may
// still flow to it, so that a process killed mid-transfer, whose sockets the
// kernel closes with the linger in force, cuts its TCP peers with a reset
// rather than a FIN that would make a truncated transfer look complete.
// Splice restores the default linger just before it closes a TCP side's
// write half at a clean end, so that FIN follows every byte written.
func Splice(a, b HalfCloser) (aToB, bToA int64, err error) {
	type result struct {
		n   int64
		err error
	}
	e := &spliceEnds{a: a, b: b}
	setLinger(a, 0)
	setLinger(b, 0)
	done := make(chan result, 1)
	go func() {
		n, err := copyHalf(e, b, a)
		if err != nil {
			e.abort()
		}
		done <- result{n, err}
	}()
	bToA, errBA := copyHalf(e, a, b)
	if errBA != nil {
		e.abort()
	}
	r := <-done
	e.close()
	return r.n, bToA, errors.Join(r.err, errBA)
}

// spliceEnds closes the two sides of one Splice: once, with a reset of the
// TCP sides when a direction failed (abort), with FIN otherwise. mu orders
// a clean half-close (closeWrite) against abort, so that a half-close racing
// an abort cannot put the default linger back after abort chose a reset; it
// is held only around socket options and shutdown(2), which do not block.
type spliceEnds struct {
	a, b    HalfCloser
	mu      sync.Mutex
	aborted bool // guarded by mu
	once    sync.Once
}

// abort makes the TCP sides reset and closes both sides.
func (e *spliceEnds) abort() {
	e.mu.Lock()
	e.aborted = true
	setLinger(e.a, 0)
	setLinger(e.b, 0)
	e.mu.Unlock()
	e.close()
}

func (e *spliceEnds) close() {
	e.once.Do(func() {
		e.a.Close()
		e.b.Close()
	})
}

// closeWrite ends dst's write half after a clean end of what flows to it. A
// TCP side gets its default linger back first: with linger 0, the close
// that follows could discard what the kernel has not sent yet and reset.
func (e *spliceEnds) closeWrite(dst HalfCloser) error {
	tc, ok := dst.(*net.TCPConn)
	if !ok {
		return dst.CloseWrite()
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.aborted {
		return net.ErrClosed
	}
	tc.SetLinger(-1)
	return tc.CloseWrite()
}

// setLinger sets a TCP side's SO_LINGER: 0 makes close send RST and
// discard unsent data, -1 is the default (FIN after the data, in the
// background). The error is ignored: a side already closed needs nothing.
func setLinger(c HalfCloser, sec int) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(sec)
	}
}

// copyHalf copies src to dst with a pooled buffer and closes dst's write half
// at src's EOF. The wrappers hide ReaderFrom/WriterTo so that io.CopyBuffer
// uses the pooled buffer instead of allocating its own per connection.
func copyHalf(e *spliceEnds, dst, src HalfCloser) (int64, error) {
	bp := splicePool.Get().(*[]byte)
	defer splicePool.Put(bp)
	n, err := io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, *bp)
	if err != nil {
		return n, err
	}
	if err := e.closeWrite(dst); err != nil && !errors.Is(err, net.ErrClosed) {
		return n, err
	}
	return n, nil
}
