package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"paradigm/internal/mux"
	"paradigm/internal/proto"
	"paradigm/internal/store"
)

// portListener is one bound portalias. It stays bound while its playnode is
// offline, so nothing else takes the port; connections to it then close at
// once.
type portListener struct {
	port    uint16
	ln      net.Listener
	streams streamLimit // connections forwarded at once

	mu       sync.Mutex
	playnode string
	service  string
}

func (l *portListener) owner() (playnode, service string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.playnode, l.service
}

func (l *portListener) setOwner(playnode, service string) {
	l.mu.Lock()
	l.playnode, l.service = playnode, service
	l.mu.Unlock()
}

func (l *portListener) close() { l.ln.Close() }

// assign returns the playnode's portalias for each service, giving a new
// service the lowest free port of the range. A port already in use on the
// server is skipped with a log line. Services that get no port (range
// exhausted) are left out of the result and logged; the rest still work.
func (r *Relay) assign(playnode string, services []proto.Service, log *slog.Logger) ([]proto.Portalias, error) {
	r.storeMu.Lock()
	defer r.storeMu.Unlock()
	r.mu.Lock()
	known := r.table
	r.mu.Unlock()
	if len(portaliasesOf(known, playnode, services)) == len(services) {
		// A reconnect: every service has its portalias, nothing to write.
		return portaliasesOf(known, playnode, services), nil
	}
	bound := map[uint16]net.Listener{} // bound during this update, not yet owned
	var missing []string
	table, err := r.store.Update(func(t *store.Table) error {
		clear(bound)
		missing = missing[:0]
		next := r.cfg.PortLow
		for _, svc := range services {
			if _, ok := t.Lookup(playnode, svc.Name); ok {
				continue
			}
			port, ln, ok := r.freePort(t, &next, bound, log)
			if !ok {
				missing = append(missing, svc.Name)
				continue
			}
			bound[port] = ln
			if err := t.Set(store.Assignment{Playnode: playnode, Service: svc.Name, Portalias: port}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		for _, ln := range bound {
			ln.Close()
		}
		return nil, fmt.Errorf("assign portaliases: %w", err)
	}
	for _, name := range missing {
		log.Error("no free portalias for service: port range exhausted", "service", name,
			"ports", fmt.Sprintf("%d-%d", r.cfg.PortLow, r.cfg.PortHigh))
	}
	r.mu.Lock()
	for port, ln := range bound {
		a, _ := table.Owner(port)
		r.adoptListener(port, ln, a)
		log.Info("portalias assigned", "service", a.Service, "portalias", port)
	}
	r.mu.Unlock()
	r.syncListeners(table)
	if len(missing) == len(services) {
		return nil, &proto.Refuse{Code: proto.RefusePorts, Reason: "the relay's port range is exhausted"}
	}
	return portaliasesOf(table, playnode, services), nil
}

// busyPortRetry is how long a port found in use by another program is
// skipped before assigning tries it again.
const busyPortRetry = time.Minute

// freePort finds and binds the next free port of the range at or after
// *next, skipping ports the table or a listener already holds.
func (r *Relay) freePort(t *store.Table, next *uint16, bound map[uint16]net.Listener, log *slog.Logger) (uint16, net.Listener, bool) {
	for p := int(*next); p <= int(r.cfg.PortHigh); p++ {
		port := uint16(p)
		if _, taken := t.Owner(port); taken {
			continue
		}
		if _, taken := bound[port]; taken {
			continue
		}
		r.mu.Lock()
		_, taken := r.listeners[port]
		busySince, busy := r.busyPorts[port]
		r.mu.Unlock()
		if taken || busy && time.Since(busySince) < busyPortRetry {
			continue
		}
		ln, err := net.Listen("tcp", bindAddr(r.cfg.Bind, port))
		r.mu.Lock()
		if err != nil {
			// Logged once; another program's port is skipped without a
			// new bind attempt for busyPortRetry.
			if !busy {
				log.Warn("port in use on the server, skipped", "portalias", port, "err", err)
			}
			r.busyPorts[port] = time.Now()
		} else {
			delete(r.busyPorts, port)
		}
		r.mu.Unlock()
		if err != nil {
			continue
		}
		*next = port + 1
		return port, ln, true
	}
	return 0, nil, false
}

// portaliasesOf lists the table's portaliases for the given services,
// sorted by service name so that equal assignments compare equal.
func portaliasesOf(t *store.Table, playnode string, services []proto.Service) []proto.Portalias {
	var out []proto.Portalias
	for _, svc := range services {
		if port, ok := t.Lookup(playnode, svc.Name); ok {
			out = append(out, proto.Portalias{Service: svc.Name, Portalias: port})
		}
	}
	slices.SortFunc(out, func(a, b proto.Portalias) int { return strings.Compare(a.Service, b.Service) })
	return out
}

// syncListeners makes the bound portaliases match the table: it binds new
// ones (retrying ports that could not be bound before), re-owns moved ones
// and closes removed ones. Callers hold r.storeMu (or own r exclusively), so
// tables are applied in the order they were written.
func (r *Relay) syncListeners(t *store.Table) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.table = t
	if r.closing {
		return
	}
	want := map[uint16]bool{}
	for _, a := range t.All() {
		want[a.Portalias] = true
		if l, ok := r.listeners[a.Portalias]; ok {
			l.setOwner(a.Playnode, a.Service)
			continue
		}
		ln, err := net.Listen("tcp", bindAddr(r.cfg.Bind, a.Portalias))
		if err != nil {
			if !r.bindFailed[a.Portalias] {
				r.bindFailed[a.Portalias] = true
				r.log.Error("bind portalias, retrying until it is free", "playnode", a.Playnode, "service", a.Service, "portalias", a.Portalias, "err", err)
			}
			continue
		}
		if r.bindFailed[a.Portalias] {
			delete(r.bindFailed, a.Portalias)
			r.log.Info("portalias bound", "playnode", a.Playnode, "service", a.Service, "portalias", a.Portalias)
		}
		r.adoptListener(a.Portalias, ln, a)
	}
	for port, l := range r.listeners {
		if !want[port] {
			pn, svc := l.owner()
			r.log.Info("portalias removed", "playnode", pn, "service", svc, "portalias", port)
			l.close()
			delete(r.listeners, port)
		}
	}
}

// adoptListener starts serving ln as the portalias of a, or closes it when
// the relay is shutting down. Callers hold r.mu.
func (r *Relay) adoptListener(port uint16, ln net.Listener, a store.Assignment) {
	if r.closing {
		// A handshake or reload that raced shutdown: its listener would
		// outlive the relay.
		ln.Close()
		return
	}
	l := &portListener{port: port, ln: ln, playnode: a.Playnode, service: a.Service}
	r.listeners[port] = l
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.servePortalias(l)
	}()
}

// servePortalias accepts connections to one portalias until it is closed.
func (r *Relay) servePortalias(l *portListener) {
	var delay time.Duration
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			r.log.Warn("accept on portalias", "portalias", l.port, "err", err)
			time.Sleep(delay)
			continue
		}
		delay = 0
		playnode, service := l.owner()
		s := r.session(playnode)
		if s == nil || s.services[service].Name == "" {
			// Offline: close at once rather than leave the client hanging.
			c.Close()
			continue
		}
		if !r.admit(l, s, c) {
			c.Close()
			continue
		}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			defer l.streams.release()
			defer s.streams.release()
			r.forward(s, service, c.(*net.TCPConn))
		}()
	}
}

// forward splices one client connection into a new stream to the playnode.
// The stream header goes out at once and the client's first bytes follow it
// without waiting for the node's status, which is read before any reply byte
// reaches the client.
func (r *Relay) forward(s *nodeSession, service string, c *net.TCPConn) {
	ctx, cancel := context.WithTimeout(r.ctx, r.cfg.StreamOpenTimeout)
	st, err := s.mux.OpenStream(ctx)
	cancel()
	if err != nil {
		c.Close()
		s.log.Warn("open stream", "service", service, "err", err)
		return
	}
	var hdr [2 + proto.MaxNameLen]byte
	if _, err := st.Write(proto.AppendStreamHeader(hdr[:0], service)); err != nil {
		c.Close()
		st.Close()
		s.log.Warn("write stream header", "service", service, "err", err)
		return
	}
	in, out, err := mux.Splice(c, &statusStream{Stream: st})
	if err != nil {
		var se *proto.StreamError
		if errors.As(err, &se) {
			s.log.Warn("service unavailable on playnode", "service", service, "err", se)
			return
		}
	}
	s.log.Debug("connection closed", "service", service, "remote", c.RemoteAddr().String(), "in", in, "out", out, "err", err)
}

// statusStream reads the node's stream status before the first reply byte.
type statusStream struct {
	mux.Stream
	checked bool
}

func (s *statusStream) Read(p []byte) (int, error) {
	if !s.checked {
		s.checked = true
		if err := proto.ReadStreamStatus(s.Stream); err != nil {
			return 0, err
		}
	}
	return s.Stream.Read(p)
}
