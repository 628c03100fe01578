package node

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults sized for a device with 512 MB of memory that also runs its own
// programs: 64 streams, each with a 1 MiB window held in at most 2 MiB. A
// 1 MiB window carries one connection's upload at 80 Mbit/s over a 100 ms
// path, more than a shop's uplink; 256 KiB windows cut uploads on a 25 ms
// link to a fifteenth of the 4 MiB figure.
const (
	DefaultMaxStreams = 64
	DefaultMaxBuffer  = 128 << 20

	// bufferPerWindow is the memory a full window can take: yamux keeps a
	// stream's unread data in a bytes.Buffer, which grows by doubling.
	bufferPerWindow = 2

	// minStreamWindow is yamux's initial window, below which it will not
	// go; maxStreamWindow is the window without a budget (mux's default),
	// twice the SSH channel's 2 MiB, beyond which a larger window buys no
	// throughput.
	minStreamWindow = 256 << 10
	maxStreamWindow = 4 << 20

	// refusalLogInterval is the least time between two warnings about
	// streams refused at the limit; the second one counts those in between.
	refusalLogInterval = 10 * time.Second
)

// setLimits applies the defaults of MaxStreams and MaxBuffer and checks that
// the budget gives every stream at least yamux's minimum window.
func (c *Config) setLimits() error {
	if c.MaxStreams < 0 || c.MaxBuffer < 0 {
		return fmt.Errorf("max-streams %d and max-buffer %d must not be negative", c.MaxStreams, c.MaxBuffer)
	}
	if c.MaxStreams == 0 {
		c.MaxStreams = DefaultMaxStreams
	}
	if c.MaxBuffer == 0 {
		c.MaxBuffer = DefaultMaxBuffer
	}
	const minShare = bufferPerWindow * minStreamWindow
	if share := c.MaxBuffer / int64(c.MaxStreams); share < minShare {
		return fmt.Errorf("max-buffer %s shared by max-streams %d gives each stream %s, below the minimum of %s (twice the smallest window): raise max-buffer to %s or lower max-streams to %d",
			FormatSize(c.MaxBuffer), c.MaxStreams, FormatSize(share), FormatSize(minShare),
			FormatSize(int64(c.MaxStreams)*minShare), c.MaxBuffer/minShare)
	}
	return nil
}

// StreamWindow is the receive window of each stream: MaxStreams streams
// whose full windows take twice their size (bufferPerWindow) fit in
// MaxBuffer. At most 4 MiB, rounded down to 4 KiB. Valid after New.
func (c *Config) StreamWindow() uint32 {
	w := min(c.MaxBuffer/int64(c.MaxStreams)/bufferPerWindow, maxStreamWindow)
	return uint32(w &^ 4095)
}

// ParseSize reads a byte count: a number with an optional binary unit,
// KiB, MiB or GiB (K, M, G and KB, MB, GB mean the same), e.g. 64MiB.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	unit := int64(1)
	for _, u := range []struct {
		suffixes []string
		mult     int64
	}{
		{[]string{"GiB", "GB", "G"}, 1 << 30},
		{[]string{"MiB", "MB", "M"}, 1 << 20},
		{[]string{"KiB", "KB", "K"}, 1 << 10},
	} {
		for _, suf := range u.suffixes {
			if len(t) > len(suf) && strings.EqualFold(t[len(t)-len(suf):], suf) {
				t, unit = strings.TrimSpace(t[:len(t)-len(suf)]), u.mult
				break
			}
		}
		if unit != 1 {
			break
		}
	}
	t = strings.TrimSuffix(t, "B")
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/unit {
		return 0, fmt.Errorf("size %q: want a number of bytes with an optional unit, e.g. 64MiB", s)
	}
	return n * unit, nil
}

// FormatSize writes n in the largest binary unit that divides it.
func FormatSize(n int64) string {
	switch {
	case n > 0 && n%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", n>>30)
	case n > 0 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n > 0 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}

// streamLimit counts the streams being served, across sessions (a session
// being replaced still holds its buffers), and rate-limits the warning
// about streams refused at the limit.
type streamLimit struct {
	max    int64
	active atomic.Int64

	mu         sync.Mutex
	nextWarn   time.Time // guarded by mu
	suppressed int       // refusals not yet logged, guarded by mu
}

// acquire takes a slot, or reports false when max streams are being
// served.
func (l *streamLimit) acquire() bool {
	if l.active.Add(1) > l.max {
		l.active.Add(-1)
		return false
	}
	return true
}

func (l *streamLimit) release() { l.active.Add(-1) }

// refused counts one refusal and says whether to log now, and how many
// refusals the line covers.
func (l *streamLimit) refused(now time.Time) (warn bool, count int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.suppressed++
	if now.Before(l.nextWarn) {
		return false, 0
	}
	count, l.suppressed = l.suppressed, 0
	l.nextWarn = now.Add(refusalLogInterval)
	return true, count
}
