package mux

import (
	"context"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
)

// A relay that restarts (kill -9, crash, upgrade) on the same address has
// lost its connections' state, but keeps its stateless reset key (derived
// from the host key, see listenQUIC): it answers a packet for an unknown
// connection with a stateless reset, and the node reconnects at once.
// quic-go, however, sends a reset only in answer to a packet longer than
// 42 bytes (protocol.MinStatelessResetSize, so that a reset can never be
// answered by a reset), and an idle node sends nothing longer once path MTU
// discovery is over (its padded probes go out at keepalive times, over the
// first minute or so): its keepalive PINGs and their retransmissions are
// 25-32 bytes. Left alone, an idle node would notice a restarted relay
// only at its idle timeout (2*Keepalive after its last PING, 20-30 s by
// default: measured 20.5-29.3 s from restart to online again, with
// paradigm-relay killed and restarted a minute after the node connected;
// 2.8-9.9 s with the probes).
//
// So a node session sends a resetProbe, a DATAGRAM frame (RFC 9221) of
// probeSize bytes, whenever the relay may be gone: when nothing has arrived
// for a keepalive interval (where quic-go sends its PING), and again at each
// check while what the node sends goes unanswered. Checks run
// livenessTicks times per keepalive. An idle node thus notices a restarted
// relay within 1.25*Keepalive of its last packet from the old one, or
// Keepalive/4 after the new one is up, whichever is later. On a live idle
// link quic-go's PING and its acknowledgement come first, so no probe goes
// out: measured over a minute of an idle session, the node sent 6 packets
// (171 bytes) with the probes as without. The relay drains and discards
// the probes (drainDatagrams).

// probeSize is the probe's payload: with the frame and packet overhead it
// makes a packet well over quic-go's 42-byte reset threshold.
const probeSize = 32

var probePayload [probeSize]byte

// resetProbe paces the probes of one node session. Lock order: mu only.
type resetProbe struct {
	conn     *quic.Conn
	interval time.Duration // Keepalive/livenessTicks
	quiet    time.Duration // Keepalive

	// Touched only by check, which never runs twice at once (the timer is
	// re-armed at its end).
	lastRcv, lastSent uint64
	rcvAt             time.Time // when lastRcv was seen to change

	mu      sync.Mutex
	timer   *time.Timer
	stopped bool
	busy    bool           // a probe is being queued
	sending sync.WaitGroup // the goroutine queueing it
}

// startResetProbe starts probing conn if the relay accepts datagrams (an
// older relay does not: then the node relies on its idle timeout).
func startResetProbe(conn *quic.Conn, keepalive time.Duration) *resetProbe {
	if !conn.ConnectionState().SupportsDatagrams.Remote || keepalive <= 0 {
		return nil
	}
	p := &resetProbe{conn: conn, interval: keepalive / livenessTicks, quiet: keepalive, rcvAt: time.Now()}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.timer = time.AfterFunc(p.interval, p.check)
	return p
}

// check runs once per interval: it sends a probe if the relay is quiet and
// re-arms the timer.
func (p *resetProbe) check() {
	if p.conn.Context().Err() != nil {
		return // the session is over: no more checks
	}
	now := time.Now()
	st := p.conn.ConnectionStats()
	probe := false
	if st.PacketsReceived != p.lastRcv {
		p.lastRcv, p.rcvAt = st.PacketsReceived, now
	} else {
		// Nothing arrived during the last interval: probe if that has
		// lasted a keepalive, or if what we sent went unanswered.
		probe = now.Sub(p.rcvAt) >= p.quiet || st.PacketsSent != p.lastSent
	}
	p.lastSent = st.PacketsSent

	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return
	}
	if probe && !p.busy {
		p.busy = true
		p.sending.Add(1)
		// SendDatagram queues, and blocks only when 32 datagrams wait for a
		// congestion window that a dead path does not reopen; it returns
		// when the connection ends. Run it apart so that the timer keeps
		// its pace; stop waits for it.
		go func() {
			defer p.sending.Done()
			p.conn.SendDatagram(probePayload[:])
			p.mu.Lock()
			p.busy = false
			p.mu.Unlock()
		}()
	}
	p.timer.Reset(p.interval)
}

// stop ends the probing and waits for a probe being queued. Call it after
// the connection is closed, so that a blocked SendDatagram returns.
func (p *resetProbe) stop() {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.stopped = true
	p.timer.Stop()
	p.mu.Unlock()
	p.sending.Wait()
}

// drainDatagrams discards what a node sends in datagrams (its resetProbes)
// until the connection ends, so that they do not pile up in quic-go's
// receive queue (128 datagrams of up to a packet each). It runs on the
// relay, one goroutine per QUIC session; done is closed when it returns.
func drainDatagrams(conn *quic.Conn, done chan<- struct{}) {
	defer close(done)
	ctx := context.Background()
	for {
		if _, err := conn.ReceiveDatagram(ctx); err != nil {
			return
		}
	}
}
