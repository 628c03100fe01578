package main

import (
	"net"
	"sync"
	"time"
)

// udpDelayProxy forwards UDP datagrams between its clients and a target,
// delivering each datagram delay after it arrived, in each direction: the
// QUIC counterpart of delayProxy. Its queues are unbounded (a slice per
// direction), so it adds latency and never drops or limits; what it cannot
// prevent is the kernel dropping datagrams on a full socket buffer.
type udpDelayProxy struct {
	pc     *net.UDPConn
	target *net.UDPAddr
	delay  time.Duration

	mu      sync.Mutex
	clients map[string]*net.UDPConn // client address -> its socket to the target
	closed  bool
	wg      sync.WaitGroup
}

const udpSockBuf = 8 << 20

func startUDPDelayProxy(target string, delay time.Duration) (*udpDelayProxy, error) {
	taddr, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		return nil, err
	}
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	pc.SetReadBuffer(udpSockBuf)
	pc.SetWriteBuffer(udpSockBuf)
	p := &udpDelayProxy{pc: pc, target: taddr, delay: delay, clients: map[string]*net.UDPConn{}}
	toTarget := newDelayQueue()
	p.wg.Add(2)
	go func() {
		defer p.wg.Done()
		p.serve(toTarget)
	}()
	go func() {
		defer p.wg.Done()
		toTarget.deliver(func(d datagram) { d.up.Write(d.data) })
	}()
	return p, nil
}

func (p *udpDelayProxy) Addr() net.Addr { return p.pc.LocalAddr() }

// Close closes every socket and waits for the proxy's goroutines.
func (p *udpDelayProxy) Close() error {
	p.mu.Lock()
	p.closed = true
	err := p.pc.Close()
	for _, up := range p.clients {
		up.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	return err
}

// serve reads datagrams from clients and queues them for the target, each
// client with its own socket to the target (so that replies find it).
func (p *udpDelayProxy) serve(toTarget *delayQueue) {
	defer toTarget.close()
	buf := make([]byte, 64<<10)
	for {
		n, from, err := p.pc.ReadFromUDP(buf)
		if err != nil {
			return
		}
		up := p.upstream(from)
		if up == nil {
			continue
		}
		toTarget.push(datagram{at: time.Now().Add(p.delay), data: append([]byte(nil), buf[:n]...), up: up})
	}
}

// upstream returns the client's socket to the target, opening it (and its
// reply path) on the client's first datagram.
func (p *udpDelayProxy) upstream(from *net.UDPAddr) *net.UDPConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	if up, ok := p.clients[from.String()]; ok || p.closed {
		return up
	}
	up, err := net.DialUDP("udp", nil, p.target)
	if err != nil {
		return nil
	}
	up.SetReadBuffer(udpSockBuf)
	up.SetWriteBuffer(udpSockBuf)
	p.clients[from.String()] = up
	back := newDelayQueue()
	p.wg.Add(2)
	go func() {
		defer p.wg.Done()
		defer back.close()
		buf := make([]byte, 64<<10)
		for {
			n, err := up.Read(buf)
			if err != nil {
				return
			}
			back.push(datagram{at: time.Now().Add(p.delay), data: append([]byte(nil), buf[:n]...)})
		}
	}()
	go func() {
		defer p.wg.Done()
		back.deliver(func(d datagram) { p.pc.WriteToUDP(d.data, from) })
	}()
	return up
}

type datagram struct {
	at   time.Time
	data []byte
	up   *net.UDPConn // toward the target: the client's socket
}

// delayQueue is an unbounded FIFO of datagrams in delivery order (all have
// the same delay, so arrival order is delivery order).
type delayQueue struct {
	mu     sync.Mutex
	q      []datagram
	closed bool
	wake   chan struct{}
}

func newDelayQueue() *delayQueue { return &delayQueue{wake: make(chan struct{}, 1)} }

func (d *delayQueue) push(g datagram) {
	d.mu.Lock()
	d.q = append(d.q, g)
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

func (d *delayQueue) close() {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// deliver sends each datagram at its time until the queue is closed (what
// is still queued then is dropped).
func (d *delayQueue) deliver(send func(datagram)) {
	for {
		d.mu.Lock()
		if d.closed {
			d.mu.Unlock()
			return
		}
		batch := d.q
		d.q = nil
		d.mu.Unlock()
		if len(batch) == 0 {
			<-d.wake
			continue
		}
		for _, g := range batch {
			if w := time.Until(g.at); w > 0 {
				time.Sleep(w)
			}
			send(g)
		}
	}
}
