package relay

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
)

// unauthCounter counts connections that have not authenticated yet by
// source address, so that one address cannot take every handshake slot.
type unauthCounter struct {
	mu sync.Mutex
	n  map[netip.Addr]int
}

// acquire counts a new connection from remote and reports whether it is
// within limit; a connection it refuses is not counted. It returns the
// address to release, invalid if remote has none (then it always admits).
func (u *unauthCounter) acquire(remote net.Addr, limit int) (netip.Addr, bool) {
	var src netip.Addr
	switch a := remote.(type) {
	case *net.TCPAddr:
		src = a.AddrPort().Addr().Unmap()
	case *net.UDPAddr:
		src = a.AddrPort().Addr().Unmap()
	default:
		return netip.Addr{}, true
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.n == nil {
		u.n = map[netip.Addr]int{}
	}
	if u.n[src] >= limit {
		return src, false
	}
	u.n[src]++
	return src, true
}

func (u *unauthCounter) release(src netip.Addr) {
	if !src.IsValid() {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.n[src]--; u.n[src] <= 0 {
		delete(u.n, src)
	}
}

// streamLimit counts connections forwarded at once through a portalias or
// to a playnode. warned keeps a client that hammers a full portalias from
// flooding the log: one line, then none until the count drops to zero.
type streamLimit struct {
	n      atomic.Int64
	warned atomic.Bool
}

// acquire reports whether one more connection fits within limit, counting
// it if so.
func (l *streamLimit) acquire(limit int) bool {
	if l.n.Add(1) > int64(limit) {
		l.n.Add(-1)
		return false
	}
	return true
}

func (l *streamLimit) release() {
	if l.n.Add(-1) == 0 {
		l.warned.Store(false)
	}
}

// admit counts a new connection c to portalias l of session s against
// both limits; it logs (once until the load drops) and reports false when
// either is reached. s is nil for a playnode at home on another relay of
// the cluster, which counts the connection against its own limit.
func (r *Relay) admit(l *portListener, s *nodeSession, c net.Conn) bool {
	if !l.streams.acquire(r.cfg.MaxStreamsPerPortalias) {
		if !l.streams.warned.Swap(true) {
			r.log.Warn("portalias connection limit reached, closing new connections", "portalias", l.port,
				"remote", c.RemoteAddr().String(), "limit", r.cfg.MaxStreamsPerPortalias)
		}
		return false
	}
	if s == nil {
		return true
	}
	if !s.streams.acquire(r.cfg.MaxStreamsPerNode) {
		l.streams.release()
		if !s.streams.warned.Swap(true) {
			s.log.Warn("playnode connection limit reached, closing new connections", "portalias", l.port,
				"remote", c.RemoteAddr().String(), "limit", r.cfg.MaxStreamsPerNode)
		}
		return false
	}
	return true
}

// admitQUIC bounds QUIC handshakes as acceptNodes and acceptSSH bound SSH
// ones: per source address and in total. It cannot wait for a slot (it runs
// on quic-go's packet loop), so a handshake over the limit is refused and
// the node retries after its backoff.
func (r *Relay) admitQUIC(remote net.Addr) (func(), bool) {
	src, ok := r.unauth.acquire(remote, r.cfg.MaxUnauthPerAddress)
	if !ok {
		r.throttle.Warn("unauth-per-address", src, "too many unauthenticated connections from one address, closed", "remote", remote.String(), "transport", "quic", "limit", r.cfg.MaxUnauthPerAddress)
		return nil, false
	}
	select {
	case r.hsSlots <- struct{}{}:
	default:
		r.unauth.release(src)
		r.throttle.Warn("handshake-slots", src, "too many handshakes in progress, quic connection refused", "remote", remote.String(), "limit", r.cfg.MaxHandshakes)
		return nil, false
	}
	r.reg.counters.handshakes.Add(1)
	return func() {
		<-r.hsSlots
		r.unauth.release(src)
	}, true
}
