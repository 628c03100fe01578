package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"paradigm/internal/identity"
	"paradigm/internal/logthrottle"
	"paradigm/internal/mux"
	"paradigm/internal/proto"
	"paradigm/internal/store"
)

// nodeSession is one online playnode: its transport session and what its
// hello registered. Its control stream is written only by its sender
// goroutine, which runs while messages are queued and is started on demand,
// so no lock is held across a network write and an idle playnode costs no
// goroutine.
type nodeSession struct {
	playnode  string
	transport string
	client    string // the node's software version, as its transport reported it
	key       ssh.PublicKey
	mux       mux.Session
	ctrl      mux.Stream
	services  map[string]proto.Service // what its hello registered; fixed for the session
	hostKeys  bool                     // its hello takes HostKeys (hostkey.go)
	stats     map[string]*serviceStats // the counters of each service; set by registry.up
	home      store.Home               // what this relay claims for it in the cluster; set by registry.up
	log       *slog.Logger
	streams   streamLimit // connections forwarded at once, all portaliases
	wg        *sync.WaitGroup

	ctrlMu   sync.Mutex // guards the fields below; never held across a write
	pending  []proto.Message
	sending  bool              // a sender goroutine is running
	lastSent []proto.Portalias // the portaliases of the last Welcome queued
	welcomed bool              // the first Welcome was queued
	ended    *proto.Refuse     // why the relay ended the session, if it did; nothing is queued after it
	// over: the session's connection ended; nothing is queued or sent
	// after it. Set before the session's count in wg is released, so a
	// sender goroutine is only ever added to wg while that count holds
	// it above zero (shutdown's Wait may be running: a refusal racing the
	// session's end must not add to a WaitGroup at zero).
	over bool
}

// errNoControlStream: the session ended before the node opened its
// control stream.
var errNoControlStream = errors.New("accept control stream")

// controlWriteTimeout bounds one write of a control message.
const controlWriteTimeout = 5 * time.Second

// refuseGrace bounds how long a refused session may take to read the
// refusal and hang up before the relay closes it.
const refuseGrace = 2 * time.Second

var refuseShutdown = &proto.Refuse{Code: proto.RefuseShutdown, Reason: "relay is shutting down"}

func validPlaynode(name string) error { return proto.ValidateName("playnode", name) }

// serveSession runs an authenticated session, whatever its transport,
// through its hello and welcome, and arranges its end: no goroutine of the
// relay's waits for an idle session.
func (r *Relay) serveSession(ctx context.Context, ms mux.Session, peer mux.Peer, transport string, deadline time.Time) {
	if peer.Playnode == meshPeer {
		r.serveMesh(ctx, ms, peer) // another relay of the cluster
		return
	}
	log := r.log.With("remote", ms.RemoteAddr().String(), "transport", transport)
	// One connection per key may wait for its hello: a newer one (the node
	// redialled) ends the older, so an authorized key cannot pile up
	// connections that never say hello.
	done := r.reg.beginPending(string(peer.Key.Marshal()), deadline, func() { ms.Close() })
	s, err := r.welcome(ctx, ms, peer, transport, log, deadline)
	done()
	if err != nil {
		var refuse *proto.Refuse
		switch {
		case ctx.Err() != nil:
		case errors.As(err, &refuse) && peer.Playnode == enrollingPeer:
			r.reg.counters.refusal(string(refuse.Code)) // enroll.go published and logged it
		case errors.As(err, &refuse):
			r.reg.refused(peer.Playnode, ms.RemoteAddr().String(), transport, string(refuse.Code))
			r.throttle.Warn("refused", logthrottle.Source(ms.RemoteAddr()), "playnode refused", "playnode", peer.Playnode, "remote", ms.RemoteAddr().String(), "transport", transport, "err", err)
		case errors.Is(err, errNoControlStream) && errors.Is(ms.Err(), mux.ErrPeerClosed):
			// A node checking that this relay is up (failover's probe of
			// a relay it prefers) hangs up after authenticating.
			r.reg.counters.probes.Add(1)
			log.Debug("playnode closed before its hello: a probe", "playnode", peer.Playnode)
		default:
			r.reg.counters.handshakeFailed.Add(1)
			r.throttle.Warn("handshake-failed", logthrottle.Source(ms.RemoteAddr()), "playnode handshake failed", "playnode", peer.Playnode, "remote", ms.RemoteAddr().String(), "transport", transport, "err", err)
		}
		return
	}
	// The control stream carries nothing from the node after its hello in
	// protocol version 1, so the relay does not read it. Cancellation
	// refuses the session (shutdown); its end takes it out of the registry.
	// Shutdown waits for that through r.wg.
	stop := context.AfterFunc(ctx, func() { s.refuse(refuseShutdown) })
	r.wg.Add(1)
	context.AfterFunc(s.mux.Context(), func() {
		defer r.wg.Done()
		stop()
		s.ctrlMu.Lock()
		s.over = true
		s.ctrlMu.Unlock()
		s.mux.Close()
		r.reg.down(s, s.downReason())
		r.presence.release(s.playnode, s.home, s)
	})
}

// welcome reads the hello on the node's control stream, assigns
// portaliases, registers the session and queues its welcome, all by
// deadline (HandshakeTimeout after the connection began).
func (r *Relay) welcome(ctx context.Context, ms mux.Session, peer mux.Peer, transport string, log *slog.Logger, deadline time.Time) (*nodeSession, error) {
	hsCtx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	ctrl, err := ms.AcceptStream(hsCtx)
	if err != nil {
		ms.Close()
		return nil, fmt.Errorf("%w: %w", errNoControlStream, err)
	}
	s := &nodeSession{
		playnode:  peer.Playnode,
		transport: transport,
		client:    peer.ClientVersion,
		key:       peer.Key,
		mux:       ms,
		ctrl:      ctrl,
		log:       log.With("playnode", peer.Playnode),
		wg:        &r.wg,
	}
	ctrl.SetDeadline(deadline)
	hello, err := r.firstMessage(ctrl, s) // enroll.go: an Enroll may come first
	if err == nil && hello.Playnode != s.playnode {
		err = &proto.Refuse{Code: proto.RefuseName, Reason: fmt.Sprintf(
			"this key (%s) is authorized for playnode %q, not %q", identity.Fingerprint(peer.Key), s.playnode, hello.Playnode)}
	}
	var portaliases []proto.Portalias
	if err == nil {
		s.hostKeys = hello.HostKeys
		s.services = make(map[string]proto.Service, len(hello.Services))
		for _, svc := range hello.Services {
			s.services[svc.Name] = svc
		}
		portaliases, err = r.assign(hsCtx, s)
	}
	var old *nodeSession
	if err == nil {
		// Routable before the node learns its portaliases.
		var ok bool
		if old, ok = r.reg.up(s, portaliases); !ok {
			err = &proto.Refuse{Code: proto.RefuseRevoked, Reason: "this playnode's key was removed from the relay's authorized nodes"}
		}
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
	ctrl.SetDeadline(time.Time{})
	if old != nil {
		s.log.Info("session replaced", "old_remote", old.mux.RemoteAddr().String())
		// The old node is likely gone: its refusal does not hold up the
		// new one's welcome.
		old.refuse(&proto.Refuse{Code: proto.RefuseReplaced, Reason: "a newer session of this playnode connected from " + ms.RemoteAddr().String()})
	}
	r.presence.claim(s) // cluster.go
	s.sendWelcome(portaliases)
	r.sendHostKeys(s) // hostkey.go
	return s, nil
}

// readHello reads and validates the node's first control message.
func readHello(ctrl mux.Stream) (*proto.Hello, error) {
	m, err := proto.ReadMessage(ctrl)
	if err != nil {
		return nil, fmt.Errorf("read hello: %w", err)
	}
	return validHello(m)
}

// validHello checks that m is a valid Hello.
func validHello(m proto.Message) (*proto.Hello, error) {
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

// sendWelcome queues a Welcome with the session's portaliases, unless they
// are what the last one said.
func (s *nodeSession) sendWelcome(p []proto.Portalias) {
	s.ctrlMu.Lock()
	defer s.ctrlMu.Unlock()
	if s.ended != nil || s.welcomed && slices.Equal(p, s.lastSent) {
		return
	}
	s.welcomed, s.lastSent = true, p
	s.queueLocked(&proto.Welcome{Version: proto.Version, Playnode: s.playnode, Portaliases: p})
}

// refuse tells the node why the relay ends its session, then ends it, on
// the sender goroutine: it returns at once. The first refusal wins.
func (s *nodeSession) refuse(m *proto.Refuse) {
	s.ctrlMu.Lock()
	defer s.ctrlMu.Unlock()
	if s.ended != nil {
		return
	}
	s.ended = m
	s.queueLocked(m)
}

// queueLocked appends m and starts the sender if none runs; ctrlMu is held.
func (s *nodeSession) queueLocked(m proto.Message) {
	if s.over {
		return
	}
	s.pending = append(s.pending, m)
	if !s.sending {
		s.sending = true
		s.wg.Go(s.sendPending)
	}
}

// sendPending writes queued control messages until none is left. A failed
// write ends the session: the node would act on stale portaliases.
func (s *nodeSession) sendPending() {
	for {
		s.ctrlMu.Lock()
		if len(s.pending) == 0 {
			s.sending = false
			s.ctrlMu.Unlock()
			return
		}
		m := s.pending[0]
		s.pending = s.pending[1:]
		s.ctrlMu.Unlock()

		if refuse, ok := m.(*proto.Refuse); ok {
			s.ctrl.SetWriteDeadline(time.Now().Add(refuseGrace))
			if proto.WriteMessage(s.ctrl, refuse) == nil {
				hangUp(s.ctrl, s.mux)
			}
			s.mux.Close()
			continue
		}
		s.ctrl.SetWriteDeadline(time.Now().Add(controlWriteTimeout))
		if err := proto.WriteMessage(s.ctrl, m); err != nil {
			s.log.Warn("send control message", "err", err)
			s.mux.Close()
		}
	}
}

// downReason says why the session ended, for the EventDown.
func (s *nodeSession) downReason() string {
	s.ctrlMu.Lock()
	m := s.ended
	s.ctrlMu.Unlock()
	if m != nil {
		switch m.Code {
		case proto.RefuseReplaced:
			return ReasonReplaced
		case proto.RefuseRevoked:
			return ReasonRevoked
		case proto.RefuseShutdown:
			return ReasonShutdown
		}
		return string(m.Code)
	}
	if errors.Is(s.mux.Err(), mux.ErrPeerClosed) {
		return ReasonStopped
	}
	return ReasonLinkLost
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
