package relay

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"paradigm/internal/identity"
	"paradigm/internal/proto"
	"paradigm/internal/store"
)

// A relay whose store implements store.Cluster (etcd) is one of several:
// it registers itself as a member, records each of its playnodes' sessions
// as the playnode's home, and learns every other relay's members and homes
// through Join. The registry keeps what it learns (members, remote homes);
// the presence writer below makes this relay's claims; mesh.go forwards a
// connection to a playnode at home elsewhere one hop to its home relay.

// ReasonLeftRelay is the Reason of an EventDown of a playnode that was at
// home on another relay and is no longer (it stopped, moved, or that relay
// stopped or lost the store).
const ReasonLeftRelay = "left-relay"

// newSessionID names one session in the cluster's homes.
func newSessionID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// self is this relay as the other members see it.
func (r *Relay) self() store.Member {
	return store.Member{ID: r.cfg.Advertise, Addr: r.cfg.Advertise, HostKey: identity.PublicLine(r.hostKey.PublicKey(), "")}
}

// runCluster joins the cluster and applies what it reports until ctx ends.
func (r *Relay) runCluster(ctx context.Context) {
	ttl := 2 * r.cfg.Keepalive
	r.cluster.Join(ctx, r.self(), ttl, r.clusterChanged)
}

// clusterChanged applies one change Join reports. It runs on Join's
// goroutine and must not wait for the store: claims and refusals it causes
// are queued.
func (r *Relay) clusterChanged(c store.ClusterChange) {
	switch {
	case c.Reset != nil:
		gone, actions := r.reg.resetCluster(c.Reset)
		for _, id := range gone {
			r.mesh.drop(id)
		}
		r.homeActions(actions)
	case c.LeaseLost:
		r.presence.setLease(false)
	case c.Joined:
		r.presence.setLease(true)
		for _, s := range r.reg.sessions() {
			r.presence.claim(s)
		}
	case c.Member != nil:
		if changed := r.reg.setMember(*c.Member); changed {
			r.mesh.drop(c.Member.ID) // a new host key or address: redial
		}
	case c.MemberGone != "":
		r.reg.dropMember(c.MemberGone)
		r.mesh.drop(c.MemberGone)
	default:
		r.homeActions([]homeAction{r.reg.setHome(c.Playnode, c.Home)})
	}
}

// homeAction is what a change of homes asks of this relay for one of its
// own sessions or claims.
type homeAction struct {
	replaced *nodeSession // a newer session elsewhere: end this one
	by       store.Home
	reclaim  *nodeSession // its claim is gone or was overwritten by an older one: claim again
	stale    *store.Home  // a claim of this relay's id for a session it does not hold: release it
	playnode string
}

func (r *Relay) homeActions(as []homeAction) {
	for _, a := range as {
		switch {
		case a.replaced != nil:
			a.replaced.log.Info("session replaced by a newer one on another relay", "relay", a.by.Relay, "remote", a.by.Remote)
			a.replaced.refuse(&proto.Refuse{Code: proto.RefuseReplaced, Reason: "a newer session of this playnode connected to relay " + a.by.Relay})
		case a.reclaim != nil:
			r.presence.claim(a.reclaim)
		case a.stale != nil:
			r.presence.release(a.playnode, *a.stale, nil)
		}
	}
}

// presence writes this relay's claims and releases to the cluster, in the
// background, so that a session's start or end never waits for the store,
// and retries them while the store is unreachable. One op per playnode is
// kept, the newest: a release queued after a claim of the same session
// cancels it. Its mutex is a leaf.
type presence struct {
	cluster store.Cluster
	log     *slog.Logger
	lost    func(s *nodeSession, by store.Home) // a claim refused: a newer session is at home elsewhere
	changed func(ok bool, why string)           // healthy changed

	mu      sync.Mutex
	todo    map[string]presenceOp // by playnode
	healthy bool                  // the last write succeeded and the lease is held
	since   time.Time             // when healthy last changed
	why     string                // why not healthy
	kick    chan struct{}
}

type presenceOp struct {
	home    store.Home
	release bool
	s       *nodeSession // the session claimed for, nil for a release of a stale claim
}

// presenceWorkers bounds the claims written at once: after a relay dies,
// its playnodes arrive at the others by the thousand.
const presenceWorkers = 16

func newPresence(c store.Cluster, log *slog.Logger, lost func(*nodeSession, store.Home), changed func(bool, string)) *presence {
	return &presence{cluster: c, log: log, lost: lost, changed: changed, todo: map[string]presenceOp{}, kick: make(chan struct{}, 1), why: "not joined yet", since: time.Now()}
}

// claim queues a claim of s's home.
func (p *presence) claim(s *nodeSession) {
	if p == nil {
		return
	}
	p.queue(s.playnode, presenceOp{home: s.home, s: s})
}

// release queues the release of home h of playnode (s ended).
func (p *presence) release(playnode string, h store.Home, s *nodeSession) {
	if p == nil {
		return
	}
	p.mu.Lock()
	if op, ok := p.todo[playnode]; ok && !op.release && op.home.Session != h.Session {
		p.mu.Unlock() // a newer session's claim is queued: it replaces h anyway
		return
	}
	p.mu.Unlock()
	p.queue(playnode, presenceOp{home: h, release: true, s: s})
}

func (p *presence) queue(playnode string, op presenceOp) {
	p.mu.Lock()
	p.todo[playnode] = op
	p.mu.Unlock()
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// setLease records whether Join holds a lease.
func (p *presence) setLease(held bool) {
	if p == nil {
		return
	}
	if held {
		p.setHealthy(true, "")
		return
	}
	p.setHealthy(false, "lease in the store lost: the other relays may show this relay's playnodes offline")
}

func (p *presence) setHealthy(ok bool, why string) {
	p.mu.Lock()
	changed := p.healthy != ok
	if changed {
		p.healthy, p.since = ok, time.Now()
	}
	p.why = why
	p.mu.Unlock()
	if !changed {
		return
	}
	p.changed(ok, why)
	if ok {
		p.log.Info("cluster store reachable: presence of this relay's playnodes is up to date")
	} else {
		p.log.Warn("cluster store unreachable: sessions and portaliases keep working; new portaliases, enrollments and takeovers across relays wait", "err", why)
	}
}

// state reports whether the cluster's view of this relay is current.
func (p *presence) state() (healthy bool, why string, since time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.healthy, p.why, p.since
}

// run writes queued ops until ctx ends, retrying failed ones with a pause
// that grows to five seconds.
func (p *presence) run(ctx context.Context) {
	var pause time.Duration
	for {
		var retry <-chan time.Time
		if pause > 0 {
			retry = time.After(pause)
		}
		select {
		case <-ctx.Done():
			return
		case <-p.kick:
		case <-retry:
		}
		p.mu.Lock()
		ops := p.todo
		p.todo = map[string]presenceOp{}
		p.mu.Unlock()
		if len(ops) == 0 {
			continue
		}
		failed := p.write(ctx, ops)
		if ctx.Err() != nil {
			return
		}
		if failed != nil {
			pause = min(max(2*pause, 250*time.Millisecond), 5*time.Second)
			p.setHealthy(false, failed.Error())
			continue
		}
		pause = 0
		p.setHealthy(true, "")
	}
}

// write performs ops, presenceWorkers at a time, and requeues those that
// failed (unless a newer op for the playnode was queued meanwhile); it
// returns one of the errors.
func (p *presence) write(ctx context.Context, ops map[string]presenceOp) error {
	var (
		wg     sync.WaitGroup
		sem    = make(chan struct{}, presenceWorkers)
		errMu  sync.Mutex
		failed error
	)
	for name, op := range ops {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			err := p.do(ctx, name, op)
			if err == nil {
				return
			}
			errMu.Lock()
			failed = err
			errMu.Unlock()
			p.mu.Lock()
			if _, newer := p.todo[name]; !newer {
				p.todo[name] = op
			}
			p.mu.Unlock()
		})
	}
	wg.Wait()
	return failed
}

func (p *presence) do(ctx context.Context, playnode string, op presenceOp) error {
	if op.release {
		return p.cluster.Release(ctx, playnode, op.home)
	}
	if op.s != nil && op.s.mux.Err() != nil {
		return nil // ended meanwhile: its release follows
	}
	held, ok, err := p.cluster.Claim(ctx, playnode, op.home)
	if err != nil {
		return err
	}
	if !ok {
		p.lost(op.s, held)
	}
	return nil
}

// resetCluster installs the whole cluster state: the members, and every
// home held elsewhere. It returns the members that are gone and what the
// change asks of this relay's own sessions and claims.
func (g *registry) resetCluster(all *store.ClusterState) (gone []string, actions []homeAction) {
	g.mu.Lock()
	keep := map[string]bool{}
	for _, m := range all.Members {
		keep[m.ID] = true
	}
	for id := range g.members {
		if !keep[id] {
			gone = append(gone, id)
		}
	}
	g.members = map[string]store.Member{}
	g.memberKeys = map[string]string{}
	for _, m := range all.Members {
		g.addMemberLocked(m)
	}
	var names []string
	for name, p := range g.playnodes {
		if _, ok := all.Homes[name]; !ok && (p.home != nil || p.session != nil) {
			names = append(names, name)
		}
	}
	g.mu.Unlock()
	for _, name := range names {
		actions = append(actions, g.setHome(name, nil))
	}
	for name, h := range all.Homes {
		actions = append(actions, g.setHome(name, &h))
	}
	return gone, actions
}

// setMember records a member; changed when it replaced a different record
// of the same id.
func (g *registry) setMember(m store.Member) (changed bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	old, had := g.members[m.ID]
	if had {
		g.dropMemberLocked(m.ID)
	}
	g.addMemberLocked(m)
	return had && old != m
}

func (g *registry) dropMember(id string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.dropMemberLocked(id)
}

func (g *registry) addMemberLocked(m store.Member) {
	if g.members == nil {
		g.members, g.memberKeys = map[string]store.Member{}, map[string]string{}
	}
	g.members[m.ID] = m
	if key, err := parseMemberKey(m.HostKey); err == nil {
		g.memberKeys[string(key.Marshal())] = m.ID
	}
}

func (g *registry) dropMemberLocked(id string) {
	m, ok := g.members[id]
	if !ok {
		return
	}
	delete(g.members, id)
	if key, err := parseMemberKey(m.HostKey); err == nil && g.memberKeys[string(key.Marshal())] == id {
		delete(g.memberKeys, string(key.Marshal()))
		// Relays sharing one host key: another member may hold it still.
		for _, o := range g.members {
			if o.HostKey == m.HostKey {
				g.memberKeys[string(key.Marshal())] = o.ID
			}
		}
	}
}

// memberIDs lists the members' ids, sorted.
func (g *registry) memberIDs() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Sorted(maps.Keys(g.members))
}

// member returns the member a relay's host key belongs to.
func (g *registry) member(key []byte) (store.Member, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	id, ok := g.memberKeys[string(key)]
	if !ok {
		return store.Member{}, false
	}
	return g.members[id], true
}

// setHome records where playnode is at home now (nil: nowhere), as the
// cluster reports it, queueing the events of a remote playnode coming or
// going, and says what it asks of this relay's own session of playnode.
func (g *registry) setHome(playnode string, h *store.Home) homeAction {
	defer g.publish()
	g.mu.Lock()
	defer g.mu.Unlock()
	act := homeAction{playnode: playnode}
	p := g.playnodes[playnode]
	if p == nil && h == nil {
		return act
	}
	p = g.record(playnode)
	local := p.session
	old := p.home
	now := g.now()
	switch {
	case h == nil:
		p.home = nil
		if local != nil {
			act.reclaim = local // our claim vanished (lease lost): the session is alive
		}
	case h.Relay == g.self && local != nil && local.home.Session == h.Session:
		p.home = nil // our own claim, back to us
	case h.Relay == g.self:
		// This relay's id with a session it does not hold (a previous run
		// of this relay, whose lease lives on for a while).
		p.home = nil
		if local != nil && !h.Newer(local.home) {
			act.reclaim = local
		} else if local == nil {
			act.stale = h
		}
	case local != nil && !h.Newer(local.home):
		// An older session elsewhere overwrote ours: put ours back.
		p.home = nil
		act.reclaim = local
	default:
		p.home = h
		if local != nil {
			act.replaced, act.by = local, *h
		}
	}
	if old != nil && (p.home == nil || p.home.Session != old.Session) {
		p.lastSeen = now
		g.queue(Event{Kind: EventDown, Playnode: playnode, Relay: old.Relay, Transport: old.Transport, Remote: old.Remote, Reason: ReasonLeftRelay, Time: now})
	}
	if p.home != nil && (old == nil || old.Session != p.home.Session) {
		nh := p.home
		p.fingerprint, p.transport, p.remote, p.client = nh.Fingerprint, nh.Transport, nh.Remote, nh.Client
		p.connected, p.lastSeen = nh.Since, now
		p.registered = map[string]bool{}
		for _, svc := range nh.Services {
			p.registered[svc] = true
		}
		g.queue(Event{Kind: EventUp, Playnode: playnode, Relay: nh.Relay, Transport: nh.Transport, Remote: nh.Remote,
			Fingerprint: nh.Fingerprint, ClientVersion: nh.Client, Time: now})
	}
	return act
}

// parseMemberKey parses a member's host key line, as its relay wrote it.
func parseMemberKey(line string) (ssh.PublicKey, error) {
	key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		return nil, err
	}
	return key, identity.CheckEd25519(key)
}

// clusterState is the cluster part of a Snapshot; nil when alone.
func (r *Relay) clusterState() *ClusterState {
	if r.cluster == nil {
		return nil
	}
	ok, why, since := r.presence.state()
	return &ClusterState{ID: r.cfg.Advertise, Members: r.reg.memberIDs(), StoreOK: ok, StoreError: why, Since: since}
}

// ClusterID is this relay's id in its cluster, "" when it runs alone.
func (r *Relay) ClusterID() string {
	if r.cluster == nil {
		return ""
	}
	return r.cfg.Advertise
}

// clusterStore records that the shared store became reachable (ok) or not.
func (g *registry) clusterStore(ok bool, why string) {
	defer g.publish()
	g.mu.Lock()
	defer g.mu.Unlock()
	if ok {
		why = ""
	}
	g.queue(Event{Kind: EventClusterStore, Reason: why})
}
