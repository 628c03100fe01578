package mux_test

import (
	"net"
	"os"
	"sync"
	"time"
)

// memConn is one end of an in-memory, buffered connection whose every
// wait is on a channel, so that it works inside a testing/synctest bubble
// (net.Pipe is unbuffered: both SSH ends write their version line first
// and would wait on each other; loopback TCP is not durably blocking, so
// virtual time would not advance).
type memConn struct {
	in, out   chan []byte
	rest      []byte
	closed    chan struct{} // this end closed
	peerGone  chan struct{} // the other end closed
	closeOnce *sync.Once

	mu        sync.Mutex
	deadline  time.Time
	dlChanged chan struct{} // closed and replaced when the deadline changes
}

func memPipe() (*memConn, *memConn) {
	ab, ba := make(chan []byte, 4096), make(chan []byte, 4096)
	ca, cb := make(chan struct{}), make(chan struct{})
	a := &memConn{in: ba, out: ab, closed: ca, peerGone: cb, closeOnce: new(sync.Once), dlChanged: make(chan struct{})}
	b := &memConn{in: ab, out: ba, closed: cb, peerGone: ca, closeOnce: new(sync.Once), dlChanged: make(chan struct{})}
	return a, b
}

func (c *memConn) Read(p []byte) (int, error) {
	for len(c.rest) == 0 {
		c.mu.Lock()
		dl, changed := c.deadline, c.dlChanged
		c.mu.Unlock()
		var timeout <-chan time.Time
		var t *time.Timer
		if !dl.IsZero() {
			t = time.NewTimer(time.Until(dl))
			timeout = t.C
		}
		var err error
		select {
		case b := <-c.in:
			c.rest = b
		case <-c.closed:
			err = net.ErrClosed
		case <-c.peerGone:
			select {
			case b := <-c.in:
				c.rest = b
			default:
				err = os.ErrClosed
			}
		case <-timeout:
			err = os.ErrDeadlineExceeded
		case <-changed:
		}
		if t != nil {
			t.Stop()
		}
		if err != nil {
			return 0, err
		}
	}
	n := copy(p, c.rest)
	c.rest = c.rest[n:]
	return n, nil
}

func (c *memConn) Write(p []byte) (int, error) {
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	case <-c.peerGone:
		return 0, os.ErrClosed
	case c.out <- append([]byte(nil), p...):
		return len(p), nil
	}
}

func (c *memConn) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return nil
}

func (c *memConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	close(c.dlChanged)
	c.dlChanged = make(chan struct{})
	c.mu.Unlock()
	return nil
}
func (c *memConn) SetReadDeadline(t time.Time) error { return c.SetDeadline(t) }
func (c *memConn) SetWriteDeadline(time.Time) error  { return nil }
func (c *memConn) LocalAddr() net.Addr               { return memAddr{} }
func (c *memConn) RemoteAddr() net.Addr              { return memAddr{} }

type memAddr struct{}

func (memAddr) Network() string { return "mem" }
func (memAddr) String() string  { return "mem" }
