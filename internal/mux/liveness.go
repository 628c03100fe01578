package mux

import (
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
)

// Liveness on the SSH transport is judged by what arrives, not by pings
// alone. yamux's own keepalive queues its ping behind every frame already
// handed to the SSH channel, so a slow but healthy uplink busy with a bulk
// transfer (a playnode on a cellular link) misses the ping deadline and gets
// its session killed. Instead:
//
//   - any byte from the peer proves it alive;
//   - after Keepalive of quiet, an SSH keepalive request (a transport
//     message, outside the channel's flow control) asks a live peer to
//     answer;
//   - after 2*Keepalive with no byte from the peer, the link is dead, unless
//     the kernel still receives TCP acknowledgements for what we send: then
//     we are the sending end of a slow link whose peer has nothing to say
//     yet and whose answer waits behind our data;
//   - a keepalive request unanswered for 12*Keepalive means the peer's
//     process no longer answers, even if its kernel still acknowledges.
//
// Checks run livenessTicks times per interval, so a dead link is declared
// within 2.25*Keepalive.

const (
	livenessTicks     = 4
	unansweredFactor  = 12
	deadQuietFactor   = 2
	requestQuietRatio = 1
)

// Liveness readings are stored as nanoseconds since the activityConn's
// base, a time.Now taken when it was made, measured with time.Time's
// monotonic reading (Sub uses it when both times have one), so that a step
// of the wall clock (NTP, an operator, a board without RTC booting at 1970)
// never makes a healthy link look silent or a dead one alive. The base is
// per connection, not per process, so that a connection made inside a
// testing/synctest bubble measures the bubble's clock.

// activityConn records when bytes last arrived from the peer.
type activityConn struct {
	net.Conn
	raw      syscall.Conn // the TCP socket under Conn, for TCP_INFO; nil if none
	base     time.Time    // readings are nanoseconds since base (mono)
	lastRead atomic.Int64 // mono
}

// newActivityConn wraps c; raw is the connection the caller handed in
// (c may wrap it), used to ask the kernel about acknowledgements.
func newActivityConn(c, raw net.Conn) *activityConn {
	a := &activityConn{Conn: c}
	if sc, ok := raw.(syscall.Conn); ok {
		a.raw = sc
	}
	a.base = time.Now()
	a.lastRead.Store(a.mono(time.Now()))
	return a
}

func (c *activityConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		// time.Since reads only the monotonic clock: one clock reading
		// per read of the transport instead of two.
		c.lastRead.Store(max(int64(time.Since(c.base)), 1))
	}
	return n, err
}

// quietFor is how long nothing has arrived.
func (c *activityConn) quietFor(now time.Time) time.Duration {
	return time.Duration(c.mono(now) - c.lastRead.Load())
}

// mono is t (a reading of time.Now) as nanoseconds since c.base on the
// monotonic clock; never 0, so that 0 can mean "none".
func (c *activityConn) mono(t time.Time) int64 { return max(int64(t.Sub(c.base)), 1) }

// acksFlowing reports whether the kernel received a TCP acknowledgement
// within d; false when it cannot tell.
func (c *activityConn) acksFlowing(d time.Duration) bool {
	if c.raw == nil {
		return false
	}
	age, ok := lastAckAge(c.raw)
	return ok && age < d
}

// watchLiveness checks the link livenessTicks times per keepalive until
// done is closed, and calls dead once the link is judged dead (see above).
// The checks run on a timer, not in a goroutine of their own: one goroutine
// (and its stack) less per idle session on each end. At most one keepalive
// request is in flight; its goroutine, counted in wg (the session's), ends
// when the reply arrives or the connection closes. The first check after
// done is closed calls ended and stops. The returned stop ends the checks; a
// check already running finishes, but starts no request goroutine after
// stop returned, so the session may Wait on wg then.
func watchLiveness(conn ssh.Conn, ac *activityConn, keepalive time.Duration, done <-chan struct{}, dead, ended func(), wg *sync.WaitGroup) (stop func()) {
	w := &livenessWatch{conn: conn, ac: ac, keepalive: keepalive, done: done, dead: dead, ended: ended, wg: wg}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.due = time.Now().Add(keepalive / livenessTicks)
	w.timer = time.AfterFunc(keepalive/livenessTicks, w.check)
	return func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.stopped = true
		w.timer.Stop()
	}
}

// livenessWatch is the state of one watchLiveness.
type livenessWatch struct {
	conn      ssh.Conn
	ac        *activityConn
	keepalive time.Duration
	done      <-chan struct{}
	dead      func()
	ended     func()
	wg        *sync.WaitGroup // owns the keepalive request goroutines
	sentAt    atomic.Int64    // ac.mono of the request in flight, 0 if none

	mu      sync.Mutex
	timer   *time.Timer
	due     time.Time // when the pending check is due
	stopped bool
}

// check is one tick; it schedules the next unless the session is over. It
// judges the link as of when the tick was due, as a Ticker's time would:
// on a starved CPU the check runs late, and so does the reader that would
// have recorded the bytes that did arrive; counting our own lateness as the
// peer's silence kills healthy sessions on a busy machine.
func (w *livenessWatch) check() {
	select {
	case <-w.done:
		w.ended()
		return
	default:
	}
	w.mu.Lock()
	now := w.due
	w.mu.Unlock()
	quiet := w.ac.quietFor(now)
	if s := w.sentAt.Load(); s != 0 && time.Duration(w.ac.mono(now)-s) >= unansweredFactor*w.keepalive {
		w.dead()
		return
	}
	if quiet >= deadQuietFactor*w.keepalive && !w.ac.acksFlowing(deadQuietFactor*w.keepalive) {
		w.dead()
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return
	}
	if quiet >= requestQuietRatio*w.keepalive && w.sentAt.CompareAndSwap(0, w.ac.mono(now)) {
		w.wg.Go(func() {
			w.conn.SendRequest(requestKeepalive, true, nil)
			w.sentAt.Store(0)
		})
	}
	w.due = time.Now().Add(w.keepalive / livenessTicks)
	w.timer.Reset(w.keepalive / livenessTicks)
}
