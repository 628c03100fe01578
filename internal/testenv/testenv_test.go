package testenv

import (
	"log/slog"
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
