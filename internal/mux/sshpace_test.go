package mux

import (
	"testing"
	"testing/synctest"
	"time"
)

// drainingLink is the socket the gate looks at: q0 bytes queued at start,
// drained at rate bytes per second, reporting the delivery rate the test
// sets, whatever the link really does.
type drainingLink struct {
	start    time.Time
	q0       int
	rate     float64
	delivery float64
	// spike, when set: delivery is read only until start+spike, rate
	// after it (a momentary reading).
	spike time.Duration
}

func (l *drainingLink) queued() int {
	return max(0, l.q0-int(l.rate*time.Since(l.start).Seconds()))
}

func (l *drainingLink) info() (int, float64, time.Duration, bool) {
	if l.spike > 0 && time.Since(l.start) >= l.spike {
		return l.queued(), l.rate, 0, true
	}
	return l.queued(), l.delivery, 0, true
}

// history gives p's delivery filter the readings of a link that has been
// delivering rate for a while.
func history(p *pacer, rate float64) {
	now := time.Now()
	for i := deliverySamples; i > 0; i-- {
		p.deliveries.add(rate, now.Add(-time.Duration(i)*deliverySpacing))
	}
}

// pacedAt is a pacer that measured a window in which the socket drained
// rate bytes per second, i.e. a slow link's settings.
func pacedAt(t *testing.T, rate float64, queue func() (int, float64, time.Duration, bool)) *pacer {
	t.Helper()
	p := newPacer(nil, queue)
	p.wrote(int(rate*paceWindow.Seconds()), paceWindow, time.Now().Add(paceWindow))
	if p.packetSize() >= maxPacket {
		t.Fatalf("pacer at %.0f B/s kept the fast link's packet size", rate)
	}
	return p
}

// TestGateIgnoresDeliveryRateSpike: TCP_INFO's delivery rate is one ACK's
// sample; for a moment after a pause it reads many times the link's rate.
// The gate's bound on the bytes in flight must not follow it, or one large
// write lets a burst into the router's queue that every request behind it
// waits out.
func TestGateIgnoresDeliveryRateSpike(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const rate = 6e6 // 48 Mbit/s
		l := &drainingLink{start: time.Now(), q0: 60 << 10, rate: rate, delivery: 100e6, spike: 2 * time.Millisecond}
		p := pacedAt(t, rate, l.info)
		history(p, rate)
		p.hold(p.packetSize())
		limit := max(gateFloor, int(rate*queueBudget.Seconds()))
		if got := l.queued(); got > limit {
			t.Errorf("gate let a packet through with %d bytes in flight, want at most %d (2 ms at the measured rate)", got, limit)
		}
	})
}

// TestGateKeepsLinkBusy: a delivery rate that reads far below the link's
// must not make the gate sleep until the link has nothing left to send.
func TestGateKeepsLinkBusy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const rate = 6e6
		l := &drainingLink{start: time.Now(), q0: 50 << 10, rate: rate, delivery: 1e6}
		p := pacedAt(t, rate, l.info)
		p.hold(p.packetSize())
		if l.queued() == 0 {
			t.Errorf("gate released the write after the link ran dry (%v after the link had %d bytes queued)", time.Since(l.start), l.q0)
		}
	})
}

// TestGateTrustsSteadyDeliveryRate: a pacer that measured a low rate (its
// writes waited for the CPU, not for the link) on a link whose delivery
// rate reads 1 GB/s steadily must not hold writes at a bound derived from
// its own figure: held there, its rate stays as low as the gate lets it be.
func TestGateTrustsSteadyDeliveryRate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := &drainingLink{start: time.Now(), q0: 60 << 10, rate: 1e9, delivery: 1e9}
		p := pacedAt(t, 2e6, l.info)
		history(p, 1e9)
		t0 := time.Now()
		p.hold(p.packetSize())
		if d := time.Since(t0); d > 0 {
			t.Errorf("gate held a write %v with %d bytes in flight on a link delivering 1 GB/s", d, l.q0)
		}
	})
}

// TestGateBounded: a socket that drains nothing holds a write at the gate
// for at most gateMaxWait; the socket's own write blocks after that.
func TestGateBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := &drainingLink{start: time.Now(), q0: 1 << 20, delivery: 6e6}
		p := pacedAt(t, 6e6, l.info)
		t0 := time.Now()
		p.hold(p.packetSize())
		if d := time.Since(t0); d > gateMaxWait {
			t.Errorf("gate held a write %v on a stalled socket, want at most %v", d, gateMaxWait)
		}
	})
}

// TestPacerLowat: TCP_NOTSENT_LOWAT follows the link: 2 ms of the rate
// where the socket sets the pace, the kernel's own limit (0) past
// maxLowat, where a small one only wakes the writers more often, and
// maxLowat on a link with room at a lower rate, so that a bulk transfer
// starting on a slow link makes the writer wait and the pacer notice.
func TestPacerLowat(t *testing.T) {
	var set []int
	p := newPacer(func(n int) { set = append(set, n) }, nil)
	now := time.Now()
	window := func(bytes int, blocked time.Duration) int {
		now = now.Add(paceWindow)
		p.wrote(bytes, blocked, now)
		return set[len(set)-1]
	}
	if got := set[0]; got != maxLowat {
		t.Fatalf("new pacer: TCP_NOTSENT_LOWAT %d, want %d", got, maxLowat)
	}
	if got := window(100<<20, 0); got != 0 { // 1 GB/s, never blocked
		t.Errorf("1 GB/s with room: TCP_NOTSENT_LOWAT %d, want 0 (the kernel's)", got)
	}
	if got := window(200<<20, paceWindow/2); got != 0 { // 4 GB/s while blocked
		t.Errorf("4 GB/s, blocked half the time: TCP_NOTSENT_LOWAT %d, want 0 (the kernel's)", got)
	}
	if got := window(10<<10, 0); got != maxLowat { // idle
		t.Errorf("idle: TCP_NOTSENT_LOWAT %d, want %d", got, maxLowat)
	}
	if got, want := window(250_000, paceWindow), int(2.5e6*queueBudget.Seconds()); got != want { // 20 Mbit/s, paced
		t.Errorf("20 Mbit/s paced: TCP_NOTSENT_LOWAT %d, want %d (2 ms of the rate)", got, want)
	}
}
