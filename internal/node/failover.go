package node

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"
)

// Failover between relays, in the order the operator listed them.
//
// The relays form a ring of candidates: each listed HOST:PORT, its HOST
// resolved again before every attempt, gives one candidate per address (at
// most MaxRelayAddrs), in the resolver's order. The node tries one
// candidate at a time:
//
//   - A failed attempt (dial, handshake, host key, refusal, a name that
//     does not resolve) on candidate i is followed at once by candidate
//     i+1, wrapping around to the first. Once every candidate failed since
//     the round began (or as many failures as candidates, should DNS give
//     new addresses every time), the round is over: the node waits one
//     backoff step (from 0.5 s doubling to BackoffMax, jittered in
//     [d/2, d]; RefusedRetry instead when every failure of the round was a
//     refusal only the relay operator can lift) and starts the next round
//     at the first candidate.
//   - A session that was welcomed and then ended (dead link, relay closed,
//     replaced) is followed, after one backoff step as with a single relay,
//     by an attempt on the next candidate; a new round begins there. A
//     session that lasted stableSession resets both backoffs first.
//   - Connected to a candidate that is not the first, the node probes the
//     earlier ones, in order, every PreferFirstAfter (dial and handshake,
//     no hello); the first that answers is dialled at once after the
//     session is closed.
//
// With one relay this is exactly the single relay's backoff.

// MaxRelays bounds the relays a node is given; MaxRelayAddrs the addresses
// one relay name may add, so that a DNS answer cannot make one round of
// attempts long.
const (
	MaxRelays     = 16
	MaxRelayAddrs = 8
)

// candidate is one relay address to try.
type candidate struct {
	entry int    // index in Config.Relays
	name  string // HOST:PORT as configured: host keys are checked under it
	addr  string // IP:PORT dialled (name when HOST is an address)
	err   error  // why name did not resolve; the attempt fails with it
}

type candidateKey struct{ name, addr string }

func (c candidate) key() candidateKey { return candidateKey{c.name, c.addr} }

// candidates resolves every relay, all at once, and returns them in order:
// never empty, a relay that does not resolve stands as one candidate
// carrying the error.
func (n *Node) candidates(ctx context.Context) []candidate {
	each := make([][]candidate, len(n.cfg.Relays))
	var wg sync.WaitGroup
	for i, name := range n.cfg.Relays {
		wg.Go(func() { each[i] = n.resolve(ctx, i, name) })
	}
	wg.Wait()
	return slices.Concat(each...)
}

func (n *Node) resolve(ctx context.Context, entry int, name string) []candidate {
	host, port, _ := net.SplitHostPort(name) // checked by setRelays
	if net.ParseIP(host) != nil {
		return []candidate{{entry: entry, name: name, addr: name}}
	}
	ctx, cancel := context.WithTimeout(ctx, n.cfg.HandshakeTimeout)
	defer cancel()
	addrs, err := n.cfg.LookupHost(ctx, host)
	if err == nil && len(addrs) == 0 {
		err = fmt.Errorf("no address")
	}
	if err != nil {
		return []candidate{{entry: entry, name: name, addr: name, err: fmt.Errorf("resolve relay %s: %w", name, err)}}
	}
	var out []candidate
	seen := map[string]bool{}
	for _, a := range addrs {
		if seen[a] || net.ParseIP(a) == nil || len(out) == MaxRelayAddrs {
			continue
		}
		seen[a] = true
		out = append(out, candidate{entry: entry, name: name, addr: net.JoinHostPort(a, port)})
	}
	if len(out) == 0 {
		return []candidate{{entry: entry, name: name, addr: name, err: fmt.Errorf("resolve relay %s: no IP address in %q", name, addrs)}}
	}
	return out
}

// attemptResult is how one attempt on a candidate ended.
type attemptResult struct {
	welcomed bool       // the relay accepted the hello: a session ran
	stable   bool       // and it lasted stableSession
	slow     bool       // refused for a reason only the relay operator can lift
	moveTo   *candidate // the session was ended to move back to this one
}

// rotation decides which candidate the node tries next and how long it
// waits first. It is owned by Run's goroutine.
type rotation struct {
	b, refused backoff
	cur        candidateKey // the candidate tried last
	curEntry   int
	started    bool // cur is set
	fromFirst  bool // the next attempt starts a round at the first candidate
	moveTo     *candidate
	tried      map[candidateKey]bool // failed in this round
	allSlow    bool                  // every failure in this round was slow
}

func newRotation(backoffMax, refusedRetry time.Duration) *rotation {
	return &rotation{b: backoff{max: backoffMax}, refused: backoff{max: refusedRetry},
		tried: map[candidateKey]bool{}, allSlow: true}
}

// pick returns the index in cands of the candidate to try now.
func (r *rotation) pick(cands []candidate) int {
	if r.moveTo != nil {
		to := r.moveTo.key()
		r.moveTo = nil
		if i := slices.IndexFunc(cands, func(c candidate) bool { return c.key() == to }); i >= 0 {
			return i
		}
	}
	if !r.started || r.fromFirst {
		r.fromFirst = false
		return 0
	}
	if i := slices.IndexFunc(cands, func(c candidate) bool { return c.key() == r.cur }); i >= 0 {
		return (i + 1) % len(cands)
	}
	// The address tried last is gone from DNS: go on with the next relay.
	if i := slices.IndexFunc(cands, func(c candidate) bool { return c.entry > r.curEntry }); i >= 0 {
		return i
	}
	return 0
}

// done records the end of an attempt on cands[i] and returns how long to
// wait before the next one, and whether that wait ends a round of
// failures.
func (r *rotation) done(cands []candidate, i int, res attemptResult) (wait time.Duration, roundOver bool) {
	c := cands[i]
	r.cur, r.curEntry, r.started = c.key(), c.entry, true
	if res.welcomed {
		clear(r.tried)
		r.allSlow = true
		if res.stable {
			r.b.reset()
			r.refused.reset()
		}
		if res.moveTo != nil {
			r.moveTo = res.moveTo
			return 0, false
		}
		return r.step(res.slow), false
	}
	r.tried[c.key()] = true
	r.allSlow = r.allSlow && res.slow
	// As many failures as there are candidates end a round too, should
	// DNS answer with new addresses every time.
	if !r.tried[cands[(i+1)%len(cands)].key()] && len(r.tried) < len(cands) {
		return 0, false
	}
	wait = r.step(r.allSlow)
	clear(r.tried)
	r.allSlow = true
	r.fromFirst = true
	return wait, true
}

// step is one backoff step: the slow one while only refusals were met.
func (r *rotation) step(slow bool) time.Duration {
	if slow {
		return r.refused.next()
	}
	r.refused.reset()
	return r.b.next()
}

// preferFirst probes, every interval, the candidates earlier returns (those
// before the one the node is connected to), in order, and returns the
// first that answers probe. It returns false when ctx ends first. At most
// one round of probes runs per interval, each bounded by probe's own
// timeout.
func preferFirst(ctx context.Context, interval time.Duration, earlier func() []candidate, probe func(context.Context, candidate) error) (candidate, bool) {
	t := time.NewTimer(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return candidate{}, false
		case <-t.C:
		}
		for _, c := range earlier() {
			if ctx.Err() != nil {
				return candidate{}, false
			}
			if probe(ctx, c) == nil {
				return c, true
			}
		}
		t.Reset(interval)
	}
}

// earlierThan returns the candidates before cur, resolved afresh.
func (n *Node) earlierThan(ctx context.Context, cur candidate) []candidate {
	cands := n.candidates(ctx)
	i := slices.IndexFunc(cands, func(c candidate) bool { return c.key() == cur.key() })
	if i < 0 {
		i = slices.IndexFunc(cands, func(c candidate) bool { return c.entry >= cur.entry })
	}
	if i < 0 {
		return cands
	}
	return cands[:i]
}

// probe dials c and completes the transport handshake (host key and node
// key), then closes: no hello, so the relay registers nothing.
func (n *Node) probe(ctx context.Context, c candidate) error {
	if c.err != nil {
		return c.err
	}
	ctx, cancel := context.WithTimeout(ctx, n.cfg.HandshakeTimeout)
	defer cancel()
	s, _, err := n.dial(ctx, c)
	if err != nil {
		n.log.Debug("preferred relay probe failed", "relay", c.name, "remote", c.addr, "err", err)
		return err
	}
	s.Close()
	return nil
}

// errMoveBack ends a session to move to an earlier relay that answered.
type errMoveBack struct{ to candidate }

func (e *errMoveBack) Error() string {
	return fmt.Sprintf("moving back to preferred relay %s (%s), which answers again", e.to.name, e.to.addr)
}
