package mux

import (
	"net"
	"testing"
	"time"
	"unsafe"
)

// jumpWall returns t with its wall clock moved by d and its monotonic
// reading kept: what time.Now returns after someone sets the system clock
// (NTP stepping it, an operator, a board without RTC booting at 1970). The
// time package offers no way to build such a value, so this edits the
// fields of time.Time (wall: hasMonotonic bit, 33 bits of seconds since
// 1885, 30 bits of nanoseconds; ext: monotonic nanoseconds). If a Go
// release changes that layout the test fails, saying so, rather than skip:
// the property it guards must stay tested.
func jumpWall(t *testing.T, tm time.Time, d time.Duration) time.Time {
	t.Helper()
	type timeLayout struct {
		wall uint64
		ext  int64
		loc  *time.Location
	}
	if unsafe.Sizeof(tm) != unsafe.Sizeof(timeLayout{}) {
		t.Fatal("time.Time layout changed: update jumpWall")
	}
	l := (*timeLayout)(unsafe.Pointer(&tm))
	const hasMonotonic, nsecShift = 1 << 63, 30
	if l.wall&hasMonotonic == 0 {
		t.Fatal("time.Now has no monotonic reading here: update jumpWall")
	}
	l.wall += uint64(d/time.Second) << nsecShift
	if got := tm.Round(0).Sub(time.Now().Round(0)); got < d-time.Minute || got > d+time.Minute {
		t.Fatalf("time.Time layout changed: wall moved by %v, want %v; update jumpWall", got, d)
	}
	return tm
}

// TestLivenessIgnoresWallClockJumps: a session that just received bytes is
// not quiet, whatever the wall clock did since. With readings stored as
// UnixNano (wall clock) a jump forward by an hour made every healthy
// session look silent for an hour and the relay dropped them all; a jump
// backward kept dead ones forever.
func TestLivenessIgnoresWallClockJumps(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	ac := newActivityConn(a, a)
	go b.Write([]byte("x"))
	if _, err := ac.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	for _, jump := range []time.Duration{time.Hour, -time.Hour, 24 * 365 * time.Hour} {
		now := jumpWall(t, time.Now(), jump)
		if q := ac.quietFor(now); q < 0 || q > time.Minute {
			t.Errorf("wall clock moved by %v: quiet for %v, want about 0", jump, q)
		}
	}
}
