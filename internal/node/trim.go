package node

import (
	"log/slog"
	"sync"
	"time"
)

// trimEvery is how long after the last open stream ended the trimmer looks
// again.
const trimEvery = 30 * time.Second

// trimmer gives back the pages of the node's executable that it no longer
// runs (releaseExecutablePagesPaced, release_linux.go): when a session is up
// (start-up and the handshake are over), and trimEvery after the last open
// stream ended if none is open then (their code paths: dials, splices,
// errors, logs). A node that stays idle is left alone: what it runs while
// idle (keepalives, the collector) is its working set. It holds no
// goroutine while nothing is pending (the benchmark's simulator runs
// thousands of nodes in one process).
//
// Lock order: mu is a leaf.
type trimmer struct {
	release func() (int, error)
	streams *streamLimit
	log     *slog.Logger

	mu      sync.Mutex
	timer   *time.Timer // the pending look, nil if none; guarded by mu
	stopped bool        // guarded by mu
	pending sync.WaitGroup
}

func newTrimmer(streams *streamLimit, log *slog.Logger) *trimmer {
	return &trimmer{release: releaseExecutablePagesPaced, streams: streams, log: log}
}

// sessionUp releases at once; connect calls it after the welcome.
func (t *trimmer) sessionUp() { t.releaseNow() }

// streamEnded arms a look trimEvery later, unless one is pending; the node
// calls it each time a stream it served ends.
func (t *trimmer) streamEnded() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped || t.timer != nil {
		return
	}
	t.pending.Add(1)
	t.timer = time.AfterFunc(trimEvery, t.look)
}

// look releases unless a stream is open; the end of that stream arms the
// next look.
func (t *trimmer) look() {
	defer t.pending.Done()
	t.mu.Lock()
	t.timer = nil
	stopped := t.stopped
	t.mu.Unlock()
	if !stopped && t.streams.active.Load() == 0 {
		t.releaseNow()
	}
}

// stop cancels the pending look and waits for one that is running; Run
// calls it when it returns.
func (t *trimmer) stop() {
	t.mu.Lock()
	t.stopped = true
	if t.timer != nil && t.timer.Stop() {
		t.pending.Done()
	}
	t.timer = nil
	t.mu.Unlock()
	t.pending.Wait()
}

func (t *trimmer) releaseNow() {
	if n, err := t.release(); err != nil {
		t.log.Debug("release executable pages", "err", err)
	} else {
		t.log.Debug("released executable pages", "bytes", n)
	}
}
