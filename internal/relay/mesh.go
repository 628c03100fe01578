package relay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"paradigm/internal/mux"
	"paradigm/internal/proto"
	"paradigm/internal/store"
)

// The relay mesh: a connection to a portalias whose playnode is at home on
// another relay of the cluster goes there one hop, over an SSH connection
// between the two relays on their playnode port, authenticated both ways
// with the relays' host keys as the cluster registered them (user
// proto.MeshUser). Each forwarded connection is one stream, opened by the
// relay the client connected to:
//
//	relay B (client's)                      relay A (playnode's home)
//	   |---- stream header: playnode ------->|  A looks the playnode up among
//	   |---- stream header: service -------->|  ITS OWN sessions only: one hop,
//	   |                                     |  never a loop
//	   |                                     |---- stream header: service ----> playnode
//	   |<--- status (the node's, or A's -----|<--- status ------------------- playnode
//	   |       refusal: not here, limits)    |
//	   |<=== raw bytes both ways ===========>|<=== raw bytes both ways =======>
//
// The headers are the playnode protocol's own (internal/proto), twice.

// meshPeer is the playnode name authorize gives another relay of the
// cluster; '+' keeps it apart from every playnode name.
const meshPeer = "+relay"

// mesh holds this relay's links to the other relays, one per member,
// dialled when a connection first needs it and dropped when it dies or the
// member leaves or changes. Its mutex is a leaf and guards the map only;
// dialling happens outside it.
type mesh struct {
	r     *Relay
	mu    sync.Mutex
	links map[string]*meshLink // by member id
}

// meshLink is one link, or the dial in progress; ready is closed when the
// dial ended, and sess or err set before. A failed dial stays in the map
// until failedAt+meshRedialAfter, so that connections to a relay that is
// down are refused at once instead of each dialling it again.
type meshLink struct {
	member   store.Member
	ready    chan struct{}
	sess     mux.Session
	err      error
	failedAt time.Time
}

// meshRedialAfter is how long a failed dial answers for the relay before
// the next connection dials it again.
const meshRedialAfter = time.Second

// session returns the link to member m, dialling it (once, however many
// connections wait) if there is none.
func (m *mesh) session(ctx context.Context, member store.Member) (mux.Session, error) {
	if m == nil {
		return nil, errors.New("relay is not in a cluster")
	}
	m.mu.Lock()
	l := m.links[member.ID]
	if l != nil && !l.failedAt.IsZero() && time.Since(l.failedAt) >= meshRedialAfter {
		l = nil // failed a while ago: dial again
	}
	if l == nil || l.member != member {
		l = &meshLink{member: member, ready: make(chan struct{})}
		m.links[member.ID] = l
		m.r.wg.Go(func() { m.dial(l) })
	}
	m.mu.Unlock()
	select {
	case <-l.ready:
	case <-ctx.Done():
		return nil, fmt.Errorf("mesh link to relay %s: %w", member.ID, ctx.Err())
	}
	if l.err != nil {
		return nil, l.err
	}
	return l.sess, nil
}

// dial connects l and publishes the result; a link dropped meanwhile is
// closed at once, a failed one forgotten so the next connection redials.
func (m *mesh) dial(l *meshLink) {
	ctx, cancel := context.WithTimeout(m.r.ctx, m.r.cfg.HandshakeTimeout)
	defer cancel()
	sess, err := m.r.dialRelay(ctx, l.member)
	m.mu.Lock()
	current := m.links[l.member.ID] == l
	switch {
	case err != nil:
		l.failedAt = time.Now() // kept in the map: the next ones fail at once
		err = fmt.Errorf("mesh link to relay %s: %w", l.member.ID, err)
	case !current:
		sess.Close()
		err = fmt.Errorf("mesh link to relay %s: the relay left or changed", l.member.ID)
	default:
		context.AfterFunc(sess.Context(), func() {
			m.mu.Lock()
			if m.links[l.member.ID] == l {
				delete(m.links, l.member.ID)
			}
			m.mu.Unlock()
		})
	}
	l.sess, l.err = sess, err
	m.mu.Unlock()
	close(l.ready)
	if err != nil {
		// Rate-limited: a dead relay still recorded as a playnode's home
		// fails every connection to it until its lease ends.
		ap, _ := netip.ParseAddrPort(l.member.Addr)
		m.r.throttle.Warn("mesh-dial", ap.Addr(), "relay mesh", "relay", l.member.ID, "err", err)
	}
}

// drop closes the link to member id, if any.
func (m *mesh) drop(id string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	l := m.links[id]
	delete(m.links, id)
	m.mu.Unlock()
	if l == nil {
		return
	}
	select {
	case <-l.ready:
		if l.sess != nil {
			l.sess.Close()
		}
	default: // dial finds itself dropped and closes what it got
	}
}

// closeAll closes every link (shutdown).
func (m *mesh) closeAll() {
	if m == nil {
		return
	}
	m.mu.Lock()
	ids := make([]string, 0, len(m.links))
	for id := range m.links {
		ids = append(ids, id)
	}
	m.mu.Unlock()
	for _, id := range ids {
		m.drop(id)
	}
}

// dialRelay opens a mesh link to member: SSH on its playnode port with
// this relay's host key, its host key checked against what it registered.
func (r *Relay) dialRelay(ctx context.Context, member store.Member) (mux.Session, error) {
	want, err := parseMemberKey(member.HostKey)
	if err != nil {
		return nil, fmt.Errorf("host key the relay registered: %w", err)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", member.Addr)
	if err != nil {
		return nil, err
	}
	return mux.DialSSH(ctx, conn, &mux.SSHClientConfig{
		Key:  r.hostKey,
		User: proto.MeshUser,
		Addr: member.Addr,
		HostKeyCallback: func(_ string, _ net.Addr, key ssh.PublicKey) error {
			if !bytes.Equal(key.Marshal(), want.Marshal()) {
				return fmt.Errorf("relay %s presented a host key other than the one it registered in the cluster", member.ID)
			}
			return nil
		},
		HandshakeTimeout: r.cfg.HandshakeTimeout,
		Options:          mux.Options{Keepalive: r.cfg.Keepalive, Logger: r.log},
	})
}

// authorizeRelay admits another relay of the cluster on the mesh: its key
// must be a member's host key.
func (r *Relay) authorizeRelay(remote net.Addr, key ssh.PublicKey) (string, error) {
	if _, ok := r.reg.member(key.Marshal()); !ok {
		r.reg.counters.authFailed.Add(1)
		return "", fmt.Errorf("key %s is not the host key of a relay of this cluster", ssh.FingerprintSHA256(key))
	}
	return meshPeer, nil
}

// serveMesh serves the streams another relay opens on its mesh link, each
// a connection to one of this relay's playnodes, until the link or the
// relay ends. It returns at once.
func (r *Relay) serveMesh(ctx context.Context, ms mux.Session, peer mux.Peer) {
	m, _ := r.reg.member(peer.Key.Marshal())
	log := r.log.With("relay", m.ID, "remote", ms.RemoteAddr().String())
	log.Debug("relay mesh link accepted")
	r.wg.Go(func() {
		defer ms.Close()
		for {
			st, err := ms.AcceptStream(ctx)
			if err != nil {
				log.Debug("relay mesh link ended", "err", ms.Err())
				return
			}
			r.wg.Go(func() { r.forwardFromMesh(st, ms.RemoteAddr(), log) })
		}
	})
}

// forwardFromMesh reads which playnode and service a mesh stream is for
// and splices it to that playnode's session here; if the playnode is not
// at home here (it moved, or the other relay's view is behind), or over a
// limit, it answers with a refusal status the other relay passes on.
func (r *Relay) forwardFromMesh(st mux.Stream, remote net.Addr, log *slog.Logger) {
	st.SetReadDeadline(time.Now().Add(r.cfg.StreamOpenTimeout))
	playnode, err := proto.ReadStreamHeader(st)
	var service string
	if err == nil {
		service, err = proto.ReadStreamHeader(st)
	}
	if err != nil {
		log.Debug("mesh stream", "err", err)
		st.Close()
		return
	}
	st.SetReadDeadline(time.Time{})
	refuse := func(status proto.StreamStatus, why string) {
		st.SetWriteDeadline(time.Now().Add(controlWriteTimeout))
		proto.WriteStreamStatus(st, status, why)
		st.Close()
	}
	s := r.reg.session(playnode)
	if s == nil {
		refuse(proto.StatusRefused, fmt.Sprintf("playnode %s is not connected to relay %s", playnode, r.cfg.Advertise))
		return
	}
	stats := s.stats[service]
	if stats == nil {
		refuse(proto.StatusUnknownService, fmt.Sprintf("playnode %s registered no service %s", playnode, service))
		return
	}
	if !s.streams.acquire(r.cfg.MaxStreamsPerNode) {
		r.reg.counters.connsRefused.Add(1)
		refuse(proto.StatusRefused, fmt.Sprintf("playnode %s is at its limit of %d connections", playnode, r.cfg.MaxStreamsPerNode))
		return
	}
	defer s.streams.release()
	r.forward(target{local: s, playnode: playnode, st: stats}, st, remote, true)
}
