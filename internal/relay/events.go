package relay

import (
	"sync"
	"time"
)

// EventKind names what changed.
type EventKind string

// The kinds of Event. Each is published once, by the registry, after the
// change it reports is visible in Snapshot.
const (
	// EventUp: a session of Playnode started (Transport, Remote,
	// Fingerprint, ClientVersion set). A session that replaces an older
	// one is an EventDown of the old (ReasonReplaced) then an EventUp.
	EventUp EventKind = "up"
	// EventDown: Playnode's session ended; Reason says why.
	EventDown EventKind = "down"
	// EventPortaliasAssigned: Service of Playnode got Portalias.
	EventPortaliasAssigned EventKind = "portalias-assigned"
	// EventPortaliasMoved: Service of Playnode moved from From to
	// Portalias (alias set, a hand edit).
	EventPortaliasMoved EventKind = "portalias-moved"
	// EventPortaliasRemoved: Service of Playnode lost Portalias.
	EventPortaliasRemoved EventKind = "portalias-removed"
	// EventPortaliasBindFailed: Portalias could not be bound (Reason); the
	// relay retries every reload interval.
	EventPortaliasBindFailed EventKind = "portalias-bind-failed"
	// EventPortaliasBound: a Portalias that had failed to bind is bound.
	EventPortaliasBound EventKind = "portalias-bound"
	// EventPortaliasLimit: Playnode asked for more new portaliases than
	// MaxPortaliasesPerNode allows (Reason "stored": it holds that many;
	// "rate": it was given that many in the last hour); the excess
	// services got none.
	EventPortaliasLimit EventKind = "portalias-limit"
	// EventRefused: a playnode that had authenticated was refused
	// (Reason is the refusal code; Playnode and Remote set).
	EventRefused EventKind = "refused"
	// EventEnrolled: a new key was bound to Playnode with an enrollment
	// token (Reason is the token's id; Remote, Fingerprint set).
	EventEnrolled EventKind = "enrolled"
	// EventEnrollPending: an enrollment waits in the pending list for the
	// operator (Reason is the token's id).
	EventEnrollPending EventKind = "enroll-pending"
	// EventEnrollRefused: an enrollment was refused (Reason is the refusal
	// code: token, name-taken, rejected, rate, protocol).
	EventEnrollRefused EventKind = "enroll-refused"
	// EventClusterStore: the shared store of a cluster became unreachable
	// (Reason says why) or reachable again (Reason empty).
	EventClusterStore EventKind = "cluster-store"
	// EventLost: this subscriber fell behind and missed Missed events;
	// its view must be rebuilt from a Snapshot.
	EventLost EventKind = "lost"
)

// Reasons of an EventDown.
const (
	// ReasonStopped: the node ended the connection itself: it stopped or
	// restarted, or its process died and the device's kernel closed it
	// (not a broken link, which is ReasonLinkLost).
	ReasonStopped = "node-stopped"
	// ReasonLinkLost: the link went silent or broke (keepalive timeout,
	// connection reset).
	ReasonLinkLost = "link-lost"
	// ReasonReplaced: a newer session of the same playnode took over.
	ReasonReplaced = "replaced"
	// ReasonRevoked: the playnode's key was removed from authorized_nodes.
	ReasonRevoked = "revoked"
	// ReasonShutdown: the relay is stopping.
	ReasonShutdown = "shutdown"
)

// Event is one change of the relay's live state. Fields that do not apply
// to the Kind are zero.
type Event struct {
	Seq      uint64    `json:"seq"` // 1, 2, ... in publication order; 0 for EventLost
	Time     time.Time `json:"time"`
	Kind     EventKind `json:"kind"`
	Playnode string    `json:"playnode,omitempty"`
	// Relay is the relay of the cluster the playnode's session is on, for
	// an EventUp or EventDown; empty when the relay runs alone.
	Relay         string `json:"relay,omitempty"`
	Service       string `json:"service,omitempty"`
	Portalias     uint16 `json:"portalias,omitempty"`
	From          uint16 `json:"from,omitempty"` // EventPortaliasMoved: the old portalias
	Transport     string `json:"transport,omitempty"`
	Remote        string `json:"remote,omitempty"`
	Fingerprint   string `json:"fingerprint,omitempty"`
	ClientVersion string `json:"client_version,omitempty"`
	Reason        string `json:"reason,omitempty"`
	// Portaliases of an EventUp: the portalias of each service the
	// session registered.
	Portaliases map[string]uint16 `json:"portaliases,omitempty"`
	Missed      uint64            `json:"missed,omitempty"` // EventLost
}

// Subscription receives events from the relay. C never blocks the relay:
// when its buffer is full, events are dropped and counted, and the next one
// that fits is preceded by an EventLost saying how many were missed.
type Subscription struct {
	C   <-chan Event
	c   chan Event
	bus *eventBus

	missed uint64 // guarded by bus.mu
}

// Close ends the subscription; C is closed. Idempotent.
func (s *Subscription) Close() { s.bus.unsubscribe(s) }

// eventBus fans published events out to subscribers. Its mutex is a leaf:
// nothing else is locked while it is held, and nothing under it blocks
// (sends are non-blocking).
type eventBus struct {
	mu     sync.Mutex
	seq    uint64
	subs   map[*Subscription]struct{}
	closed bool
}

// subscribe returns a subscription with a buffer of n events.
func (b *eventBus) subscribe(n int) *Subscription {
	c := make(chan Event, max(n, 2))
	s := &Subscription{C: c, c: c, bus: b}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		close(c)
		return s
	}
	if b.subs == nil {
		b.subs = map[*Subscription]struct{}{}
	}
	b.subs[s] = struct{}{}
	return s
}

func (b *eventBus) unsubscribe(s *Subscription) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.subs[s]; ok {
		delete(b.subs, s)
		close(s.c)
	}
}

// publish numbers evs and offers them to every subscriber, in order.
func (b *eventBus) publish(evs []Event) {
	if len(evs) == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, e := range evs {
		b.seq++
		e.Seq = b.seq
		for s := range b.subs {
			s.offer(e)
		}
	}
}

// offer sends e without blocking; bus.mu is held.
func (s *Subscription) offer(e Event) {
	if s.missed > 0 {
		select {
		case s.c <- Event{Time: e.Time, Kind: EventLost, Missed: s.missed}:
			s.missed = 0
		default:
			s.missed++
			return
		}
	}
	select {
	case s.c <- e:
	default:
		s.missed++
	}
}

// close ends every subscription: the relay stopped.
func (b *eventBus) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	for s := range b.subs {
		delete(b.subs, s)
		close(s.c)
	}
}
