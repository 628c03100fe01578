package relay

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"time"

	"paradigm/internal/proto"
	"paradigm/internal/store"
)

// assign returns the playnode's portalias for each of its services, giving
// a new service the lowest free port of the range. Ports are bound before
// the store commits (a port another program holds is skipped, with a log
// line) and adopted after it: the store's update function only picks among
// them, so it can be re-run. Services that get no port (range exhausted)
// are left out and logged; the rest still work.
func (r *Relay) assign(ctx context.Context, s *nodeSession) ([]proto.Portalias, error) {
	missingIn := func(t *store.Table) []string { // by name: the lowest free port goes to the first
		var missing []string
		for _, name := range slices.Sorted(maps.Keys(s.services)) {
			if _, ok := t.Lookup(s.playnode, name); !ok {
				missing = append(missing, name)
			}
		}
		return missing
	}
	// A reconnect: every service has its portalias, nothing to write, and
	// no wait behind an assignment in progress (a slow or unreachable
	// shared store).
	if known := r.reg.currentTable(); len(missingIn(known)) == 0 {
		return portaliasesOf(known, s.playnode, s.services), nil
	}
	if err := r.applyMu.LockCtx(ctx); err != nil {
		if got := portaliasesOf(r.reg.currentTable(), s.playnode, s.services); len(got) > 0 {
			return got, nil
		}
		return nil, &proto.Refuse{Code: proto.RefusePorts, Reason: "new portaliases wait for the relay's store; try again later"}
	}
	defer r.applyMu.Unlock()
	known := r.reg.currentTable()
	missing := missingIn(known)
	if len(missing) == 0 {
		return portaliasesOf(known, s.playnode, s.services), nil
	}
	owned := 0
	known.Each(func(a store.Assignment) {
		if a.Playnode == s.playnode {
			owned++
		}
	})
	allowed := r.reg.takeAssignments(s.playnode, len(missing), owned, r.cfg.MaxPortaliasesPerNode)
	limited := allowed < len(missing)
	if limited {
		missing = missing[:allowed]
	}
	reserved := r.reserve(known, len(missing), s)
	var unserved []string
	table, err := r.store.Update(ctx, func(t *store.Table) error {
		unserved = unserved[:0]
		next := 0
		for _, name := range missing {
			if _, ok := t.Lookup(s.playnode, name); ok {
				continue
			}
			for next < len(reserved) {
				if _, taken := t.Owner(reserved[next].port); !taken {
					break
				}
				next++
			}
			if next == len(reserved) {
				unserved = append(unserved, name)
				continue
			}
			if err := t.Set(store.Assignment{Playnode: s.playnode, Service: name, Portalias: reserved[next].port}); err != nil {
				return err
			}
			next++
		}
		return nil
	})
	prebound := map[uint16]net.Listener{}
	for _, b := range reserved {
		prebound[b.port] = b.ln
	}
	if err != nil {
		r.release(prebound)
		r.reg.giveBack(s.playnode, len(missing))
		// The services assigned before still work; the node is told
		// nothing of the server's paths.
		s.log.Error("assign portaliases", "err", err)
		if got := portaliasesOf(known, s.playnode, s.services); len(got) > 0 {
			return got, nil
		}
		return nil, &proto.Refuse{Code: proto.RefusePorts, Reason: errStore.Error()}
	}
	r.apply(table, prebound)
	for _, name := range unserved {
		s.log.Error("no free portalias for service: port range exhausted", "service", name,
			"ports", fmt.Sprintf("%d-%d", r.cfg.PortLow, r.cfg.PortHigh))
	}
	got := portaliasesOf(table, s.playnode, s.services)
	if len(got) == 0 && len(s.services) > 0 {
		if limited {
			return nil, &proto.Refuse{Code: proto.RefusePorts, Reason: fmt.Sprintf(
				"this playnode reached its limit of %d portaliases (held, or new in the last hour); the operator can remove stale ones with paradigm-relay alias prune", r.cfg.MaxPortaliasesPerNode)}
		}
		return nil, &proto.Refuse{Code: proto.RefusePorts, Reason: "the relay's port range is exhausted"}
	}
	return got, nil
}

// binding is a port bound ahead of an assignment.
type binding struct {
	port uint16
	ln   net.Listener
}

// busyPortRetry is how long a port found in use by another program is
// skipped before assigning tries it again.
const busyPortRetry = time.Minute

// reserve binds up to n free ports of the range, lowest first: not in t,
// not bound or reserved already, not recently found busy. Callers hold
// applyMu.
func (r *Relay) reserve(t *store.Table, n int, s *nodeSession) []binding {
	var out []binding
	g := r.reg
	for p := int(r.cfg.PortLow); p <= int(r.cfg.PortHigh) && len(out) < n; p++ {
		port := uint16(p)
		if _, taken := t.Owner(port); taken {
			continue
		}
		g.mu.Lock()
		_, bound := g.listeners[port]
		busySince, busy := g.busyPorts[port]
		skip := bound || g.reserved[port] || busy && g.now().Sub(busySince) < busyPortRetry
		if !skip {
			g.reserved[port] = true
		}
		g.mu.Unlock()
		if skip {
			continue
		}
		ln, err := net.Listen("tcp", bindAddr(r.cfg.Bind, port))
		g.mu.Lock()
		if err != nil {
			delete(g.reserved, port)
			g.busyPorts[port] = g.now()
		} else {
			delete(g.busyPorts, port)
		}
		g.mu.Unlock()
		if err != nil {
			if !busy {
				s.log.Warn("port in use on the server, skipped", "portalias", port, "err", err)
			}
			continue
		}
		out = append(out, binding{port, ln})
	}
	return out
}

// release closes reserved listeners an assignment did not use.
func (r *Relay) release(prebound map[uint16]net.Listener) {
	r.reg.mu.Lock()
	for port := range prebound {
		delete(r.reg.reserved, port)
	}
	r.reg.mu.Unlock()
	for _, ln := range prebound {
		ln.Close()
	}
}

// apply makes the registry and the bound portaliases match t: new
// portaliases are bound (or adopted from prebound), removed ones closed,
// and online playnodes whose portaliases changed are sent a new welcome.
// Tables are applied in commit order: callers hold applyMu. Nothing here
// waits for the network: welcomes are queued on each session's control
// sender.
func (r *Relay) apply(t *store.Table, prebound map[uint16]net.Listener) {
	g := r.reg
	g.mu.Lock()
	old := g.table
	g.table = t
	changed := map[string]bool{} // playnodes whose portaliases changed
	var unbound []store.Assignment
	t.Each(func(a store.Assignment) {
		was, ok := old.Lookup(a.Playnode, a.Service)
		switch {
		case !ok:
			changed[a.Playnode] = true
			g.queue(Event{Kind: EventPortaliasAssigned, Playnode: a.Playnode, Service: a.Service, Portalias: a.Portalias})
		case was != a.Portalias:
			changed[a.Playnode] = true
			g.queue(Event{Kind: EventPortaliasMoved, Playnode: a.Playnode, Service: a.Service, Portalias: a.Portalias, From: was})
		}
		if _, ok := g.listeners[a.Portalias]; !ok {
			unbound = append(unbound, a)
		}
	})
	old.Each(func(a store.Assignment) {
		if _, ok := t.Lookup(a.Playnode, a.Service); !ok {
			changed[a.Playnode] = true
			g.queue(Event{Kind: EventPortaliasRemoved, Playnode: a.Playnode, Service: a.Service, Portalias: a.Portalias})
		}
	})
	var stale []*portListener
	for port, l := range g.listeners {
		if _, ok := t.Owner(port); !ok {
			stale = append(stale, l)
			delete(g.listeners, port)
		}
	}
	for port := range g.bindFailed {
		if _, ok := t.Owner(port); !ok {
			delete(g.bindFailed, port)
		}
	}
	var updates []*nodeSession
	for name := range changed {
		if p := g.playnodes[name]; p != nil && p.session != nil {
			updates = append(updates, p.session)
		}
	}
	g.mu.Unlock()
	g.publish()

	for _, l := range stale {
		l.ln.Close()
	}
	for _, a := range unbound {
		ln := prebound[a.Portalias]
		delete(prebound, a.Portalias)
		r.bind(a, ln)
	}
	r.release(prebound)
	for _, s := range updates {
		s.sendWelcome(portaliasesOf(t, s.playnode, s.services))
	}
}

// bind binds a's portalias (or adopts ln, bound for it already) and starts
// serving it. A port another program holds is recorded as bind-failed and
// retried by retryUnbound.
func (r *Relay) bind(a store.Assignment, ln net.Listener) {
	g := r.reg
	var err error
	if ln == nil {
		ln, err = net.Listen("tcp", bindAddr(r.cfg.Bind, a.Portalias))
	}
	g.mu.Lock()
	delete(g.reserved, a.Portalias)
	if owner, ok := g.table.Owner(a.Portalias); g.closing || !ok || owner != a || g.listeners[a.Portalias] != nil {
		// Shutdown began, or a newer table moved it on.
		g.mu.Unlock()
		if ln != nil {
			ln.Close()
		}
		return
	}
	_, failedBefore := g.bindFailed[a.Portalias]
	if err != nil {
		g.bindFailed[a.Portalias] = err.Error()
		if !failedBefore {
			g.queue(Event{Kind: EventPortaliasBindFailed, Playnode: a.Playnode, Service: a.Service, Portalias: a.Portalias, Reason: err.Error()})
		}
		g.mu.Unlock()
		g.publish()
		return
	}
	delete(g.bindFailed, a.Portalias)
	if failedBefore {
		g.queue(Event{Kind: EventPortaliasBound, Playnode: a.Playnode, Service: a.Service, Portalias: a.Portalias})
	}
	l := &portListener{port: a.Portalias, ln: ln}
	g.listeners[a.Portalias] = l
	r.wg.Add(1)
	g.mu.Unlock()
	g.publish()
	go func() {
		defer r.wg.Done()
		r.servePortalias(l)
	}()
}

// retryUnbound binds portaliases whose port was busy before.
func (r *Relay) retryUnbound() {
	r.applyMu.Lock()
	defer r.applyMu.Unlock()
	g := r.reg
	g.mu.Lock()
	var unbound []store.Assignment
	g.table.Each(func(a store.Assignment) {
		if _, ok := g.listeners[a.Portalias]; !ok {
			unbound = append(unbound, a)
		}
	})
	g.mu.Unlock()
	for _, a := range unbound {
		r.bind(a, nil)
	}
}

// applyWatched applies a table the store's Watch delivered: an operator's
// alias command or hand edit, or the relay's own commit seen again.
//
// The table Watch delivers may already be older than one this relay
// committed and applied while the callback waited for applyMu (assign
// holds it across its commit): applying it would take back a fresh
// assignment until the next change. So the callback only says that
// something changed, and the table applied is read again under applyMu,
// which no commit of ours can overtake.
func (r *Relay) applyWatched(_ *store.Table, err error) {
	if err != nil {
		r.log.Error("portalias file not reloaded, keeping the previous one", "err", err)
		return
	}
	r.applyMu.Lock()
	defer r.applyMu.Unlock()
	if r.reg.isClosing() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.HandshakeTimeout)
	defer cancel()
	t, err := r.store.Load(ctx)
	if err != nil {
		r.log.Error("portalias file not reloaded, keeping the previous one", "err", err)
		return
	}
	r.apply(t, nil)
}

// errStore is what a node is told when the store cannot be written and it
// has no portalias yet: the relay's paths and errors stay in its log.
var errStore = errors.New("the relay could not record new portaliases; it logged why")
