package main

import (
	"net"
	"sync"
	"time"
)

// delayProxy forwards TCP connections to a target, holding every byte for a
// fixed delay in each direction: a user-space long fat link. Its queues are
// large (queueChunks reads per direction), so it adds latency without
// limiting the window: the window limits of the tunnel above it show.
type delayProxy struct {
	ln     net.Listener
	target string
	delay  time.Duration

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

const (
	queueChunks = 16384
	chunkSize   = 64 << 10
)

type chunk struct {
	at   time.Time
	data []byte
}

func startDelayProxy(target string, delay time.Duration) (*delayProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &delayProxy{ln: ln, target: target, delay: delay, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.serve()
	}()
	return p, nil
}

func (p *delayProxy) Addr() net.Addr { return p.ln.Addr() }

// Close stops accepting, cuts every proxied connection and waits for the
// proxy's goroutines.
func (p *delayProxy) Close() error {
	err := p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	return err
}

func (p *delayProxy) track(c net.Conn) {
	p.mu.Lock()
	p.conns[c] = struct{}{}
	p.mu.Unlock()
}

func (p *delayProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.DialTimeout("tcp", p.target, 5*time.Second)
		if err != nil {
			c.Close()
			continue
		}
		p.track(c)
		p.track(up)
		var both sync.WaitGroup
		both.Add(2)
		p.wg.Add(5) // two pipes, their two readers, the closer
		go p.pipe(c.(*net.TCPConn), up.(*net.TCPConn), &both)
		go p.pipe(up.(*net.TCPConn), c.(*net.TCPConn), &both)
		go func() {
			defer p.wg.Done()
			both.Wait()
			c.Close()
			up.Close()
		}()
	}
}

// pipe copies src to dst, each read delivered delay after it was read, and
// half-closes dst after src's EOF has been delivered.
func (p *delayProxy) pipe(src, dst *net.TCPConn, both *sync.WaitGroup) {
	defer p.wg.Done()
	q := make(chan chunk, queueChunks)
	go func() {
		defer p.wg.Done()
		defer close(q)
		buf := make([]byte, chunkSize)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				q <- chunk{at: time.Now().Add(p.delay), data: append([]byte(nil), buf[:n]...)}
			}
			if err != nil {
				return
			}
		}
	}()
	failed := false
	for c := range q {
		if failed {
			continue
		}
		if d := time.Until(c.at); d > 0 {
			time.Sleep(d)
		}
		if _, err := dst.Write(c.data); err != nil {
			failed = true
			src.Close()
		}
	}
	if !failed {
		dst.CloseWrite()
	}
	both.Done()
}
