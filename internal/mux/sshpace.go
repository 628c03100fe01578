package mux

import (
	"math"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Pacing of the SSH transport (doc.go, "Responsive under load"). Every
// byte of every lane goes out through one TCP socket, written by
// x/crypto/ssh under one mutex, one SSH packet at a time. A packet, once
// started, holds that mutex until the kernel took all of it, and what the
// kernel took waits its turn on the wire. So the time a small stream's
// frame waits behind a bulk stream is about (one bulk packet + the
// kernel's unsent bytes) / link rate. The pacer keeps both to about
// queueBudget at the rate the socket actually drains: large packets and a
// deep kernel buffer where the link is fast (loopback, LAN: no cost in
// throughput), small ones on a 20 Mbit/s uplink.
const (
	// queueBudget is how long one packet plus the kernel's unsent bytes
	// may take to drain.
	queueBudget = 2 * time.Millisecond
	// minPacket and maxPacket bound the payload of one SSH packet (a
	// frameWriter write); maxPacket is what x/crypto/ssh allows.
	minPacket = 4 << 10
	maxPacket = sshMaxPayload
	// minLowat and maxLowat bound TCP_NOTSENT_LOWAT. The socket starts at
	// maxLowat: a fast link hardly waits for it, and a slow one makes the
	// writer wait, which is how the pacer measures the rate. Past
	// maxLowat (2 ms at 64 MB/s) the pacer leaves the limit to the kernel.
	minLowat = 4 << 10
	maxLowat = 128 << 10
	// paceWindow is how often the rate is re-estimated.
	paceWindow = 100 * time.Millisecond
)

// pacer estimates how fast the transport socket drains while the tunnel
// keeps it busy, and derives from it the SSH packet size and the socket's
// TCP_NOTSENT_LOWAT. Writes are timed (on a TCP socket, only their waits
// for the socket to take the bytes; see socketWriter): when they spent
// more than a tenth of a window blocked, the socket, not the tunnel, set
// the pace, and bytes / time blocked is the link's rate. Otherwise the
// link had room and the sizes go back to their maximum. Past 64 MB/s
// either way, the unsent limit is the kernel's own.
type pacer struct {
	packet atomic.Int32 // payload bytes per SSH packet, read by every lane
	// rate is the drain rate measured over the last window, in bytes per
	// second as float64 bits, when the socket set the pace; 0 on a fast
	// link. The gate's bound on the bytes in flight derives from it.
	rate atomic.Uint64
	// deliveries are the socket's recent delivery rates, for the gate;
	// its lock is never held together with mu.
	deliveries deliveryFilter

	// mu guards the window below: held by the socket's writer (wrote) and
	// briefly by a lane's gate adding its wait (hold); never across a
	// socket write (wrote sets TCP_NOTSENT_LOWAT under it, a setsockopt).
	mu      sync.Mutex
	start   time.Time
	bytes   int
	blocked time.Duration
	lowat   int
	setLow  func(int) // sets TCP_NOTSENT_LOWAT; nil when the conn is not TCP
	queue   func() (queued int, rate float64, minRTT time.Duration, ok bool)
}

func newPacer(setLow func(int), queue func() (int, float64, time.Duration, bool)) *pacer {
	p := &pacer{start: time.Now(), lowat: maxLowat, setLow: setLow, queue: queue}
	p.packet.Store(maxPacket)
	if setLow != nil {
		setLow(maxLowat)
	}
	return p
}

// packetSize is the payload the next SSH packet of any lane should carry.
func (p *pacer) packetSize() int {
	if p == nil {
		return maxPacket
	}
	return int(p.packet.Load())
}

// wrote records one write of n bytes to the socket that took d.
func (p *pacer) wrote(n int, d time.Duration, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.bytes += n
	p.blocked += d
	window := now.Sub(p.start)
	if window < paceWindow {
		return
	}
	// The socket's drain rate: bytes over time blocked when it set the
	// pace, else at least what the tunnel wrote in the window.
	paced := p.blocked > window/10 && p.blocked > 0
	drain := float64(p.bytes) / window.Seconds()
	if paced {
		drain = float64(p.bytes) / p.blocked.Seconds()
	}
	budget := int(drain * queueBudget.Seconds())
	packet, lowat, rate := maxPacket, maxLowat, 0.0
	switch {
	case budget > maxLowat:
		// A fast link (over 64 MB/s): the kernel's own limit (0 restores
		// the sysctl's, unlimited by default). 128 KiB unsent there only
		// woke the writers more often: 8 streams on loopback lost 8-12 %
		// of their throughput to it.
		lowat = 0
	case paced:
		rate = drain
		packet = min(max(budget, minPacket), maxPacket)
		lowat = max(budget, minLowat)
	}
	p.rate.Store(math.Float64bits(rate))
	p.packet.Store(int32(packet))
	if lowat != p.lowat && p.setLow != nil {
		p.setLow(lowat)
	}
	p.lowat = lowat
	p.start, p.bytes, p.blocked = now, 0, 0
}

// pacedSocket is a transport connection that is not a *net.TCPConn but
// offers what the pacer asks of a TCP socket: the tests' slow link.
type pacedSocket interface {
	setNotSentLowat(n int)
	queueInfo() (queued int, rate float64, minRTT time.Duration, ok bool)
}

// pacedConn is the transport connection with its writes timed for the
// pacer. x/crypto/ssh writes from one goroutine at a time (its transport
// mutex), so the timing is per write. On a TCP socket only the time a
// write waited for the socket to take its bytes counts (socketWriter);
// on another connection (the tests' slow link), the whole write's.
type pacedConn struct {
	net.Conn
	p     *pacer
	write func([]byte) (int, time.Duration, error) // nil: time whole writes
	base  time.Time                                // a write's time is base plus monotonic time since
}

// newPacedConn paces c, whose writes go to raw (c may wrap it).
func newPacedConn(c, raw net.Conn, p *pacer) *pacedConn {
	return &pacedConn{Conn: c, p: p, write: socketWriter(raw), base: time.Now()}
}

func (c *pacedConn) Write(b []byte) (int, error) {
	if c.write == nil {
		t0 := time.Now()
		n, err := c.Conn.Write(b)
		now := time.Now()
		c.p.wrote(n, now.Sub(t0), now)
		return n, err
	}
	n, waited, err := c.write(b)
	// One monotonic clock reading per write, none of the wall clock.
	c.p.wrote(n, waited, c.base.Add(time.Since(c.base)))
	return n, err
}

// Bounds of the wait in gate.
const (
	gateFloor    = 12 << 10 // bytes in flight always allowed: 8 full segments
	gateMinSleep = 100 * time.Microsecond
	// gateMaxSleep is at most the time the bytes the gate lets stay in
	// flight take to drain, so that the link never runs dry while a
	// writer sleeps on a rate that reads too low.
	gateMaxSleep = queueBudget
	// gateMaxWait bounds one write's wait: a socket that drains nothing
	// blocks the write itself after that.
	gateMaxWait = 500 * time.Millisecond
)

// hold is gate for a lane's frameWriter, before it hands a large packet
// to x/crypto/ssh: waiting there, not inside the transport's write (under
// its mutex), lets another lane's small frame go out meanwhile. The time
// held counts as blocked for the rate estimate, as a socket that does not
// take the bytes would.
func (p *pacer) hold(n int) {
	if p == nil || n < minPacket || p.queue == nil || p.packet.Load() >= maxPacket {
		return // a fast link: no clock read on the hot path
	}
	t0 := time.Now()
	p.gate(t0)
	if d := time.Since(t0); d > 0 {
		p.mu.Lock()
		p.blocked += d
		p.mu.Unlock()
	}
}

// gate holds a large write back, on a slow link only, while the socket
// already has more unacknowledged bytes than twice the path's
// bandwidth-delay product plus queueBudget, at the rate the pacer
// measured. The socket's congestion control would otherwise keep far more
// in flight than the link needs, all of it in the router's queue, and a
// small stream's frame, written after it, would wait it out. Small writes
// (a request, a window adjust) never wait here.
//
// The bound's rate is the larger of the pacer's own (bytes over time
// blocked, per window) and the median of TCP_INFO's recent delivery rates
// (deliveries), never one delivery rate alone: that is one ACK's sample,
// and on a 50 Mbit/s link it read 280 to 890 Mbit/s for a millisecond or
// two after the link had been idle for a moment (ACKs arriving together)
// and 11 Mbit/s at other moments. Bounded by one sample, one write let
// 100 KB into the router's queue at once (20 ms for every request behind
// it) and the next slept until the link ran dry. Bounded by the pacer's
// rate alone, a node whose loopback link looked slow for a window (its
// writes waited for the CPU, not the link) held its packets at the
// floor and its rate stayed as low as the gate let it be (8 streams:
// 0.6 Gbit/s in one round of eight). The delivery rate of this moment
// serves to wake the writer sooner when it reads higher.
func (p *pacer) gate(start time.Time) {
	for deadline := start.Add(gateMaxWait); ; {
		measured := math.Float64frombits(p.rate.Load())
		if measured <= 0 {
			return // a fast link since this write began
		}
		queued, delivery, minRTT, ok := p.queue()
		if !ok {
			return
		}
		rate := max(measured, p.deliveries.add(delivery, time.Now()))
		limit := max(gateFloor, int(rate*(2*minRTT.Seconds()+queueBudget.Seconds())))
		if queued <= limit {
			return
		}
		wait := time.Duration(float64(queued-limit) / max(rate, delivery) * float64(time.Second))
		wait = min(max(wait, gateMinSleep), gateMaxSleep)
		if time.Now().Add(wait).After(deadline) {
			return
		}
		time.Sleep(wait)
	}
}

// deliveryFilter keeps TCP_INFO delivery rates, at most one per
// deliverySpacing, and answers their median: a reading that lasts a
// millisecond or two (ACK compression after an idle moment) moves it
// only when it fills half the samples. Safe for the lanes' concurrent
// gates.
type deliveryFilter struct {
	mu      sync.Mutex
	samples [deliverySamples]float64
	n       int       // samples taken, up to len(samples)
	next    int       // index of the next sample to replace
	last    time.Time // when the last sample was taken
	sorted  [deliverySamples]float64
}

const (
	deliverySamples = 9
	deliverySpacing = time.Millisecond
)

// add records rate, unless the last sample is younger than
// deliverySpacing, and returns the median of the samples.
func (f *deliveryFilter) add(rate float64, now time.Time) float64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	if rate > 0 && (f.n == 0 || now.Sub(f.last) >= deliverySpacing) {
		f.samples[f.next] = rate
		f.next = (f.next + 1) % len(f.samples)
		f.n = min(f.n+1, len(f.samples))
		f.last = now
	}
	if f.n == 0 {
		return 0
	}
	s := f.sorted[:f.n]
	copy(s, f.samples[:f.n])
	slices.Sort(s)
	return s[f.n/2]
}
