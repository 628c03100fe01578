package relay

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// TestStatusWriterPacing: a change after a quiet spell is written at once;
// a storm of changes is written at most once per statusMinGap, its last
// change included; with no change the file is still refreshed every
// statusRefresh (last seen times of online playnodes). Virtual time.
func TestStatusWriterPacing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var bus eventBus
		sub := bus.subscribe(16)
		var mu sync.Mutex
		var writes []time.Duration
		taken := func() []time.Duration { // what was written since the last call
			mu.Lock()
			defer mu.Unlock()
			w := writes
			writes = nil
			return w
		}
		start := time.Now()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			writeStatus(ctx, sub, func() {
				mu.Lock()
				writes = append(writes, time.Since(start))
				mu.Unlock()
			})
			close(done)
		}()
		synctest.Wait()

		time.Sleep(10 * time.Second)
		bus.publish([]Event{{Kind: EventUp}})
		synctest.Wait()
		if w := taken(); len(w) != 1 || w[0] != 10*time.Second {
			t.Fatalf("a change after a quiet spell: writes at %v, want one at 10s", w)
		}

		// A storm: 100 changes, 10 ms apart, for a second.
		for range 100 {
			bus.publish([]Event{{Kind: EventDown}})
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		storm := taken()
		if len(storm) == 0 || len(storm) > 2 {
			t.Errorf("100 changes within a second written %d times (%v), want 1 or 2", len(storm), storm)
		}
		if last := storm[len(storm)-1]; last < 10*time.Second+time.Second {
			t.Errorf("the storm's last write at %v, before its last change at about 11s", last)
		}

		time.Sleep(statusRefresh + time.Second)
		synctest.Wait()
		if w := taken(); len(w) != 1 {
			t.Errorf("a quiet minute: %d writes, want 1 refresh", len(w))
		}
		cancel()
		<-done
	})
}
