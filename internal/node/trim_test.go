package node

import (
	"context"
	"log/slog"
	"testing"
	"testing/synctest"
	"time"
)

// TestTrimmer checks when the node gives back its executable's pages: when
// a session comes up, and after served streams once none is open; never
// while a stream is open, never again while nothing ran.
func TestTrimmer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		streams := &streamLimit{max: 4}
		tr := newTrimmer(streams, slog.New(slog.DiscardHandler))
		releases := 0
		tr.release = func() (int, error) { releases++; return 4096, nil }
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { defer close(done); tr.run(ctx) }()
		step := func(what string, d time.Duration, want int) {
			t.Helper()
			time.Sleep(d)
			synctest.Wait()
			if releases != want {
				t.Fatalf("%s: %d releases, want %d", what, releases, want)
			}
		}

		step("before any session", 2*trimEvery, 0)
		tr.sessionUp()
		step("session up", 0, 1)
		step("idle", 3*trimEvery, 1)
		if !streams.acquire() {
			t.Fatal("acquire refused")
		}
		step("a stream open", 2*trimEvery, 1)
		streams.release()
		step("the stream ended", trimEvery, 2)
		step("idle again", 3*trimEvery, 2)
		tr.sessionUp()
		step("reconnected", 0, 3)
		step("idle after reconnect", trimEvery, 3)

		cancel()
		<-done
	})
}
