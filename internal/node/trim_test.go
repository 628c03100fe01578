package node

import (
	"log/slog"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// TestTrimmer checks when the node gives back its executable's pages: when
// a session comes up, and trimEvery after served streams ended if none is
// open then; never while a stream is open, never again while nothing ran,
// never after Run returned.
func TestTrimmer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		streams := &streamLimit{max: 4}
		tr := newTrimmer(streams, slog.New(slog.DiscardHandler))
		var releases atomic.Int32 // the timer's goroutine writes it
		tr.release = func() (int, error) { releases.Add(1); return 4096, nil }
		step := func(what string, d time.Duration, want int32) {
			t.Helper()
			time.Sleep(d)
			synctest.Wait()
			if got := releases.Load(); got != want {
				t.Fatalf("%s: %d releases, want %d", what, got, want)
			}
		}
		open := func() {
			t.Helper()
			if !streams.acquire() {
				t.Fatal("acquire refused")
			}
		}
		end := func() {
			streams.release()
			tr.streamEnded()
		}
		const jiffy = time.Second

		step("before any session", 2*trimEvery, 0)
		tr.sessionUp()
		step("session up", 0, 1)
		step("idle", 3*trimEvery, 1)

		open()
		step("a stream open", 2*trimEvery, 1)
		end()
		step("just after it ended", trimEvery-jiffy, 1)
		step("trimEvery after it ended", 2*jiffy, 2)
		step("idle again", 3*trimEvery, 2)

		// A stream opens while the look after another is pending: that
		// look finds it open; its own end arms the next.
		open()
		end()
		step("half way", trimEvery/2, 2)
		open()
		step("the look found a stream open", trimEvery/2+jiffy, 2)
		end()
		step("after the second stream", trimEvery+jiffy, 3)

		// Many streams ending at once: one look.
		for range 3 {
			open()
		}
		for range 3 {
			end()
		}
		step("three streams ended", trimEvery+jiffy, 4)

		tr.sessionUp()
		step("reconnected", 0, 5)

		// Run returns with a look pending: it never comes.
		open()
		end()
		tr.stop()
		step("after stop", 2*trimEvery, 5)
		open()
		end()
		step("a stream ending after stop", 2*trimEvery, 5)
	})
}
