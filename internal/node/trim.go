package node

import (
	"context"
	"log/slog"
	"time"
)

// trimEvery is how often the trimmer looks whether streams ran and ended
// since it last released the executable's pages.
const trimEvery = 30 * time.Second

// trimmer gives back the pages of the node's executable that it no longer
// runs (releaseExecutablePages, release_linux.go): once a session is up
// (start-up and the handshake are over), and again once streams have been
// served and none is open (their code paths, dials, errors, logs), checked
// every trimEvery. A node that stays idle is left alone: what it runs while
// idle (keepalives, the collector) is its working set.
type trimmer struct {
	release func() (int, error)
	streams *streamLimit
	log     *slog.Logger
	up      chan struct{} // a session was welcomed; buffered, one pending
}

func newTrimmer(streams *streamLimit, log *slog.Logger) *trimmer {
	return &trimmer{release: releaseExecutablePagesPaced, streams: streams, log: log, up: make(chan struct{}, 1)}
}

// sessionUp tells run that a session was welcomed; it never blocks.
func (t *trimmer) sessionUp() {
	select {
	case t.up <- struct{}{}:
	default:
	}
}

// run releases when told and when streams ended, until ctx is done.
func (t *trimmer) run(ctx context.Context) {
	tick := time.NewTicker(trimEvery)
	defer tick.Stop()
	served := t.streams.served.Load() // streams ended by the last release
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.up:
		case <-tick.C:
			if t.streams.active.Load() != 0 || t.streams.served.Load() == served {
				continue
			}
		}
		served = t.streams.served.Load()
		if n, err := t.release(); err != nil {
			t.log.Debug("release executable pages", "err", err)
		} else {
			t.log.Debug("released executable pages", "bytes", n)
		}
	}
}
