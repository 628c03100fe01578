package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"

	"paradigm/internal/identity"
	"paradigm/internal/mux"
	"paradigm/internal/proto"
)

// nodeSession is one online playnode.
type nodeSession struct {
	playnode string
	key      ssh.PublicKey
	mux      mux.Session
	services map[string]proto.Service // what its hello registered; fixed for the session
	log      *slog.Logger

	ctrlMu   sync.Mutex // serialises writes to ctrl
	ctrl     mux.Stream
	lastSent []proto.Portalias // the portaliases in the last Welcome
	endOnce  sync.Once
	ended    atomic.Pointer[proto.Refuse] // why the relay ended it, if it did
	streams  streamLimit                  // connections forwarded at once, all portaliases
}

var refuseShutdown = &proto.Refuse{Code: proto.RefuseShutdown, Reason: "relay is shutting down"}

func validPlaynode(name string) error { return proto.ValidateName("playnode", name) }

// serveNode runs one playnode SSH connection from handshake to disconnect;
// authenticated is called once the handshake is over, whatever its outcome.
func (r *Relay) serveNode(ctx context.Context, conn net.Conn, authenticated func()) {
	log := r.log.With("remote", conn.RemoteAddr().String(), "transport", "ssh")
	ms, peer, err := r.acceptSSH(ctx, conn)
	authenticated()
	if err != nil {
		if ctx.Err() == nil {
			log.Warn("playnode handshake failed", "err", err)
		}
		return
	}
	r.serveSession(ctx, ms, peer, log)
}

// acceptSSH runs the SSH handshake and authentication. Handshakes in
// progress are bounded by MaxHandshakes, each by HandshakeTimeout.
func (r *Relay) acceptSSH(ctx context.Context, conn net.Conn) (mux.Session, mux.Peer, error) {
	select {
	case r.hsSlots <- struct{}{}:
		defer func() { <-r.hsSlots }()
	case <-time.After(r.cfg.HandshakeTimeout):
		conn.Close()
		return nil, mux.Peer{}, errors.New("too many handshakes in progress")
	case <-ctx.Done():
		conn.Close()
		return nil, mux.Peer{}, ctx.Err()
	}
	hsCtx, cancel := context.WithTimeout(ctx, r.cfg.HandshakeTimeout)
	defer cancel()
	return mux.AcceptSSH(hsCtx, conn, r.serverConfig())
}

// serveSession runs an authenticated session, whatever its transport,
// through its hello and welcome, and arranges its end: no goroutine of the
// relay's waits for an idle session.
func (r *Relay) serveSession(ctx context.Context, ms mux.Session, peer mux.Peer, log *slog.Logger) {
	s, err := r.welcome(ctx, ms, peer, log)
	if err != nil {
		var refuse *proto.Refuse
		switch {
		case ctx.Err() != nil:
		case errors.As(err, &refuse):
			log.Warn("playnode refused", "playnode", peer.Playnode, "err", err)
		default:
			log.Warn("playnode handshake failed", "playnode", peer.Playnode, "err", err)
		}
		return
	}
	// The control stream carries nothing from the node after its hello in
	// protocol version 1, so the relay does not read it (what a node sent
	// anyway stays within the stream's 256 KiB window). Cancellation closes
	// the session; the session's end unregisters it. Shutdown waits for
	// that through r.wg.
	stop := context.AfterFunc(ctx, func() { s.mux.Close() })
	r.wg.Add(1)
	context.AfterFunc(s.mux.Context(), func() {
		defer r.wg.Done()
		stop()
		s.mux.Close()
		r.unregister(s)
		reason := "link closed"
		if err := s.mux.Err(); err != nil {
			reason = err.Error()
		}
		if m := s.ended.Load(); m != nil {
			reason = string(m.Code)
		}
		s.log.Info("playnode disconnected", "reason", reason)
	})
}

// welcome reads the hello on the node's control stream, assigns
// portaliases, registers the session and answers with a welcome, all within
// HandshakeTimeout.
func (r *Relay) welcome(ctx context.Context, ms mux.Session, peer mux.Peer, log *slog.Logger) (*nodeSession, error) {
	deadline := time.Now().Add(r.cfg.HandshakeTimeout)
	hsCtx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	ctrl, err := ms.AcceptStream(hsCtx)
	if err != nil {
		ms.Close()
		return nil, fmt.Errorf("accept control stream: %w", err)
	}
	s := &nodeSession{
		playnode: peer.Playnode,
		key:      peer.Key,
		mux:      ms,
		ctrl:     ctrl,
		log:      log.With("playnode", peer.Playnode),
	}
	ctrl.SetDeadline(deadline)
	hello, err := readHello(ctrl)
	if err == nil && hello.Playnode != peer.Playnode {
		err = &proto.Refuse{Code: proto.RefuseName, Reason: fmt.Sprintf(
			"this key (%s) is authorized for playnode %q, not %q", identity.Fingerprint(peer.Key), peer.Playnode, hello.Playnode)}
	}
	var portaliases []proto.Portalias
	if err == nil {
		s.services = make(map[string]proto.Service, len(hello.Services))
		for _, svc := range hello.Services {
			s.services[svc.Name] = svc
		}
		portaliases, err = r.assign(s.playnode, hello.Services, s.log)
	}
	if err != nil {
		var refuse *proto.Refuse
		if !errors.As(err, &refuse) {
			refuse = &proto.Refuse{Code: proto.RefuseProtocol, Reason: err.Error()}
		}
		if proto.WriteMessage(ctrl, refuse) == nil {
			hangUp(ctrl, ms)
		}
		ms.Close()
		return nil, refuse
	}
	s.lastSent = portaliases
	// Routable before the node (or a log reader) learns its portaliases.
	if !r.register(s) {
		refuse := &proto.Refuse{Code: proto.RefuseRevoked, Reason: "this playnode's key was removed from the relay's authorized nodes"}
		if proto.WriteMessage(ctrl, refuse) == nil {
			hangUp(ctrl, ms)
		}
		ms.Close()
		return nil, refuse
	}
	err = proto.WriteMessage(ctrl, &proto.Welcome{Version: proto.Version, Playnode: s.playnode, Portaliases: portaliases})
	if err != nil {
		ms.Close()
		r.unregister(s)
		return nil, fmt.Errorf("send welcome: %w", err)
	}
	ctrl.SetDeadline(time.Time{})
	attrs := []any{"services", len(portaliases), "client", peer.ClientVersion, "fingerprint", identity.Fingerprint(peer.Key)}
	for _, p := range portaliases {
		attrs = append(attrs, p.Service, p.Portalias)
	}
	s.log.Info("playnode connected", attrs...)
	return s, nil
}

// readHello reads and validates the node's first control message.
func readHello(ctrl mux.Stream) (*proto.Hello, error) {
	m, err := proto.ReadMessage(ctrl)
	if err != nil {
		return nil, fmt.Errorf("read hello: %w", err)
	}
	hello, ok := m.(*proto.Hello)
	if !ok {
		return nil, &proto.Refuse{Code: proto.RefuseProtocol, Reason: fmt.Sprintf("first message is %T, want hello", m)}
	}
	if err := hello.Validate(); err != nil {
		code := proto.RefuseServices
		if hello.Version != proto.Version {
			code = proto.RefuseVersion
		}
		return nil, &proto.Refuse{Code: code, Reason: err.Error()}
	}
	return hello, nil
}

// register makes s the playnode's session, replacing (and ending) an older
// one at once: a node that reconnects while its old session still looks
// alive takes over its portaliases without waiting for keepalives. It
// returns false, registering nothing, when the key was revoked since it
// authenticated.
func (r *Relay) register(s *nodeSession) bool {
	r.mu.Lock()
	if name, ok := r.auth.lookup(s.key); !ok || name != s.playnode {
		r.mu.Unlock()
		return false
	}
	old := r.sessions[s.playnode]
	r.sessions[s.playnode] = s
	r.status.online(s.playnode, s.mux.RemoteAddr().String(), s.services, time.Now())
	r.mu.Unlock()
	if old != nil {
		s.log.Info("session replaced", "old_remote", old.mux.RemoteAddr().String())
		// The old node is likely gone: do not hold up the new one's welcome.
		r.wg.Go(func() {
			old.refuse(&proto.Refuse{Code: proto.RefuseReplaced, Reason: "a newer session of this playnode connected from " + s.mux.RemoteAddr().String()})
		})
	}
	return true
}

// unregister removes s unless a newer session already replaced it.
func (r *Relay) unregister(s *nodeSession) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sessions[s.playnode] == s {
		delete(r.sessions, s.playnode)
		r.status.offline(s.playnode, time.Now())
	}
}

// session returns the online session of playnode, if any.
func (r *Relay) session(playnode string) *nodeSession {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sessions[playnode]
}

// refuseGrace bounds how long a refused session may take to read the
// refusal and hang up before the relay closes it.
const refuseGrace = 2 * time.Second

// refuse tells the node why the relay ends its session, then ends it. It
// may block for up to 2*refuseGrace.
func (s *nodeSession) refuse(m *proto.Refuse) {
	s.endOnce.Do(func() {
		s.ended.Store(m)
		s.ctrlMu.Lock()
		s.ctrl.SetWriteDeadline(time.Now().Add(refuseGrace))
		err := proto.WriteMessage(s.ctrl, m)
		s.ctrlMu.Unlock()
		if err == nil {
			hangUp(s.ctrl, s.mux)
		}
		s.mux.Close()
	})
}

// hangUp lets the node read what was written on ctrl before the session is
// closed: closing a QUIC connection discards unsent stream data, so the
// relay half-closes and waits (bounded) for the node, which hangs up when it
// reads a refusal.
func hangUp(ctrl mux.Stream, ms mux.Session) {
	ctrl.CloseWrite()
	t := time.NewTimer(refuseGrace)
	defer t.Stop()
	select {
	case <-ms.Done():
	case <-t.C:
	}
}

// updatePortaliases sends a new welcome when the operator changed this
// playnode's portaliases while it is online.
func (s *nodeSession) updatePortaliases(p []proto.Portalias) {
	s.ctrlMu.Lock()
	defer s.ctrlMu.Unlock()
	if slices.Equal(p, s.lastSent) {
		return
	}
	s.lastSent = p
	s.ctrl.SetWriteDeadline(time.Now().Add(5 * time.Second))
	err := proto.WriteMessage(s.ctrl, &proto.Welcome{Version: proto.Version, Playnode: s.playnode, Portaliases: p})
	s.ctrl.SetWriteDeadline(time.Time{})
	if err != nil {
		s.log.Warn("send portalias update", "err", err)
		s.mux.Close()
		return
	}
	s.log.Info("portaliases updated", "services", len(p))
}

func (s *nodeSession) serviceNames() []string {
	return slices.Sorted(maps.Keys(s.services))
}

// Online reports whether playnode is connected and, if so, the portaliases
// of the services it registered.
func (r *Relay) Online(playnode string) ([]proto.Portalias, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.sessions[playnode]
	if s == nil {
		return nil, false
	}
	var services []proto.Service
	for _, name := range s.serviceNames() {
		services = append(services, s.services[name])
	}
	return portaliasesOf(r.table, playnode, services), true
}
