package node

import (
	"strings"
	"testing"
	"time"
)

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
	}{
		{"0", 0}, {"4096", 4096}, {"64MiB", 64 << 20}, {"64M", 64 << 20}, {"64 MB", 64 << 20},
		{"512kib", 512 << 10}, {"1GiB", 1 << 30}, {"100B", 100},
	} {
		if got, err := ParseSize(tc.in); err != nil || got != tc.want {
			t.Errorf("ParseSize(%q): got %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"", "MiB", "-1", "1.5MiB", "64TiB", "lots", "99999999999GiB"} {
		if got, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q): got %d, want an error", in, got)
		}
	}
	if got := FormatSize(DefaultMaxBuffer); got != "128MiB" {
		t.Errorf("FormatSize(DefaultMaxBuffer): got %q, want 128MiB", got)
	}
}

func TestStreamWindow(t *testing.T) {
	for _, tc := range []struct {
		streams int
		buffer  int64
		window  uint32
		err     string
	}{
		{0, 0, 1 << 20, ""}, // the defaults: 64 streams, 128 MiB
		{64, 64 << 20, 512 << 10, ""},
		{1, 1 << 30, 4 << 20, ""},  // at most mux's default window
		{3, 10 << 20, 1744896, ""}, // 10 MiB / 3 / 2, rounded down to 4 KiB
		{256, 64 << 20, 0, "raise max-buffer to 128MiB or lower max-streams to 128"},
		{-1, 0, 0, "must not be negative"},
	} {
		c := Config{MaxStreams: tc.streams, MaxBuffer: tc.buffer}
		err := c.setLimits()
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%d streams, %d bytes: got %v, want an error with %q", tc.streams, tc.buffer, err, tc.err)
			}
		case err != nil:
			t.Errorf("%d streams, %d bytes: %v", tc.streams, tc.buffer, err)
		case c.StreamWindow() != tc.window:
			t.Errorf("%d streams, %d bytes: window %d, want %d", tc.streams, tc.buffer, c.StreamWindow(), tc.window)
		}
	}
}

// TestStreamLimitWarnings checks that refusals at the limit are logged at
// most once per refusalLogInterval, the next line counting those between.
func TestStreamLimitWarnings(t *testing.T) {
	l := &streamLimit{max: 1}
	if !l.acquire() || l.acquire() {
		t.Fatal("with max 1: want the first acquire to succeed and the second to fail")
	}
	t0 := time.Unix(1000, 0)
	type step struct {
		at    time.Duration
		warn  bool
		count int
	}
	for i, s := range []step{
		{0, true, 1},
		{time.Second, false, 0},
		{5 * time.Second, false, 0},
		{refusalLogInterval, true, 3},
		{refusalLogInterval + time.Second, false, 0},
	} {
		warn, count := l.refused(t0.Add(s.at))
		if warn != s.warn || count != s.count {
			t.Errorf("refusal %d at +%v: got warn %v count %d, want %v %d", i+1, s.at, warn, count, s.warn, s.count)
		}
	}
	l.release()
	if !l.acquire() {
		t.Error("after release: want a slot")
	}
}
