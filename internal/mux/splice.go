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
func Splice(a, b HalfCloser) (aToB, bToA int64, err error) {
	type result struct {
		n   int64
		err error
	}
	var once sync.Once
	closeBoth := func(reset bool) {
		once.Do(func() {
			if reset {
				resetTCP(a)
				resetTCP(b)
			}
			a.Close()
			b.Close()
		})
	}
	done := make(chan result, 1)
	go func() {
		n, err := copyHalf(b, a)
		if err != nil {
			closeBoth(true)
		}
		done <- result{n, err}
	}()
	bToA, errBA := copyHalf(a, b)
	if errBA != nil {
		closeBoth(true)
	}
	r := <-done
	closeBoth(false)
	return r.n, bToA, errors.Join(r.err, errBA)
}

// resetTCP makes Close send RST instead of FIN, so that a client whose
// connection was cut (dead session, reset on the far side) sees an error,
// never a clean end of data it could take for a complete reply.
func resetTCP(c HalfCloser) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
}

// copyHalf copies src to dst with a pooled buffer and closes dst's write half
// at src's EOF. The wrappers hide ReaderFrom/WriterTo so that io.CopyBuffer
// uses the pooled buffer instead of allocating its own per connection.
func copyHalf(dst, src HalfCloser) (int64, error) {
	bp := splicePool.Get().(*[]byte)
	defer splicePool.Put(bp)
	n, err := io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, *bp)
	if err != nil {
		return n, err
	}
	if err := dst.CloseWrite(); err != nil && !errors.Is(err, net.ErrClosed) {
		return n, err
	}
	return n, nil
}
