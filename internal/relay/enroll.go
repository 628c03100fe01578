package relay

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"paradigm/internal/identity"
	"paradigm/internal/logthrottle"
	"paradigm/internal/mux"
	"paradigm/internal/proto"
)

// enrollingPeer is the playnode name authorize gives an unknown key that
// asked to enroll (user NAME+enroll). It is no valid name, so it can never
// reach the registry: welcome replaces it with the name enrollment binds,
// or refuses the session.
const enrollingPeer = "+enrolling"

// DefaultEnrollPerMinute is how many enrollment attempts one source address
// may make a minute (and at once).
const DefaultEnrollPerMinute = 10

// maxEnrollSources bounds the addresses the enrollment rate limiter tracks.
const maxEnrollSources = 4096

// enrollLimiter is a token bucket per source address: burst perMinute,
// refilled at perMinute a minute. Its mutex is a leaf.
type enrollLimiter struct {
	mu      sync.Mutex
	buckets map[netip.Addr]enrollBucket
}

type enrollBucket struct {
	tokens float64
	at     time.Time
}

// allow takes one attempt from src's bucket.
func (l *enrollLimiter) allow(src netip.Addr, perMinute int, now time.Time) bool {
	if perMinute <= 0 {
		perMinute = DefaultEnrollPerMinute
	}
	burst := float64(perMinute)
	rate := burst / float64(time.Minute)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.buckets == nil {
		l.buckets = map[netip.Addr]enrollBucket{}
	}
	b, ok := l.buckets[src]
	if !ok {
		if len(l.buckets) >= maxEnrollSources {
			// Forget the addresses whose bucket has refilled.
			for a, o := range l.buckets {
				if o.tokens+float64(now.Sub(o.at))*rate >= burst {
					delete(l.buckets, a)
				}
			}
			if len(l.buckets) >= maxEnrollSources {
				return false
			}
		}
		b = enrollBucket{tokens: burst, at: now}
	}
	b.tokens = min(burst, b.tokens+float64(now.Sub(b.at))*rate)
	b.at = now
	if b.tokens < 1 {
		l.buckets[src] = b
		return false
	}
	b.tokens--
	l.buckets[src] = b
	return true
}

// authorizeEnrolling lets an unknown key through authentication when its
// user asks to enroll (and its address is within the enrollment rate), so
// that it can present its token inside the encrypted session. Any other
// unknown key is refused as before.
func (r *Relay) authorizeEnrolling(remote net.Addr, user string, key ssh.PublicKey) (string, bool) {
	if !strings.HasSuffix(user, proto.EnrollUserSuffix) {
		return "", false
	}
	src := logthrottle.Source(remote)
	if !r.enrollRate.allow(src, r.cfg.EnrollPerMinute, time.Now()) {
		r.reg.counters.authFailed.Add(1)
		r.throttle.Warn("enroll-rate", src, "enrollment attempts over the limit for this address, refused", "fingerprint", identity.Fingerprint(key), "limit_per_minute", r.cfg.EnrollPerMinute)
		return "", false
	}
	return enrollingPeer, true
}

// firstMessage reads the node's Hello, handling an Enroll before it: an
// enrolling session is enrolled (s.playnode becomes the bound name) or
// refused; a known key's Enroll is ignored.
func (r *Relay) firstMessage(ctrl mux.Stream, s *nodeSession) (*proto.Hello, error) {
	m, err := proto.ReadMessage(ctrl)
	if err != nil {
		return nil, fmt.Errorf("read hello: %w", err)
	}
	e, ok := m.(*proto.Enroll)
	if !ok {
		if s.playnode == enrollingPeer {
			remote := s.mux.RemoteAddr()
			r.reg.enrollment(EventEnrollRefused, "", remote.String(), identity.Fingerprint(s.key), string(proto.RefuseProtocol))
			r.throttle.Warn("enroll-refused", logthrottle.Source(remote), "enrollment refused", "fingerprint", identity.Fingerprint(s.key), "code", string(proto.RefuseProtocol), "err", "no enroll message")
			return nil, &proto.Refuse{Code: proto.RefuseProtocol, Reason: fmt.Sprintf("first message is %T, want enroll", m)}
		}
		return validHello(m)
	}
	if s.playnode == enrollingPeer {
		if err := r.enroll(e, s); err != nil {
			return nil, err
		}
	}
	return readHello(ctrl)
}

// enroll binds s's key to e.Playnode with e.Token, or returns the Refuse to
// send. Tokens, pending and authorized files are locked in that order.
func (r *Relay) enroll(e *proto.Enroll, s *nodeSession) error {
	remote := s.mux.RemoteAddr()
	fp := identity.Fingerprint(s.key)
	refuse := func(code proto.RefuseCode, reason string) error {
		r.reg.enrollment(EventEnrollRefused, e.Playnode, remote.String(), fp, string(code))
		r.throttle.Warn("enroll-refused", logthrottle.Source(remote), "enrollment refused", "playnode", e.Playnode, "fingerprint", fp, "code", string(code), "err", reason)
		return &proto.Refuse{Code: code, Reason: reason}
	}
	if err := e.Validate(); err != nil {
		return refuse(proto.RefuseProtocol, err.Error())
	}
	if p, err := pendingOf(r.cfg.DataDir, s.key); err != nil {
		return refuse(proto.RefuseProtocol, "the relay could not read its pending list")
	} else if p != nil && p.State == StateRejected {
		return refuse(proto.RefuseRejected, "the relay's operator rejected this key's enrollment")
	} else if p != nil {
		return &proto.Refuse{Code: proto.RefusePending, Reason: fmt.Sprintf("enrollment of %s (key %s) waits for approval: paradigm-relay approve %s", p.Playnode, fp, p.Playnode)}
	}
	authPath := filepath.Join(r.cfg.DataDir, AuthorizedFile)
	now := time.Now()
	var result error
	var tokenID string
	var pending bool
	err := updateTokens(r.cfg.DataDir, func(set *tokenSet) (bool, error) {
		t, err := set.lookupToken(e.Token, e.Playnode, now)
		if err != nil {
			result = refuse(proto.RefuseToken, err.Error())
			return false, nil
		}
		tokenID = t.ID
		auth, err := loadAuthorized(authPath)
		if err != nil {
			return false, err
		}
		if n, ok := auth.byName[e.Playnode]; ok {
			result = refuse(proto.RefuseNameTaken, fmt.Sprintf("playnode %q is already bound to another key (%s); choose another name, the token was not used", e.Playnode, identity.Fingerprint(n.key)))
			return false, nil
		}
		if t.Approve {
			used, err := r.holdForApproval(e, s, t.ID, now)
			if err != nil {
				result = err
			} else {
				pending = true
				result = &proto.Refuse{Code: proto.RefusePending, Reason: fmt.Sprintf("enrollment of %s (key %s) waits for approval: paradigm-relay approve %s", e.Playnode, fp, e.Playnode)}
			}
			if used {
				t.Uses--
			}
			return used, nil
		}
		comment := fmt.Sprintf("%s enrolled with token %s from %s at %s", e.Playnode, t.ID, remote, now.UTC().Format(time.RFC3339))
		if err := Authorize(authPath, e.Playnode, s.key, comment); err != nil {
			result = refuse(proto.RefuseNameTaken, err.Error())
			return false, nil
		}
		t.Uses--
		return true, nil
	})
	if err != nil {
		r.log.Error("enrollment failed", "playnode", e.Playnode, "fingerprint", fp, "remote", remote.String(), "err", err)
		return &proto.Refuse{Code: proto.RefuseProtocol, Reason: "the relay could not record the enrollment, see its log"}
	}
	if pending {
		r.reg.enrollment(EventEnrollPending, e.Playnode, remote.String(), fp, tokenID)
		r.log.Info("enrollment waits for approval", "playnode", e.Playnode, "fingerprint", fp, "remote", remote.String(), "token", tokenID)
		return result
	}
	if result != nil {
		return result
	}
	r.reloadAuthorized(authPath)
	s.playnode = e.Playnode
	s.log = r.log.With("remote", remote.String(), "transport", s.transport, "playnode", e.Playnode)
	r.reg.enrollment(EventEnrolled, e.Playnode, remote.String(), fp, tokenID)
	r.log.Info("playnode enrolled", "playnode", e.Playnode, "fingerprint", fp, "remote", remote.String(), "token", tokenID)
	return nil
}

// holdForApproval records e in the pending file. used says whether a new
// entry was made (which costs the token one use); a key already pending is
// told so again, a rejected key is refused.
func (r *Relay) holdForApproval(e *proto.Enroll, s *nodeSession, tokenID string, now time.Time) (used bool, err error) {
	remote := s.mux.RemoteAddr()
	key := string(s.key.Marshal())
	err = updatePending(r.cfg.DataDir, func(ps []PendingNode) ([]PendingNode, bool, error) {
		for _, p := range ps {
			if string(p.key.Marshal()) == key {
				if p.State == StateRejected {
					return nil, false, &proto.Refuse{Code: proto.RefuseRejected, Reason: "the relay's operator rejected this key's enrollment"}
				}
				return nil, false, nil
			}
			if p.Playnode == e.Playnode {
				return nil, false, &proto.Refuse{Code: proto.RefuseNameTaken, Reason: fmt.Sprintf("playnode %q already waits for approval with another key; choose another name, the token was not used", e.Playnode)}
			}
		}
		if len(ps) >= r.cfg.MaxPending {
			return nil, false, &proto.Refuse{Code: proto.RefuseRate, Reason: fmt.Sprintf("the relay's pending list is full (%d)", r.cfg.MaxPending)}
		}
		used = true
		src := remote.String()
		if ap, err := netip.ParseAddrPort(src); err == nil {
			src = ap.Addr().Unmap().String()
		}
		return append(ps, PendingNode{Playnode: e.Playnode, Token: tokenID, From: src, At: now, State: StatePending, key: s.key}), true, nil
	})
	var refuse *proto.Refuse
	if errors.As(err, &refuse) {
		r.reg.enrollment(EventEnrollRefused, e.Playnode, remote.String(), identity.Fingerprint(s.key), string(refuse.Code))
	}
	return used, err
}

// enrollment publishes an enrollment event.
func (g *registry) enrollment(kind EventKind, playnode, remote, fingerprint, reason string) {
	defer g.publish()
	g.mu.Lock()
	defer g.mu.Unlock()
	g.queue(Event{Kind: kind, Playnode: playnode, Remote: remote, Fingerprint: fingerprint, Reason: reason})
}
