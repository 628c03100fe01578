// Package logthrottle rate-limits the log lines that peers cause, so that a
// log line never costs an attacker less than it costs the relay: refused
// connections, bad handshakes, garbage datagrams. Each reason logs a few
// lines per interval, each source address at most one or so of them, and
// the rest are counted and summarised once per interval.
//
// Memory is bounded whatever the number of source addresses (an attacker
// controls those): at most Config.MaxSources (reason, address) pairs are
// tracked per interval. A suppressed event costs two map lookups and a few
// counters under one mutex, and allocates nothing (but for the tracking
// table's growth in the first intervals: it keeps its size across
// intervals).
package logthrottle

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Config sets the limits; the zero value is the defaults.
type Config struct {
	// Interval is the period of the limits and of the summaries. Default
	// one minute.
	Interval time.Duration
	// PerReason is how many lines each reason may log per interval.
	// Default 10.
	PerReason int
	// PerSource is how many lines one source address may log per reason per
	// interval. Default 1.
	PerSource int
	// MaxSources bounds the (reason, address) pairs tracked per interval,
	// and with it the Limiter's memory (about 64 bytes a pair). Once it is
	// reached, addresses not yet tracked are subject to PerReason only, and
	// the summary says that its address count is a lower bound. Default
	// 4096.
	MaxSources int
}

const (
	defaultInterval   = time.Minute
	defaultPerReason  = 10
	defaultPerSource  = 1
	defaultMaxSources = 4096
)

func (c Config) withDefaults() Config {
	if c.Interval <= 0 {
		c.Interval = defaultInterval
	}
	if c.PerReason <= 0 {
		c.PerReason = defaultPerReason
	}
	if c.PerSource <= 0 {
		c.PerSource = defaultPerSource
	}
	if c.MaxSources <= 0 {
		c.MaxSources = defaultMaxSources
	}
	return c
}

// SummaryMsg is the message of the summary lines Run logs.
const SummaryMsg = "refused connections summary"

// Limiter rate-limits log lines per reason and source address and
// summarises what it dropped. Its methods are safe for concurrent use.
type Limiter struct {
	log *slog.Logger
	cfg Config

	mu      sync.Mutex // guards what follows; held for no I/O
	reasons map[string]*reasonState
	sources map[sourceKey]int // lines logged this interval per pair; 0: seen, not logged
}

// sourceKey is one (reason, address) pair.
type sourceKey struct {
	reason string
	addr   netip.Addr
}

// reasonState counts one reason's events.
type reasonState struct {
	total      uint64 // since New
	events     uint64 // this interval
	logged     int    // this interval
	suppressed uint64 // this interval
	addrs      int    // distinct addresses tracked this interval
	capped     bool   // an address was not tracked this interval: addrs is a lower bound
}

// New returns a Limiter that logs to log at Warn. Run must run for the
// limits to be renewed each interval.
func New(log *slog.Logger, cfg Config) *Limiter {
	cfg = cfg.withDefaults()
	return &Limiter{
		log:     log,
		cfg:     cfg,
		reasons: make(map[string]*reasonState),
		sources: make(map[sourceKey]int),
	}
}

// Warn logs msg with attrs, and the attributes reason and remote (src), if
// reason and src are under their limits for this interval; otherwise it
// only counts the event. reason must be one of a small fixed set of
// constants (it is a map key for the Limiter's life), never peer data.
func (l *Limiter) Warn(reason string, src netip.Addr, msg string, attrs ...any) {
	if !l.admit(reason, src) {
		return
	}
	args := make([]any, 0, len(attrs)+4)
	args = append(args, attrs...)
	args = append(args, "reason", reason, "remote", src.String())
	l.log.Warn(msg, args...)
}

// Source is the IP address of a TCP or UDP address, as Warn takes it (IPv4
// in IPv6 unmapped); the zero Addr for anything else.
func Source(a net.Addr) netip.Addr {
	var ap netip.AddrPort
	switch a := a.(type) {
	case *net.TCPAddr:
		ap = a.AddrPort()
	case *net.UDPAddr:
		ap = a.AddrPort()
	default:
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// admit counts one event and says whether to log it.
func (l *Limiter) admit(reason string, src netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	rs := l.reasons[reason]
	if rs == nil {
		rs = &reasonState{}
		l.reasons[reason] = rs
	}
	rs.total++
	rs.events++
	k := sourceKey{reason, src}
	n, seen := l.sources[k]
	if !seen {
		if len(l.sources) >= l.cfg.MaxSources {
			// Untracked: only the reason's own limit applies, so that a
			// flood of addresses for one reason cannot silence another.
			rs.capped = true
			if rs.logged >= l.cfg.PerReason {
				rs.suppressed++
				return false
			}
			rs.logged++
			return true
		}
		rs.addrs++
	}
	if rs.logged >= l.cfg.PerReason || n >= l.cfg.PerSource {
		if !seen {
			l.sources[k] = 0
		}
		rs.suppressed++
		return false
	}
	rs.logged++
	l.sources[k] = n + 1
	return true
}

// Run renews the limits every Interval and logs, for each reason that had
// events suppressed in the interval just ended, one summary line at Warn:
// SummaryMsg with the attributes reason, count (events in the interval),
// addresses (distinct source addresses), addresses_capped (whether that is
// a lower bound, see Config.MaxSources), suppressed (events not logged) and
// interval. It returns nil when ctx is done.
func (l *Limiter) Run(ctx context.Context) error {
	tick := time.NewTicker(l.cfg.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			for _, s := range l.rollover() {
				l.log.Warn(SummaryMsg, "reason", s.reason, "count", s.events, "addresses", s.addrs,
					"addresses_capped", s.capped, "suppressed", s.suppressed, "interval", l.cfg.Interval.String())
			}
		}
	}
}

// summary is one reason's interval, for Run to log after unlocking.
type summary struct {
	reason string
	reasonState
}

// rollover ends the interval: it returns the summaries to log and starts
// the counts afresh.
func (l *Limiter) rollover() []summary {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []summary
	for reason, rs := range l.reasons {
		if rs.suppressed > 0 {
			out = append(out, summary{reason, *rs})
		}
		*rs = reasonState{total: rs.total}
	}
	clear(l.sources) // keeps its buckets: no allocation in the next interval
	return out
}

// Counts returns the number of events per reason since New, logged or
// not, for the metrics endpoint.
func (l *Limiter) Counts() map[string]uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]uint64, len(l.reasons))
	for reason, rs := range l.reasons {
		out[reason] = rs.total
	}
	return out
}
