// Package faultproxy is an in-process TCP proxy for tests that puts a bad
// network between a playnode and the relay: it can cut connections (a reset
// on both sides), blackhole them (bytes vanish, both ends stay open and
// half-dead), delay them (latency plus jitter), and cap their bandwidth,
// globally or per connection, and restore them. It listens on 127.0.0.1:0
// and needs no privileges.
//
// Through the proxy the node's and the relay's kernels talk to the proxy's
// kernel, which acknowledges what it receives even while blackholing: a
// liveness check that trusts TCP acknowledgements sees a blackhole as a
// link that still delivers, as it would behind any TCP-terminating
// middlebox.
package faultproxy

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"time"
)

// Faults is what the proxy does to the bytes of a connection, in both
// directions. The zero value forwards faithfully.
type Faults struct {
	// Blackhole drops every byte silently; the connections stay open.
	Blackhole bool
	// Reject resets new connections at once, as a relay that is down would
	// (global only).
	Reject bool
	// Latency delays each chunk by Latency plus a uniform random amount in
	// [0, Jitter); order is kept.
	Latency, Jitter time.Duration
	// Rate caps each direction at Rate bytes per second; 0 is unlimited.
	// Bytes beyond it queue (up to queueChunks reads), then the sender is
	// held back by TCP flow control.
	Rate int
}

const (
	chunkSize   = 16 << 10
	queueChunks = 64
)

// Proxy forwards connections from Addr to a target address.
type Proxy struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu       sync.Mutex
	global   Faults
	source   net.IP // local address of new connections to the target; nil: any
	conns    map[*Conn]struct{}
	accepted int
	dropped  int64
	closed   bool
}

// New starts a proxy on 127.0.0.1:0 to target.
func New(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	p := &Proxy{ln: ln, target: target, conns: map[*Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the address to dial instead of the target.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Set applies f to every connection without its own faults, now and later.
func (p *Proxy) Set(f Faults) {
	p.mu.Lock()
	p.global = f
	conns := p.connList()
	p.mu.Unlock()
	for _, c := range conns {
		c.wake()
	}
}

// SetSource makes new connections to the target come from ip (on
// loopback, any 127.x.y.z), as a playnode that moved to another network
// would; nil lets the kernel choose. Open connections keep theirs.
func (p *Proxy) SetSource(ip net.IP) {
	p.mu.Lock()
	p.source = ip
	p.mu.Unlock()
}

// Restore forwards faithfully again: global faults and every connection's
// own are cleared. Bytes dropped by a blackhole stay lost.
func (p *Proxy) Restore() {
	p.mu.Lock()
	p.global = Faults{}
	conns := p.connList()
	p.mu.Unlock()
	for _, c := range conns {
		c.Restore()
	}
}

// Cut resets every open connection on both sides and returns how many it
// cut. New connections are still accepted.
func (p *Proxy) Cut() int {
	conns := p.Conns()
	for _, c := range conns {
		c.Cut()
	}
	return len(conns)
}

// Conns lists the connections open now, oldest first.
func (p *Proxy) Conns() []*Conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.connList()
}

func (p *Proxy) connList() []*Conn {
	out := make([]*Conn, 0, len(p.conns))
	for c := range p.conns {
		out = append(out, c)
	}
	// Oldest first, so that tests can tell a reconnection from the original.
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j].id < out[j-1].id; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

// Accepted is how many connections the proxy has accepted so far.
func (p *Proxy) Accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted
}

// Dropped is how many bytes blackholes have dropped so far.
func (p *Proxy) Dropped() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.dropped
}

func (p *Proxy) drop(n int) {
	p.mu.Lock()
	p.dropped += int64(n)
	p.mu.Unlock()
}

// Close stops accepting, resets every connection and waits for every
// goroutine of the proxy. It is idempotent.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	err := p.ln.Close()
	p.Cut()
	p.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		reject, closed := p.global.Reject, p.closed
		p.mu.Unlock()
		if reject || closed {
			reset(c)
			continue
		}
		p.wg.Add(1)
		go p.serve(c.(*net.TCPConn))
	}
}

// serve dials the target for one accepted connection and forwards both
// ways until either side ends or the connection is cut.
func (p *Proxy) serve(client *net.TCPConn) {
	defer p.wg.Done()
	p.mu.Lock()
	d := net.Dialer{Timeout: 10 * time.Second}
	if p.source != nil {
		d.LocalAddr = &net.TCPAddr{IP: p.source}
	}
	p.mu.Unlock()
	up, err := d.Dial("tcp", p.target)
	if err != nil {
		reset(client)
		return
	}
	c := &Conn{p: p, client: client, server: up.(*net.TCPConn), done: make(chan struct{}), changed: make(chan struct{})}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		reset(client)
		reset(up)
		return
	}
	p.accepted++
	c.id = p.accepted
	p.conns[c] = struct{}{}
	p.mu.Unlock()

	var wg sync.WaitGroup
	wg.Go(func() { c.pipe(c.server, c.client) })
	wg.Go(func() { c.pipe(c.client, c.server) })
	wg.Wait()
	c.cutOnce.Do(func() { // both directions ended cleanly, or Cut ran
		close(c.done)
		c.client.Close()
		c.server.Close()
	})
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

// Conn is one proxied connection: client is the side that dialled the
// proxy, server the target.
type Conn struct {
	p              *Proxy
	id             int
	client, server *net.TCPConn

	mu      sync.Mutex
	own     *Faults       // nil: the proxy's global faults apply
	changed chan struct{} // closed and replaced when faults change
	cutOnce sync.Once
	done    chan struct{} // closed by Cut
}

// ID numbers connections in the order the proxy accepted them, from 1.
func (c *Conn) ID() int { return c.id }

// Set gives this connection its own faults, overriding the global ones.
func (c *Conn) Set(f Faults) {
	c.mu.Lock()
	c.own = &f
	c.mu.Unlock()
	c.wake()
}

// Restore makes this connection follow the global faults again.
func (c *Conn) Restore() {
	c.mu.Lock()
	c.own = nil
	c.mu.Unlock()
	c.wake()
}

// Cut resets the connection on both sides: each peer's next read or write
// fails with ECONNRESET (or sees its connection closed).
func (c *Conn) Cut() {
	c.cutOnce.Do(func() {
		close(c.done)
		reset(c.client)
		reset(c.server)
	})
}

func (c *Conn) faults() (Faults, <-chan struct{}) {
	c.mu.Lock()
	own, changed := c.own, c.changed
	c.mu.Unlock()
	if own != nil {
		return *own, changed
	}
	c.p.mu.Lock()
	defer c.p.mu.Unlock()
	return c.p.global, changed
}

// wake lets waiting writers see new faults at once (a restored link stops
// waiting out a long latency).
func (c *Conn) wake() {
	c.mu.Lock()
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
}

type chunk struct {
	b  []byte
	at time.Time // when it arrived at the proxy
}

// pipe copies src to dst through a queue: a reader that stamps chunks and
// a writer that delays and paces them. A clean EOF is passed on as a
// half-close once the queue is drained; an error cuts the connection.
func (c *Conn) pipe(dst, src *net.TCPConn) {
	q := make(chan chunk, queueChunks)
	readErr := make(chan error, 1)
	go func() {
		defer close(q)
		for {
			b := make([]byte, chunkSize)
			n, err := src.Read(b)
			if n > 0 {
				if f, _ := c.faults(); f.Blackhole {
					c.p.drop(n)
				} else {
					select {
					case q <- chunk{b[:n], time.Now()}:
					case <-c.done:
						readErr <- net.ErrClosed
						return
					}
				}
			}
			if err != nil {
				readErr <- err
				return
			}
		}
	}()
	var due time.Time // keeps delayed chunks in order
	for ch := range q {
		if !c.deliver(dst, ch, &due) {
			c.Cut()
			for range q { // let the reader finish
			}
			return
		}
	}
	if err := <-readErr; err != nil && !isEOF(err) {
		c.Cut()
		return
	}
	dst.CloseWrite()
}

// deliver writes one chunk after its delay, at the rate cap; it reports
// false when the connection was cut or the write failed.
func (c *Conn) deliver(dst *net.TCPConn, ch chunk, due *time.Time) bool {
	for {
		f, changed := c.faults()
		if f.Blackhole {
			c.p.drop(len(ch.b))
			return true
		}
		at := ch.at.Add(f.Latency)
		if f.Jitter > 0 {
			at = at.Add(rand.N(f.Jitter))
		}
		at = later(at, *due)
		if d := time.Until(at); d > 0 {
			if !c.wait(d, changed) {
				continue // faults changed: recompute
			}
			select {
			case <-c.done:
				return false
			default:
			}
		}
		*due = at
		break
	}
	b := ch.b
	for len(b) > 0 {
		f, changed := c.faults()
		n := len(b)
		if f.Rate > 0 {
			// Write at most 10 ms worth at a time, then wait for it.
			n = min(n, max(f.Rate/100, 1))
		}
		if _, err := dst.Write(b[:n]); err != nil {
			return false
		}
		b = b[n:]
		if f.Rate > 0 {
			c.wait(time.Duration(n)*time.Second/time.Duration(f.Rate), changed)
		}
		select {
		case <-c.done:
			return false
		default:
		}
	}
	return true
}

// wait waits d and reports true, or reports false as soon as the faults
// change or the connection is cut.
func (c *Conn) wait(d time.Duration, changed <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-changed:
		return false
	case <-c.done:
		return true
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func isEOF(err error) bool { return errors.Is(err, io.EOF) }
