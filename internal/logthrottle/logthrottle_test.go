package logthrottle_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"paradigm/internal/logthrottle"
)

// recorder is a slog.Handler that keeps every record with its attributes.
type recorder struct {
	mu      sync.Mutex
	records []record
}

type record struct {
	level slog.Level
	msg   string
	attrs map[string]any
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *recorder) WithGroup(string) slog.Handler            { return r }

func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	attrs := make(map[string]any)
	rec.Attrs(func(a slog.Attr) bool {
		attrs[a.Key] = a.Value.Any()
		return true
	})
	r.mu.Lock()
	defer r.mu.Unlock()
	r.records = append(r.records, record{rec.Level, rec.Message, attrs})
	return nil
}

// take returns the records so far and forgets them.
func (r *recorder) take() []record {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.records
	r.records = nil
	return out
}

func addr(i int) netip.Addr { return netip.AddrFrom4([4]byte{127, 0, byte(i >> 8), byte(i)}) }

var errRefused = errors.New("handshake limit reached")

func TestLimits(t *testing.T) {
	tests := []struct {
		name       string
		cfg        logthrottle.Config
		sources    int // distinct addresses, events spread over them in turn
		events     int
		wantLogged int
	}{
		{"one source redialling", logthrottle.Config{}, 1, 1000, 1},
		{"few sources", logthrottle.Config{}, 3, 1000, 3},
		{"many sources: per reason cap", logthrottle.Config{}, 249, 5000, 10},
		{"per source 2", logthrottle.Config{PerSource: 2}, 3, 1000, 6},
		{"table full: per reason cap only", logthrottle.Config{PerReason: 20, MaxSources: 5}, 50, 500, 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var rec recorder
			l := logthrottle.New(slog.New(&rec), tt.cfg)
			for i := range tt.events {
				l.Warn("too many handshakes", addr(i%tt.sources), "connection refused", "err", errRefused)
			}
			got := rec.take()
			if len(got) != tt.wantLogged {
				t.Fatalf("logged %d lines for %d events from %d addresses, want %d", len(got), tt.events, tt.sources, tt.wantLogged)
			}
			for _, r := range got {
				if r.level != slog.LevelWarn || r.msg != "connection refused" || r.attrs["reason"] != "too many handshakes" ||
					r.attrs["err"] != errRefused || r.attrs["remote"] == nil {
					t.Errorf("got record %+v, want a Warn with the message, err, reason and remote", r)
				}
			}
			if c := l.Counts()["too many handshakes"]; c != uint64(tt.events) {
				t.Errorf("Counts: got %d, want %d", c, tt.events)
			}
		})
	}
}

// TestReasonsApart: one reason's flood does not silence another.
func TestReasonsApart(t *testing.T) {
	var rec recorder
	l := logthrottle.New(slog.New(&rec), logthrottle.Config{})
	for i := range 10000 {
		l.Warn("not ssh", addr(i), "connection refused")
	}
	rec.take()
	l.Warn("auth failed", addr(1), "connection refused")
	if got := rec.take(); len(got) != 1 || got[0].attrs["reason"] != "auth failed" {
		t.Fatalf("after a flood of another reason: got %+v, want the one line", got)
	}
}

// TestSummaries runs the intervals under synctest: one summary per reason
// with suppressed events at the end of each interval, none for a reason
// that logged everything, limits renewed for the next interval, and Run
// returning nil on cancel.
func TestSummaries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var rec recorder
		l := logthrottle.New(slog.New(&rec), logthrottle.Config{})
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- l.Run(ctx) }()

		// Interval 1: 51,234 refusals from 249 addresses, and one quiet
		// reason.
		const events, sources = 51234, 249
		for i := range events {
			l.Warn("too many handshakes", addr(i%sources), "connection refused")
		}
		l.Warn("bad certificate", addr(7), "quic node certificate refused")
		if got := len(rec.take()); got != 11 {
			t.Fatalf("interval 1: %d lines logged, want 11 (10 + 1)", got)
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		got := rec.take()
		if len(got) != 1 {
			t.Fatalf("end of interval 1: %d records, want 1 summary: %+v", len(got), got)
		}
		want := map[string]any{
			"reason": "too many handshakes", "count": uint64(events), "addresses": int64(sources),
			"addresses_capped": false, "suppressed": uint64(events - 10), "interval": "1m0s",
		}
		checkSummary(t, got[0], want)

		// Interval 2: the limits are renewed; nothing suppressed, no summary.
		l.Warn("too many handshakes", addr(1), "connection refused")
		if got := len(rec.take()); got != 1 {
			t.Fatalf("interval 2: %d lines logged, want 1", got)
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		if got := rec.take(); len(got) != 0 {
			t.Fatalf("end of interval 2: got %+v, want no summary", got)
		}
		if c := l.Counts(); c["too many handshakes"] != events+1 || c["bad certificate"] != 1 {
			t.Errorf("Counts = %v, want totals since start", c)
		}

		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run after cancel: %v, want nil", err)
		}
	})
}

// TestSummaryCapped: more addresses than MaxSources make the address count
// a lower bound, said so in the summary.
func TestSummaryCapped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var rec recorder
		l := logthrottle.New(slog.New(&rec), logthrottle.Config{MaxSources: 100})
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- l.Run(ctx) }()
		defer func() {
			cancel()
			<-done
		}()
		for i := range 1000 {
			l.Warn("spoofed", addr(i), "garbage datagram")
		}
		rec.take()
		time.Sleep(time.Minute)
		synctest.Wait()
		got := rec.take()
		if len(got) != 1 {
			t.Fatalf("got %d records, want 1 summary", len(got))
		}
		checkSummary(t, got[0], map[string]any{
			"reason": "spoofed", "count": uint64(1000), "addresses": int64(100),
			"addresses_capped": true, "suppressed": uint64(990), "interval": "1m0s",
		})
	})
}

func checkSummary(t *testing.T, r record, want map[string]any) {
	t.Helper()
	if r.msg != logthrottle.SummaryMsg || r.level != slog.LevelWarn {
		t.Errorf("summary: got %v %q, want WARN %q", r.level, r.msg, logthrottle.SummaryMsg)
	}
	if len(r.attrs) != len(want) {
		t.Errorf("summary attributes %v, want %v", r.attrs, want)
	}
	for k, v := range want {
		if r.attrs[k] != v {
			t.Errorf("summary %s = %v (%T), want %v (%T)", k, r.attrs[k], r.attrs[k], v, v)
		}
	}
}

// TestSuppressedAllocs: a suppressed event allocates nothing, for a known
// address and, once the table is full, for a new one.
func TestSuppressedAllocs(t *testing.T) {
	l := logthrottle.New(slog.New(slog.DiscardHandler), logthrottle.Config{MaxSources: 16})
	for i := range 16 {
		l.Warn("too many handshakes", addr(i), "connection refused", "err", errRefused)
	}
	known := addr(1)
	if n := testing.AllocsPerRun(1000, func() {
		l.Warn("too many handshakes", known, "connection refused", "err", errRefused)
	}); n != 0 {
		t.Errorf("suppressed event from a known address: %v allocations, want 0", n)
	}
	i := 1000
	if n := testing.AllocsPerRun(1000, func() {
		i++
		l.Warn("too many handshakes", addr(i), "connection refused", "err", errRefused)
	}); n != 0 {
		t.Errorf("suppressed event from a new address, table full: %v allocations, want 0", n)
	}
}

func BenchmarkSuppressed(b *testing.B) {
	l := logthrottle.New(slog.New(slog.DiscardHandler), logthrottle.Config{})
	src := addr(1)
	l.Warn("too many handshakes", src, "connection refused")
	b.ReportAllocs()
	for b.Loop() {
		l.Warn("too many handshakes", src, "connection refused", "err", errRefused)
	}
}

func ExampleLimiter() {
	l := logthrottle.New(slog.Default(), logthrottle.Config{Interval: time.Minute})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	remote := netip.MustParseAddrPort("192.0.2.7:51234")
	l.Warn("too many handshakes", remote.Addr(), "connection refused", "limit", 128)
	fmt.Println(l.Counts())
	// Output: map[too many handshakes:1]
}

// BenchmarkUnthrottled is the cost Warn saves: one text line per event.
func BenchmarkUnthrottled(b *testing.B) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	src := addr(1)
	b.ReportAllocs()
	for b.Loop() {
		log.Warn("connection refused", "err", errRefused, "reason", "too many handshakes", "remote", src.String())
	}
}

// TestConcurrent: events from many goroutines, across interval ends, are
// all counted and the limits hold in each interval.
func TestConcurrent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var rec recorder
		l := logthrottle.New(slog.New(&rec), logthrottle.Config{})
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- l.Run(ctx) }()
		const workers, events = 8, 1000
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				for i := range events {
					l.Warn("too many handshakes", addr(w*events+i), "connection refused")
				}
			})
		}
		wg.Wait()
		lines := len(rec.take())
		time.Sleep(time.Minute)
		synctest.Wait()
		summaries := rec.take()
		cancel()
		<-done
		if lines != 10 {
			t.Errorf("logged %d lines, want the per-reason limit, 10", lines)
		}
		if len(summaries) != 1 || summaries[0].attrs["suppressed"] != uint64(workers*events-10) {
			t.Errorf("summaries %+v, want one with %d suppressed", summaries, workers*events-10)
		}
		if c := l.Counts()["too many handshakes"]; c != workers*events {
			t.Errorf("Counts = %d, want %d", c, workers*events)
		}
	})
}

func TestSource(t *testing.T) {
	tests := []struct {
		in   net.Addr
		want netip.Addr
	}{
		{&net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 4422}, netip.MustParseAddr("192.0.2.7")},
		{&net.UDPAddr{IP: net.ParseIP("2001:db8::1"), Port: 4422}, netip.MustParseAddr("2001:db8::1")},
		{&net.UnixAddr{Name: "/run/x", Net: "unix"}, netip.Addr{}},
		{nil, netip.Addr{}},
	}
	for _, tt := range tests {
		if got := logthrottle.Source(tt.in); got != tt.want {
			t.Errorf("Source(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
}
