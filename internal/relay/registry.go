package relay

import (
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"paradigm/internal/identity"
	"paradigm/internal/proto"
	"paradigm/internal/store"
)

// registry is the one owner of the relay's live state: which playnodes are
// online and through which session, what is known of every playnode (its
// last session, its counters), the authorized keys, the portalias
// assignments as last committed, and the listener bound on each portalias.
// Every change goes through one of its methods, which queues the Events
// describing it; they are published after the lock is released, in the
// order of the changes.
//
// Lock order: Relay.applyMu -> registry.mu -> eventBus.mu. registry.mu
// guards memory only: nothing under it blocks, writes to the network or to
// a file, or binds a port. Counters are atomics, read without the lock.
type registry struct {
	now func() time.Time

	pubMu sync.Mutex // held while draining outbox into bus, so publication keeps queue order
	bus   eventBus

	mu         sync.Mutex
	closing    bool // shutdown began: adopt no listener, register no session
	auth       *authorizedSet
	table      *store.Table
	playnodes  map[string]*playnode
	listeners  map[uint16]*portListener
	reserved   map[uint16]bool      // bound by an assignment in progress, not yet in table
	bindFailed map[uint16]string    // assigned portaliases that could not be bound, with why
	busyPorts  map[uint16]time.Time // free in the table but held by another program, since
	outbox     []Event
	pending    map[string]*pendingConn // by node key: the connection waiting for its hello

	// The cluster, when the store is shared (cluster.go): this relay's id,
	// the members by id and by host key. Empty when the relay is alone.
	self       string
	members    map[string]store.Member
	memberKeys map[string]string // marshalled host key -> member id

	counters counters
}

// playnode is what the relay knows of one playnode, online or not. Its
// services' counters outlive sessions, so that bytes and connections add up
// over reconnects.
type playnode struct {
	name     string
	session  *nodeSession // nil while offline here
	home     *store.Home  // its session on another relay of the cluster, if any (and none here)
	services map[string]*serviceStats

	// The last session's facts, kept while offline.
	fingerprint, transport, remote, client string
	connected, lastSeen                    time.Time
	registered                             map[string]bool // the services its last hello registered

	// New portaliases given to it in the current window (assignWindow),
	// bounded by Config.MaxPortaliasesPerNode.
	assignedSince time.Time
	assignedCount int
}

// serviceStats counts one service's forwarded connections. The forwarding
// goroutines update it without a lock.
type serviceStats struct {
	name     string
	port     atomic.Uint32 // service port on the device, as the last hello said
	open     atomic.Int64
	total    atomic.Uint64
	toNode   atomic.Uint64 // bytes from portalias clients to the playnode
	fromNode atomic.Uint64 // bytes from the playnode to portalias clients
}

// counters are relay-wide totals since start.
type counters struct {
	handshakes       atomic.Uint64 // transport handshakes begun
	handshakeFailed  atomic.Uint64 // ... that failed (timeout, bad key, protocol)
	probes           atomic.Uint64 // ... that authenticated and hung up before a hello (a node's failover probe)
	authFailed       atomic.Uint64 // unknown or revoked keys
	sessionsReplaced atomic.Uint64
	connsRefused     atomic.Uint64 // portalias connections closed at once (offline, limits)
	forwarded        atomic.Uint64
	refusedMu        sync.Mutex
	refused          map[string]uint64 // hellos refused, by code
}

func (c *counters) refusal(code string) {
	c.refusedMu.Lock()
	defer c.refusedMu.Unlock()
	if c.refused == nil {
		c.refused = map[string]uint64{}
	}
	c.refused[code]++
}

func newRegistry(auth *authorizedSet, table *store.Table) *registry {
	return &registry{
		now:        time.Now,
		auth:       auth,
		table:      table,
		playnodes:  map[string]*playnode{},
		listeners:  map[uint16]*portListener{},
		reserved:   map[uint16]bool{},
		bindFailed: map[uint16]string{},
		busyPorts:  map[uint16]time.Time{},
	}
}

// queue records an event; mu is held.
func (g *registry) queue(e Event) {
	if e.Time.IsZero() {
		e.Time = g.now()
	}
	g.outbox = append(g.outbox, e)
}

// publish delivers the queued events. Every method that changes state calls
// it after unlocking mu.
func (g *registry) publish() {
	g.pubMu.Lock()
	defer g.pubMu.Unlock()
	g.mu.Lock()
	evs := g.outbox
	g.outbox = nil
	g.mu.Unlock()
	g.bus.publish(evs)
}

// record returns the playnode's record, creating it; mu is held.
func (g *registry) record(name string) *playnode {
	p := g.playnodes[name]
	if p == nil {
		p = &playnode{name: name, services: map[string]*serviceStats{}}
		g.playnodes[name] = p
	}
	return p
}

// stats returns the counters of a playnode's service, creating them; mu is
// held.
func (p *playnode) stats(service string) *serviceStats {
	st := p.services[service]
	if st == nil {
		st = &serviceStats{name: service}
		p.services[service] = st
	}
	return st
}

// authorized reports the playnode key is bound to.
func (g *registry) authorized(key []byte) (string, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	n, ok := g.auth.byKey[string(key)]
	return n.playnode, ok
}

// up makes s its playnode's session. An older session is returned for the
// caller to end (it is already replaced here); ok is false, changing
// nothing, when the key was revoked since it authenticated or the relay is
// closing.
func (g *registry) up(s *nodeSession, portaliases []proto.Portalias) (old *nodeSession, ok bool) {
	defer g.publish()
	g.mu.Lock()
	defer g.mu.Unlock()
	if n, found := g.auth.byKey[string(s.key.Marshal())]; !found || n.playnode != s.playnode || g.closing {
		return nil, false
	}
	p := g.record(s.playnode)
	now := g.now()
	if old = p.session; old != nil {
		g.counters.sessionsReplaced.Add(1)
		g.queue(Event{Kind: EventDown, Playnode: p.name, Relay: g.self, Transport: p.transport, Remote: p.remote, Reason: ReasonReplaced, Time: now})
	}
	p.session, p.home = s, nil
	p.fingerprint = identity.Fingerprint(s.key)
	p.transport, p.remote, p.client = s.transport, s.mux.RemoteAddr().String(), s.client
	if g.self != "" {
		s.home = store.Home{Relay: g.self, Session: newSessionID(), Since: now, Transport: p.transport, Remote: p.remote,
			Fingerprint: p.fingerprint, Client: p.client, Services: slices.Sorted(maps.Keys(s.services))}
	}
	p.connected, p.lastSeen = now, now
	s.stats = map[string]*serviceStats{}
	p.registered = map[string]bool{}
	for name, svc := range s.services {
		p.registered[name] = true
		st := p.stats(name)
		st.port.Store(uint32(svc.Port))
		s.stats[name] = st
	}
	ports := make(map[string]uint16, len(portaliases))
	for _, pa := range portaliases {
		ports[pa.Service] = pa.Portalias
	}
	g.queue(Event{Kind: EventUp, Playnode: p.name, Relay: g.self, Transport: p.transport, Remote: p.remote, Fingerprint: p.fingerprint,
		ClientVersion: p.client, Portaliases: ports, Time: now})
	return old, true
}

// down records the end of s, unless a newer session replaced it already.
func (g *registry) down(s *nodeSession, reason string) {
	defer g.publish()
	g.mu.Lock()
	defer g.mu.Unlock()
	p := g.playnodes[s.playnode]
	if p == nil || p.session != s {
		return
	}
	p.session = nil
	p.lastSeen = g.now()
	g.queue(Event{Kind: EventDown, Playnode: p.name, Relay: g.self, Transport: p.transport, Remote: p.remote, Reason: reason, Time: p.lastSeen})
}

// session returns the online session of playnode, if any.
func (g *registry) session(playnode string) *nodeSession {
	g.mu.Lock()
	defer g.mu.Unlock()
	if p := g.playnodes[playnode]; p != nil {
		return p.session
	}
	return nil
}

// sessions returns every online session.
func (g *registry) sessions() []*nodeSession {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []*nodeSession
	for _, p := range g.playnodes {
		if p.session != nil {
			out = append(out, p.session)
		}
	}
	return out
}

// setAuth installs a new authorized-nodes set and returns the sessions whose
// key it no longer binds to their playnode, for the caller to end.
func (g *registry) setAuth(set *authorizedSet) (revoked []*nodeSession) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.auth = set
	for _, p := range g.playnodes {
		s := p.session
		if s == nil {
			continue
		}
		if n, ok := set.byKey[string(s.key.Marshal())]; !ok || n.playnode != s.playnode {
			revoked = append(revoked, s)
		}
	}
	return revoked
}

// assignWindow is the window of the per-playnode rate limit on new
// portaliases: at most MaxPortaliasesPerNode new ones per window, so a
// playnode (or a stolen key) that keeps registering new service names
// cannot churn through the port range.
const assignWindow = time.Hour

// takeAssignments reserves up to n new portaliases for playnode within
// both bounds: stored assignments at most limit (owned counts those it has
// now), and new ones at most limit per assignWindow. It returns how many
// may be assigned and queues an EventPortaliasLimit when that is fewer
// than n.
func (g *registry) takeAssignments(playnode string, n, owned, limit int) int {
	defer g.publish()
	g.mu.Lock()
	defer g.mu.Unlock()
	p := g.record(playnode)
	now := g.now()
	if now.Sub(p.assignedSince) >= assignWindow {
		p.assignedSince, p.assignedCount = now, 0
	}
	allowed := min(n, max(0, limit-owned), max(0, limit-p.assignedCount))
	p.assignedCount += allowed
	if allowed < n {
		reason := "stored"
		if limit-owned >= n {
			reason = "rate"
		}
		g.queue(Event{Kind: EventPortaliasLimit, Playnode: playnode, Reason: reason})
	}
	return allowed
}

// giveBack returns reserved assignments that were not made.
func (g *registry) giveBack(playnode string, n int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if p := g.playnodes[playnode]; p != nil {
		p.assignedCount = max(0, p.assignedCount-n)
	}
}

// pendingConn is a connection waiting for its hello.
type pendingConn struct {
	started time.Time // when its handshake began: the newer connection wins
	close   func()
}

// beginPending records a connection of key waiting for its hello, which
// began at started, and ends the other one recorded for key, if any: one
// per key at a time. Which one ends is decided by when each began, not by
// which gets here first (two handshakes of one key can finish in either
// order): an older connection arriving late ends itself. done forgets it.
func (g *registry) beginPending(key string, started time.Time, closeConn func()) (done func()) {
	p := &pendingConn{started: started, close: closeConn}
	g.mu.Lock()
	if g.pending == nil {
		g.pending = map[string]*pendingConn{}
	}
	loser := g.pending[key]
	if loser != nil && loser.started.After(started) {
		loser = p // a newer one is waiting already
	} else {
		g.pending[key] = p
	}
	g.mu.Unlock()
	if loser != nil {
		loser.close()
	}
	return func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		if g.pending[key] == p {
			delete(g.pending, key)
		}
	}
}

// refused records a refused hello.
func (g *registry) refused(playnode, remote, transport, code string) {
	g.counters.refusal(code)
	defer g.publish()
	g.mu.Lock()
	defer g.mu.Unlock()
	g.queue(Event{Kind: EventRefused, Playnode: playnode, Remote: remote, Transport: transport, Reason: code})
}

// restore seeds the records of playnodes seen before this relay started,
// from the status file. Called once, before Run.
func (g *registry) restore(doc statusDoc) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for name, st := range doc.Playnodes {
		p := g.record(name)
		p.fingerprint, p.transport, p.remote, p.client = st.Fingerprint, st.Transport, st.Remote, st.ClientVersion
		p.connected, p.lastSeen = st.Connected, st.LastSeen
		for svc, port := range st.Services {
			p.stats(svc).port.Store(uint32(port))
		}
		if st.Registered != nil {
			p.registered = map[string]bool{}
			for _, svc := range st.Registered {
				p.registered[svc] = true
			}
		}
	}
}

// currentTable is the assignment table last applied.
func (g *registry) currentTable() *store.Table {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.table
}

// target is where a connection to a portalias goes: the playnode's
// session on this relay, or its home relay in the cluster (via), one hop.
// st counts the service's connections either way.
type target struct {
	local    *nodeSession
	via      store.Member
	playnode string
	st       *serviceStats
}

// route returns where a connection to portalias listener l goes; ok is
// false when its playnode is offline (here and elsewhere), did not
// register that service, or l is no longer the port's listener.
func (g *registry) route(l *portListener) (t target, ok bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	a, assigned := g.table.Owner(l.port)
	if !assigned || g.listeners[l.port] != l {
		return t, false
	}
	p := g.playnodes[a.Playnode]
	if p == nil {
		return t, false
	}
	t.playnode = a.Playnode
	if p.session != nil {
		t.local, t.st = p.session, p.session.stats[a.Service]
		return t, t.st != nil // nil: a service this session did not register
	}
	if p.home == nil || !slices.Contains(p.home.Services, a.Service) {
		return t, false
	}
	m, known := g.members[p.home.Relay]
	if !known {
		return t, false
	}
	t.via, t.st = m, p.stats(a.Service)
	return t, true
}

// portaliasesOf lists the table's portaliases for the given services,
// sorted by service name so that equal assignments compare equal.
func portaliasesOf(t *store.Table, playnode string, services map[string]proto.Service) []proto.Portalias {
	var out []proto.Portalias
	for name := range services {
		if port, ok := t.Lookup(playnode, name); ok {
			out = append(out, proto.Portalias{Service: name, Portalias: port})
		}
	}
	slices.SortFunc(out, func(a, b proto.Portalias) int { return strings.Compare(a.Service, b.Service) })
	return out
}

// closeAll marks the registry closing and hands back every listener and
// session for the caller to close and end.
func (g *registry) closeAll() ([]*portListener, []*nodeSession) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closing = true
	ls := slices.Collect(maps.Values(g.listeners))
	clear(g.listeners)
	var ss []*nodeSession
	for _, p := range g.playnodes {
		if p.session != nil {
			ss = append(ss, p.session)
		}
	}
	return ls, ss
}

// isClosing reports whether shutdown began.
func (g *registry) isClosing() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.closing
}
