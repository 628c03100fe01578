package testenv

import (
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"
)

func TestLogBuf(t *testing.T) {
	log, buf := NewLog(t, "test", slog.LevelInfo)
	log.Info("playnode connected", "playnode", "a")
	log.Debug("hidden")
	log.Info("playnode connected", "playnode", "b")
	if got := buf.Count("playnode connected"); got != 2 {
		t.Errorf("Count: got %d, want 2", got)
	}
	if buf.Contains("hidden") {
		t.Error("a debug line passed an info logger")
	}
	if got := buf.Lines("playnode=b"); len(got) != 1 {
		t.Errorf("Lines: got %q, want one line", got)
	}
}

func TestWaitFor(t *testing.T) {
	n := 0
	WaitFor(t, 10*time.Second, "three polls", func() bool { n++; return n == 3 })
	if n != 3 {
		t.Errorf("cond called %d times, want 3", n)
	}
}

func TestPortWindowAvoidsEphemeralPorts(t *testing.T) {
	data, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		t.Skipf("no ephemeral port range to avoid: %v", err)
	}
	var ephLow, ephHigh int
	if _, err := fmt.Sscan(string(data), &ephLow, &ephHigh); err != nil {
		t.Fatalf("ip_local_port_range %q: %v", data, err)
	}
	for range 1000 {
		low, high := PortWindow(1000)
		if high-low != 999 || low < 10000 || high > 65535 {
			t.Fatalf("PortWindow(1000) = %d-%d, want 1000 ports within 10000-65535", low, high)
		}
		if low <= ephHigh && high >= ephLow && ephLow-10000 >= 1000 {
			t.Fatalf("PortWindow(1000) = %d-%d overlaps the ephemeral range %d-%d", low, high, ephLow, ephHigh)
		}
	}
}
