package relay_test

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"paradigm/internal/faultproxy"
	"paradigm/internal/node"
	"paradigm/internal/relay"
)

// faultResources is a snapshot of what a leak would grow.
type faultResources struct {
	goroutines, fds int
	heap            uint64
}

func faultMeasure(t *testing.T) faultResources {
	t.Helper()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count file descriptors: %v", err)
	}
	return faultResources{goroutines: runtime.NumGoroutine(), fds: len(fds), heap: ms.HeapAlloc}
}

func (r faultResources) String() string {
	return fmt.Sprintf("%d goroutines, %d fds, %.1f MiB heap", r.goroutines, r.fds, float64(r.heap)/(1<<20))
}

// TestFaultReconnectCyclesDoNotLeak cuts the links of 10 playnodes 100
// times each (1,000 reconnections in all), waiting each time until the
// playnode serves again, then checks that goroutines, file descriptors and
// heap are back where they were once things settle.
func TestFaultReconnectCyclesDoNotLeak(t *testing.T) {
	const nodes, cycles = 10, 100
	cfg := faultRelayConfig(t)
	cfg.Keepalive = 2 * time.Second // not under test here
	names := make([]string, nodes)
	for i := range names {
		names[i] = fmt.Sprintf("cycle%02d", i)
	}
	keys := faultAuthorize(t, cfg.DataDir, names...)
	r := faultStartRelay(t, cfg)
	service := faultReply(t, "hello")
	proxies := make([]*faultproxy.Proxy, nodes)
	ports := make([]uint16, nodes)
	for i, name := range names {
		proxies[i] = faultProxy(t, r.Addr().String())
		faultStartNode(t, r, proxies[i].Addr(), name, keys[name], service, slog.LevelWarn, func(c *node.Config) {
			c.Keepalive = 2 * time.Second
			c.BackoffMax = 20 * time.Millisecond
		})
		ports[i] = faultOnline(t, r, name)
	}
	cycle := func(i int) {
		before := proxies[i].Accepted()
		proxies[i].Cut()
		faultWaitFor(t, names[i]+" to reconnect", func() bool { return proxies[i].Accepted() > before })
		faultWaitServed(t, ports[i], "hello")
	}
	runCycles := func(n int) {
		var wg sync.WaitGroup
		for i := range nodes {
			wg.Go(func() {
				for range n {
					cycle(i)
				}
			})
		}
		wg.Wait()
	}
	runCycles(5) // warm up pools and buffers
	base := faultMeasure(t)
	start := time.Now()
	runCycles(cycles)
	elapsed := time.Since(start)

	// Settling: sessions cut last may still be winding down.
	const goSlack, fdSlack, heapSlack = 20, 20, 16 << 20
	var after faultResources
	end := time.Now().Add(faultWait)
	for {
		after = faultMeasure(t)
		if after.goroutines <= base.goroutines+goSlack && after.fds <= base.fds+fdSlack &&
			after.heap <= base.heap*3/2+heapSlack {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("after %d reconnections: %v, before: %v (slack %d goroutines, %d fds, 1.5x+16 MiB heap)",
				nodes*cycles, after, base, goSlack, fdSlack)
		}
		time.Sleep(50 * time.Millisecond) // polling interval
	}
	t.Logf("%d reconnections in %v (%v each per playnode); before: %v; after: %v",
		nodes*cycles, elapsed.Round(time.Millisecond), (elapsed / cycles).Round(time.Millisecond), base, after)
}

// TestFaultRelayRestartWithThousandNodes restarts a relay that 1,000
// playnodes are connected to. Every playnode must be back within
// restartBound, handshakes in progress must never exceed MaxHandshakes,
// and the first playnode back must stay reachable while the rest storm in.
func TestFaultRelayRestartWithThousandNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("1,000 playnodes: slow under -short")
	}
	const (
		nodes         = 1000
		maxHandshakes = 16
		backoffMax    = 2 * time.Second
		// Jittered backoff brings nodes back within backoffMax; the margin
		// covers 1,000 SSH handshakes on a slow CI machine under -race.
		restartBound = backoffMax + 2*time.Minute
	)
	cfg := faultRelayConfig(t)
	cfg.PortLow, cfg.PortHigh = 64000, 65199
	cfg.Keepalive = 10 * time.Second // a starved CPU must not pass for dead links
	cfg.HandshakeTimeout = 30 * time.Second
	cfg.MaxHandshakes = maxHandshakes
	cfg.MaxUnauthPerAddress = nodes // every playnode dials from 127.0.0.1
	names := make([]string, nodes)
	for i := range names {
		names[i] = fmt.Sprintf("n%04d", i)
	}
	keys := faultAuthorize(t, cfg.DataDir, names...)
	// Their portaliases in one write too: the first start is not under test.
	var table strings.Builder
	for i, name := range names {
		fmt.Fprintf(&table, "%s svc %d\n", name, int(cfg.PortLow)+i)
	}
	if err := os.WriteFile(filepath.Join(cfg.DataDir, relay.PortaliasFile), []byte(table.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	r := faultStartRelay(t, cfg)
	service := faultReply(t, "hello")
	tune := func(c *node.Config) {
		c.Keepalive = 10 * time.Second
		c.BackoffMax = backoffMax
		c.HandshakeTimeout = 30 * time.Second
	}
	start := time.Now()
	started := make([]*faultNode, 0, nodes)
	for _, name := range names {
		started = append(started, faultStartNode(t, r, r.Addr().String(), name, keys[name], service, slog.LevelError, tune))
	}
	t.Cleanup(func() { // runs first: stop them all at once, then each cleanup waits
		for _, n := range started {
			n.cancel()
		}
		t0 := time.Now()
		for _, n := range started {
			n.stop(t)
		}
		t.Logf("%d playnodes stopped in %v", nodes, time.Since(t0).Round(time.Millisecond))
	})
	allOnline := func(r *faultRelay) func() bool {
		return func() bool {
			for _, name := range names {
				if _, ok := r.Online(name); !ok {
					return false
				}
			}
			return true
		}
	}
	faultWaitForBound(t, "all playnodes online at start", restartBound, allOnline(r))
	t.Logf("%d playnodes online %v after start", nodes, time.Since(start).Round(time.Millisecond))
	ports := map[string]uint16{}
	for _, name := range names {
		ps, _ := r.Online(name)
		ports[name] = ps[0].Portalias
	}

	stopping := time.Now()
	r.stop(t)
	t.Logf("relay stopped in %v with %d playnodes online", time.Since(stopping).Round(time.Millisecond), nodes)
	r = faultStartRelay(t, r.cfg)
	restarted := time.Now()

	var peak atomic.Int64
	stop := make(chan struct{})
	var watchers sync.WaitGroup
	watchers.Go(func() {
		for {
			if n := int64(relay.HandshakesInProgress(r.Relay)); n > peak.Load() {
				peak.Store(n)
			}
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond): // sampling interval
			}
		}
	})
	// The first playnode back stays reachable while the rest reconnect.
	// It must answer once first: a portalias whose port another program
	// holds (logged by the relay, retried) is not what this measures.
	var first string
	faultWaitForBound(t, "a first playnode back and serving", restartBound, func() bool {
		for _, name := range names {
			if _, ok := r.Online(name); ok {
				if got, err := faultFetch(ports[name]); err == nil && got == "hello" {
					first = name
					return true
				}
			}
		}
		return false
	})
	var fetches, fetchFailures int
	var failures []string
	var slowest time.Duration
	watchers.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			t0 := time.Now()
			got, err := faultFetch(ports[first])
			slowest = max(slowest, time.Since(t0))
			fetches++
			if err != nil || got != "hello" {
				if fetchFailures++; fetchFailures <= 3 {
					failures = append(failures, fmt.Sprintf("%q, %v after %v", got, err, time.Since(restarted).Round(time.Millisecond)))
				}
			}
		}
	})
	faultWaitForBound(t, "every playnode back after the restart", restartBound, allOnline(r))
	back := time.Since(restarted)
	close(stop)
	watchers.Wait()
	for _, name := range names {
		if ps, _ := r.Online(name); len(ps) != 1 || ps[0].Portalias != ports[name] {
			t.Errorf("%s after restart: portaliases %v, want %d", name, ps, ports[name])
		}
	}
	if p := peak.Load(); p > maxHandshakes {
		t.Errorf("handshakes in progress peaked at %d, want at most MaxHandshakes %d", p, maxHandshakes)
	}
	if fetchFailures > 0 {
		t.Errorf("%d of %d fetches through %s's portalias failed during the storm, first: %v; relay's log of it:\n%s",
			fetchFailures, fetches, first, failures, strings.Join(r.log.Lines("playnode="+first+" "), ""))
	}
	t.Logf("%d playnodes back %v after the restart (bound %v); handshakes in progress peaked at %d (max %d); %d fetches through %s's portalias during the storm, slowest %v",
		nodes, back.Round(time.Millisecond), restartBound, peak.Load(), maxHandshakes, fetches, first, slowest.Round(time.Millisecond))
}

// faultWaitForBound is faultWaitFor with a stated bound.
func faultWaitForBound(t *testing.T, what string, bound time.Duration, cond func() bool) {
	t.Helper()
	end := time.Now().Add(bound)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("%s: not within %v", what, bound)
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
}
