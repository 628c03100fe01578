package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"paradigm/internal/node"
)

const (
	msgConnected    = "connected to relay"
	msgDisconnected = "disconnected from relay"
	// startInFlight bounds the simulated playnodes connecting at once at
	// the start, as tunnelbench's simulator does.
	startInFlight = 64
)

// simNode is one in-process playnode: node.New/Run with its own key, as
// paradigm-node runs one.
type simNode struct {
	p      *playnode
	relays []string // in order of preference
	up     atomic.Bool
	relay  atomic.Pointer[string] // the relay of its current or last session
	upAt   atomic.Int64           // UnixNano of its last "connected"
	cancel context.CancelFunc
	done   chan struct{}
}

// fleet owns the simulated playnodes' goroutines.
type fleet struct {
	s         *settings
	fps       []string // every relay's host key fingerprint
	connected atomic.Int64
	wg        sync.WaitGroup
}

// run starts n with relays (in preference order) and services at addrs.
func (f *fleet) run(ctx context.Context, n *simNode, relays []string, services []node.Service) error {
	// paradigm-node run --relay A --relay B --relay C --fingerprint ...
	// (each relay's), with the command's defaults.
	cfg := node.Config{
		Relays: relays, PreferFirstAfter: node.DefaultPreferFirstAfter,
		Fingerprint: f.fps[0], Fingerprints: f.fps[1:],
		KeyFile: n.p.keyFile, Name: n.p.name, Services: services,
		Keepalive: f.s.keepalive,
		Logger:    slog.New(&sessionHandler{f: f, n: n}),
	}
	nd, err := node.New(cfg)
	if err != nil {
		return err
	}
	n.relays = relays
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	n.cancel, n.done = cancel, done
	f.wg.Go(func() {
		defer close(done)
		nd.Run(ctx)
		if n.up.Swap(false) {
			f.connected.Add(-1)
		}
	})
	return nil
}

// stop ends n's Run and waits for it.
func (n *simNode) stop() {
	if n.cancel != nil {
		n.cancel()
		<-n.done
	}
}

// currentRelay is the relay of n's session, "" when it has none.
func (n *simNode) currentRelay() string {
	if !n.up.Load() {
		return ""
	}
	if r := n.relay.Load(); r != nil {
		return *r
	}
	return ""
}

// startAll starts every node, keeping at most startInFlight connecting,
// and gives up when they stop connecting for limit.
func (f *fleet) startAll(ctx context.Context, nodes []*simNode, relaysOf func(i int) []string, services []node.Service, limit time.Duration) error {
	var started int64
	for i, n := range nodes {
		if err := f.run(ctx, n, relaysOf(i), services); err != nil {
			return err
		}
		started++
		for since := time.Now(); started-f.connected.Load() > startInFlight; {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if time.Since(since) > limit {
				return fmt.Errorf("%d of %d playnodes started, only %d connected after %v (see the relays' logs)", started, len(nodes), f.connected.Load(), limit)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return nil
}

// sessionHandler follows one node's sessions through its log records:
// "connected to relay" (with the relay's address) and "disconnected from
// relay".
type sessionHandler struct {
	f *fleet
	n *simNode
}

func (h *sessionHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *sessionHandler) Handle(_ context.Context, r slog.Record) error {
	switch r.Message {
	case msgConnected:
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "relay" {
				v := a.Value.String()
				h.n.relay.Store(&v)
				return false
			}
			return true
		})
		h.n.upAt.Store(time.Now().UnixNano())
		if !h.n.up.Swap(true) {
			h.f.connected.Add(1)
		}
	case msgDisconnected:
		if h.n.up.Swap(false) {
			h.f.connected.Add(-1)
		}
	}
	return nil
}

func (h *sessionHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *sessionHandler) WithGroup(string) slog.Handler      { return h }
