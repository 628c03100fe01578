package relay

import (
	"maps"
	"slices"
	"strings"
	"time"
)

// Snapshot is a read-only copy of the relay's live state at one moment:
// every playnode the relay knows (online, offline with a portalias, or seen
// before), sorted by name, and the relay-wide counters. Nothing in it is
// shared with the relay.
type Snapshot struct {
	Time      time.Time       `json:"time"`
	Seq       uint64          `json:"seq"` // the last event published before it was taken
	Playnodes []PlaynodeState `json:"playnodes"`
	Counters  Counters        `json:"counters"`
	// Cluster is set when the relay is one of a cluster (a shared store).
	Cluster *ClusterState `json:"cluster,omitempty"`
}

// ClusterState is what a relay of a cluster knows of it.
type ClusterState struct {
	ID      string   `json:"id"`      // this relay's, its advertised address
	Members []string `json:"members"` // every relay that holds a lease now, this one included once joined
	// StoreOK: the shared store answers and this relay's presence there is
	// current. While not, sessions and portaliases keep working; new
	// portaliases, enrollments and takeovers across relays wait.
	StoreOK    bool      `json:"store_ok"`
	StoreError string    `json:"store_error,omitempty"`
	Since      time.Time `json:"since"` // when StoreOK last changed
}

// PlaynodeState is one playnode in a Snapshot.
type PlaynodeState struct {
	Name        string `json:"playnode"`
	Fingerprint string `json:"key_fingerprint,omitempty"`
	Online      bool   `json:"online"`
	// Relay is the relay of the cluster holding its session while online,
	// this one included; empty while offline or when the relay runs alone.
	Relay string `json:"relay,omitempty"`
	// Transport, Remote and ClientVersion are the current session's, or
	// the last one's while offline.
	Transport     string         `json:"transport,omitempty"`
	Remote        string         `json:"remote,omitempty"`
	ClientVersion string         `json:"client_version,omitempty"`
	Connected     time.Time      `json:"connected_since,omitzero"`
	LastSeen      time.Time      `json:"last_seen,omitzero"` // now while online
	Services      []ServiceState `json:"services"`
	// Registered lists the services the last hello registered, by name;
	// nil when the relay never saw one.
	Registered []string `json:"registered_services,omitempty"`
}

// Portalias states of a ServiceState.
const (
	StateOnline     = "online"      // bound, and the playnode serves it now
	StateOffline    = "offline"     // bound; the playnode is offline or did not register the service
	StateBindFailed = "bind-failed" // assigned, but the port could not be bound: unreachable
	StateUnassigned = "unassigned"  // registered by the online playnode, but it has no portalias
)

// ServiceState is one service of a playnode in a Snapshot.
type ServiceState struct {
	Name        string `json:"service"`
	ServicePort uint16 `json:"service_port,omitempty"` // on the device, as its last hello said
	Portalias   uint16 `json:"portalias,omitempty"`
	State       string `json:"state"`
	// Stale: assigned, but the playnode's last hello did not register
	// it (a renamed or removed service); `alias prune` removes these.
	Stale     bool   `json:"stale,omitempty"`
	BindError string `json:"bind_error,omitempty"`
	// Connections forwarded now and in all since the relay started, and
	// their bytes each way.
	OpenConns         int64  `json:"open_connections"`
	TotalConns        uint64 `json:"total_connections"`
	BytesToPlaynode   uint64 `json:"bytes_to_playnode"`
	BytesFromPlaynode uint64 `json:"bytes_from_playnode"`
}

// Counters are relay-wide totals since the relay started.
type Counters struct {
	Handshakes       uint64            `json:"handshakes"`
	HandshakeFailed  uint64            `json:"handshakes_failed"`
	Probes           uint64            `json:"probes"` // authenticated, then hung up before a hello: nodes checking this relay is up
	AuthFailed       uint64            `json:"auth_failed"`
	SessionsReplaced uint64            `json:"sessions_replaced"`
	Refused          map[string]uint64 `json:"refused"` // hellos refused, by refusal code
	ConnsRefused     uint64            `json:"connections_refused"`
	Forwarded        uint64            `json:"connections_forwarded"`
	BytesToPlaynodes uint64            `json:"bytes_to_playnodes"`
	BytesFromNodes   uint64            `json:"bytes_from_playnodes"`
	// PeerEvents counts what peers caused that the log rate-limits, by
	// reason (unauth-per-address, handshake-slots, handshake-failed,
	// unknown-key, refused, open-stream, service-unavailable).
	PeerEvents map[string]uint64 `json:"peer_events"`
}

// Snapshot returns the relay's live state now.
func (r *Relay) Snapshot() Snapshot {
	s := r.reg.snapshot()
	s.Counters.PeerEvents = r.throttle.Counts()
	s.Cluster = r.clusterState()
	return s
}

func (g *registry) snapshot() Snapshot {
	g.pubMu.Lock() // no event between the state and its Seq
	defer g.pubMu.Unlock()
	return g.snapshotLocked()
}

// snapshotLocked takes the snapshot; pubMu is held. Events of changes the
// snapshot already shows are published first, so that its Seq covers them.
func (g *registry) snapshotLocked() Snapshot {
	g.mu.Lock()
	pending := g.outbox
	g.outbox = nil
	now := g.now()
	snap := Snapshot{Time: now}
	byName := map[string]*PlaynodeState{}
	state := func(name string) *PlaynodeState {
		ps := byName[name]
		if ps == nil {
			ps = &PlaynodeState{Name: name}
			if p := g.playnodes[name]; p != nil {
				ps.Fingerprint, ps.Transport, ps.Remote, ps.ClientVersion = p.fingerprint, p.transport, p.remote, p.client
				ps.Connected, ps.LastSeen = p.connected, p.lastSeen
				if p.registered != nil {
					ps.Registered = slices.Sorted(maps.Keys(p.registered))
				}
				switch {
				case p.session != nil:
					ps.Online, ps.LastSeen, ps.Relay = true, now, g.self
				case p.home != nil:
					ps.Online, ps.LastSeen, ps.Relay = true, now, p.home.Relay
				}
			}
			byName[name] = ps
		}
		return ps
	}
	assigned := map[[2]string]bool{}
	for _, a := range g.table.All() {
		ps := state(a.Playnode)
		ss := ServiceState{Name: a.Service, Portalias: a.Portalias, State: StateOffline}
		assigned[[2]string{a.Playnode, a.Service}] = true
		if p := g.playnodes[a.Playnode]; p != nil {
			if st := p.services[a.Service]; st != nil {
				st.fill(&ss)
			}
			if s := p.session; s != nil && s.services[a.Service].Name != "" ||
				p.home != nil && slices.Contains(p.home.Services, a.Service) {
				ss.State = StateOnline
			}
			ss.Stale = p.registered != nil && !p.registered[a.Service]
		}
		if why, failed := g.bindFailed[a.Portalias]; failed {
			ss.State, ss.BindError = StateBindFailed, why
		}
		ps.Services = append(ps.Services, ss)
	}
	// Relay-wide bytes are the sum of the services' (records outlive
	// sessions): one counter less per forwarded buffer.
	var toNodes, fromNodes uint64
	for _, p := range g.playnodes {
		for _, st := range p.services {
			toNodes += st.toNode.Load()
			fromNodes += st.fromNode.Load()
		}
	}
	for name, p := range g.playnodes {
		ps := state(name)
		for svc, st := range p.services {
			if assigned[[2]string{name, svc}] {
				continue
			}
			if p.session == nil || p.session.services[svc].Name == "" {
				continue // a past service without a portalias: nothing to show
			}
			ss := ServiceState{Name: svc, State: StateUnassigned}
			st.fill(&ss)
			ps.Services = append(ps.Services, ss)
		}
	}
	g.mu.Unlock()
	g.bus.publish(pending)
	g.bus.mu.Lock()
	snap.Seq = g.bus.seq
	g.bus.mu.Unlock()

	for _, name := range slices.Sorted(maps.Keys(byName)) {
		ps := byName[name]
		slices.SortFunc(ps.Services, func(a, b ServiceState) int { return strings.Compare(a.Name, b.Name) })
		if ps.Services == nil {
			ps.Services = []ServiceState{}
		}
		snap.Playnodes = append(snap.Playnodes, *ps)
	}
	if snap.Playnodes == nil {
		snap.Playnodes = []PlaynodeState{}
	}
	snap.Counters = g.counters.read()
	snap.Counters.BytesToPlaynodes, snap.Counters.BytesFromNodes = toNodes, fromNodes
	return snap
}

func (st *serviceStats) fill(ss *ServiceState) {
	ss.ServicePort = uint16(st.port.Load())
	ss.OpenConns = st.open.Load()
	ss.TotalConns = st.total.Load()
	ss.BytesToPlaynode = st.toNode.Load()
	ss.BytesFromPlaynode = st.fromNode.Load()
}

func (c *counters) read() Counters {
	out := Counters{
		Handshakes:       c.handshakes.Load(),
		HandshakeFailed:  c.handshakeFailed.Load(),
		Probes:           c.probes.Load(),
		AuthFailed:       c.authFailed.Load(),
		SessionsReplaced: c.sessionsReplaced.Load(),
		ConnsRefused:     c.connsRefused.Load(),
		Forwarded:        c.forwarded.Load(),
	}
	c.refusedMu.Lock()
	out.Refused = maps.Clone(c.refused)
	c.refusedMu.Unlock()
	if out.Refused == nil {
		out.Refused = map[string]uint64{}
	}
	return out
}

// Playnode returns one playnode of the snapshot.
func (s Snapshot) Playnode(name string) (PlaynodeState, bool) {
	i, ok := slices.BinarySearchFunc(s.Playnodes, name, func(p PlaynodeState, n string) int { return strings.Compare(p.Name, n) })
	if !ok {
		return PlaynodeState{}, false
	}
	return s.Playnodes[i], true
}

// Subscribe returns a subscription to the relay's events with a buffer of
// n, and the state at the moment it started: the snapshot reflects every
// event up to snap.Seq, and the subscription receives every event after it,
// so a subscriber misses nothing between the two.
func (r *Relay) Subscribe(n int) (snap Snapshot, sub *Subscription) {
	g := r.reg
	g.pubMu.Lock()
	defer g.pubMu.Unlock()
	snap = g.snapshotLocked()
	snap.Counters.PeerEvents = r.throttle.Counts()
	snap.Cluster = r.clusterState()
	return snap, g.bus.subscribe(n)
}
