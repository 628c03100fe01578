package node

import (
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"paradigm/internal/identity"
	"paradigm/internal/testenv"
)

func TestTransportChooser(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	type step struct {
		at     time.Duration // after t0
		result string        // "ok" or "failed": record an attempt's outcome; "" asks useQUIC
		want   bool          // useQUIC's answer
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"quic first", []step{{at: 0, want: true}, {at: time.Hour, want: true}}},
		{"ssh after a failure until the retry interval", []step{
			{at: 0, result: "failed"},
			{at: 0, want: false},
			{at: quicRetryInterval - time.Nanosecond, want: false},
			{at: quicRetryInterval, want: true},
			{at: 2 * quicRetryInterval, want: true},
		}},
		{"a failed retry starts the interval again", []step{
			{at: 0, result: "failed"},
			{at: quicRetryInterval, want: true},
			{at: quicRetryInterval, result: "failed"},
			{at: 2*quicRetryInterval - time.Nanosecond, want: false},
			{at: 2 * quicRetryInterval, want: true},
		}},
		{"a success forgets the failure", []step{
			{at: 0, result: "failed"},
			{at: quicRetryInterval, result: "ok"},
			{at: quicRetryInterval, want: true},
			{at: quicRetryInterval + time.Second, want: true},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c transportChooser
			for i, s := range tt.steps {
				now := t0.Add(s.at)
				if s.result != "" {
					c.result(s.result == "ok", now)
					continue
				}
				if got := c.useQUIC(now); got != s.want {
					t.Fatalf("step %d: useQUIC at t0+%v: got %v, want %v", i, s.at, got, s.want)
				}
			}
		})
	}
}

// blackhole is a UDP socket that reads and discards everything: a network
// that drops UDP.
type blackhole struct {
	conn     net.PacketConn
	received atomic.Int64 // datagrams
}

func startBlackhole(t *testing.T) *blackhole {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &blackhole{conn: conn}
	done := make(chan struct{})
	t.Cleanup(func() {
		conn.Close()
		<-done
	})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			if _, _, err := conn.ReadFrom(buf); err != nil {
				return
			}
			b.received.Add(1)
		}
	}()
	return b
}

// startRelayBlackholedUDP runs an SSH-only relay on a TCP port whose UDP
// port of the same number is a blackhole.
func startRelayBlackholedUDP(t *testing.T) (*testRelay, *blackhole) {
	t.Helper()
	for range 5 {
		b := startBlackhole(t)
		r := startRelay(t, TransportSSH)
		r.stop()
		cfg := r.cfg
		cfg.Listen = b.conn.LocalAddr().String()
		nr, err := newRelay(t, cfg)
		if err == nil {
			nr.keyFile = r.keyFile
			return nr, b
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			t.Fatal(err)
		}
	}
	t.Fatal("no TCP port free at the number of a free UDP port in 5 tries")
	return nil, nil
}

// TestAutoFallsBackToSSH runs an auto node against a relay whose UDP port
// drops everything: the node comes online over SSH within the QUIC probe
// timeout (plus a margin for the SSH handshake), says so, and keeps to SSH
// when it reconnects.
func TestAutoFallsBackToSSH(t *testing.T) {
	t.Parallel()
	r, hole := startRelayBlackholedUDP(t)
	cfg := Config{Relay: r.Addr().String(), Transport: TransportAuto, Fingerprint: identity.Fingerprint(r.HostKey()),
		KeyFile: r.keyFile, Name: "dev1", Services: []Service{{"ssh", "127.0.0.1:22"}}}
	start := time.Now()
	logs, _ := startNode(t, cfg)
	const margin = 3 * time.Second
	waitUntil(t, quicProbeTimeout+margin, "dev1 online", func() bool { return online(r, "dev1") })
	t.Logf("online over ssh %v after start", time.Since(start).Round(time.Millisecond))
	waitFor(t, "the node to log its session", func() bool { return strings.Contains(logs.String(), "connected to relay") })
	if !strings.Contains(logs.String(), "quic to relay failed, falling back to ssh") {
		t.Errorf("the node did not log the fallback to ssh")
	}
	if !strings.Contains(logs.String(), "transport=ssh") || strings.Contains(logs.String(), "transport=quic") {
		t.Errorf("the node's session is not logged as transport=ssh only")
	}
	if hole.received.Load() == 0 {
		t.Fatalf("no datagram reached the relay's UDP port: QUIC was not tried")
	}

	// A reconnect, here after a relay restart, goes straight to SSH: no new
	// QUIC probe within quicRetryInterval.
	probes := hole.received.Load()
	r.stop()
	waitFor(t, "dev1 to notice the relay is gone", func() bool {
		return strings.Count(logs.String(), "disconnected from relay") >= 1
	})
	r2 := runRelay(t, r.cfg)
	start = time.Now()
	waitUntil(t, margin, "dev1 online again", func() bool { return online(r2, "dev1") })
	t.Logf("online again %v after the relay restarted", time.Since(start).Round(time.Millisecond))
	if got := hole.received.Load(); got != probes {
		t.Errorf("%d datagrams to the blackholed UDP port after the fallback, want none", got-probes)
	}
	if got := strings.Count(logs.String(), "falling back to ssh"); got != 1 {
		t.Errorf("the node logged %d fallbacks, want 1", got)
	}
}

// TestAutoUsesQUIC checks that an auto node uses QUIC when it works, and
// comes back to QUIC after the relay restarts.
func TestAutoUsesQUIC(t *testing.T) {
	t.Parallel()
	r := startRelay(t, TransportQUIC)
	cfg := Config{Relay: r.Addr().String(), Transport: TransportAuto, Fingerprint: identity.Fingerprint(r.HostKey()),
		KeyFile: r.keyFile, Name: "dev1", Services: []Service{{"ssh", "127.0.0.1:22"}}}
	logs, _ := startNode(t, cfg)
	waitFor(t, "dev1 online over quic", func() bool {
		p, ok := r.Snapshot().Playnode("dev1")
		return ok && p.Online && p.Transport == TransportQUIC
	})
	waitFor(t, "the node to log its session", func() bool { return strings.Contains(logs.String(), "connected to relay") })
	if !strings.Contains(logs.String(), "transport=quic") || strings.Contains(logs.String(), "falling back") {
		t.Fatalf("the node did not connect over quic at once")
	}

	// While the relay is down both transports fail; that is no reason to
	// give up on QUIC.
	r.stop()
	waitFor(t, "a failed attempt while the relay is down", func() bool {
		return strings.Count(logs.String(), "disconnected from relay") >= 2
	})
	r2 := runRelay(t, r.cfg)
	waitUntil(t, quicProbeTimeout+waitTimeout, "dev1 online again", func() bool { return online(r2, "dev1") })
	if p, _ := r2.Snapshot().Playnode("dev1"); p.Transport != TransportQUIC {
		t.Fatalf("after the relay restarted, dev1 came back over %s, want quic", p.Transport)
	}
}

// TestAutoHostKeyNoFallback checks that a relay whose key does not match
// over QUIC is not taken for blocked UDP.
func TestAutoHostKeyNoFallback(t *testing.T) {
	r := startRelay(t, TransportQUIC)
	cfg := Config{Relay: r.Addr().String(), Transport: TransportAuto, Fingerprint: identity.Fingerprint(hostKey(t).PublicKey()),
		KeyFile: r.keyFile, Name: "dev1", Services: []Service{{"ssh", "127.0.0.1:22"}}}
	logs, stop := startNode(t, cfg)
	waitFor(t, "two refused attempts", func() bool { return strings.Count(logs.String(), ErrHostKey.Error()) >= 2 })
	stop()
	if strings.Contains(logs.String(), "falling back") || strings.Contains(r.log.String(), "transport=ssh") {
		t.Fatalf("a host key mismatch over quic made the node fall back to ssh")
	}
}

// waitUntil polls cond until it holds, failing t after within.
func waitUntil(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	testenv.WaitFor(t, within, what, cond)
}
