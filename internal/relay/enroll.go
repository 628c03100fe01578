package relay

import (
	"fmt"
	"net"
	"net/netip"
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
// send. The token's use, the pending list and the authorized nodes change
// in one update of the three documents (locked in that order), so relays
// sharing a store never spend one use twice.
func (r *Relay) enroll(e *proto.Enroll, s *nodeSession) error {
	remote := s.mux.RemoteAddr()
	fp := identity.Fingerprint(s.key)
	if err := e.Validate(); err != nil {
		return r.enrollRefused(e, s, &proto.Refuse{Code: proto.RefuseProtocol, Reason: err.Error()})
	}
	now := time.Now()
	var out enrollOutcome
	ctx, cancel := docCtx()
	defer cancel()
	err := r.docs.Update(ctx, []string{TokensFile, PendingFile, AuthorizedFile}, func(cur map[string][]byte) (map[string][]byte, error) {
		out = enrollOutcome{}
		return r.enrollDocs(cur, e, s, now, &out)
	})
	if err != nil {
		r.log.Error("enrollment failed", "playnode", e.Playnode, "fingerprint", fp, "remote", remote.String(), "err", err)
		return &proto.Refuse{Code: proto.RefuseProtocol, Reason: "the relay could not record the enrollment, see its log"}
	}
	switch {
	case out.pending:
		r.reg.enrollment(EventEnrollPending, e.Playnode, remote.String(), fp, out.tokenID)
		r.log.Info("enrollment waits for approval", "playnode", e.Playnode, "fingerprint", fp, "remote", remote.String(), "token", out.tokenID)
		return out.refuse
	case out.refuse != nil && out.quiet:
		return out.refuse
	case out.refuse != nil:
		return r.enrollRefused(e, s, out.refuse)
	}
	r.reloadAuthorized()
	s.playnode = e.Playnode
	s.log = r.log.With("remote", remote.String(), "transport", s.transport, "playnode", e.Playnode)
	r.reg.enrollment(EventEnrolled, e.Playnode, remote.String(), fp, out.tokenID)
	r.log.Info("playnode enrolled", "playnode", e.Playnode, "fingerprint", fp, "remote", remote.String(), "token", out.tokenID)
	return nil
}

// enrollOutcome is what one run of enrollDocs decided.
type enrollOutcome struct {
	refuse  *proto.Refuse // nil: enrolled
	quiet   bool          // refuse is no event (the key already waits for approval)
	pending bool          // held for approval; refuse says so
	tokenID string
}

// enrollRefused publishes and logs (throttled) a refused enrollment and
// returns the refusal.
func (r *Relay) enrollRefused(e *proto.Enroll, s *nodeSession, ref *proto.Refuse) error {
	remote := s.mux.RemoteAddr()
	fp := identity.Fingerprint(s.key)
	r.reg.enrollment(EventEnrollRefused, e.Playnode, remote.String(), fp, string(ref.Code))
	r.throttle.Warn("enroll-refused", logthrottle.Source(remote), "enrollment refused", "playnode", e.Playnode, "fingerprint", fp, "code", string(ref.Code), "err", ref.Reason)
	return ref
}

// enrollDocs decides an enrollment on the current documents and returns
// those it changes. It only computes (Docs.Update may run it again): what
// it decided is in out.
func (r *Relay) enrollDocs(cur map[string][]byte, e *proto.Enroll, s *nodeSession, now time.Time, out *enrollOutcome) (map[string][]byte, error) {
	fp := identity.Fingerprint(s.key)
	waits := &proto.Refuse{Code: proto.RefusePending, Reason: fmt.Sprintf("enrollment of %s (key %s) waits for approval: paradigm-relay approve %s", e.Playnode, fp, e.Playnode)}
	ps, err := parsePending(cur[PendingFile], r.docs.Where(PendingFile))
	if err != nil {
		return nil, err
	}
	if p := pendingOf(ps, s.key); p != nil && p.State == StateRejected {
		out.refuse = &proto.Refuse{Code: proto.RefuseRejected, Reason: "the relay's operator rejected this key's enrollment"}
		return nil, nil
	} else if p != nil {
		out.refuse = &proto.Refuse{Code: proto.RefusePending, Reason: fmt.Sprintf("enrollment of %s (key %s) waits for approval: paradigm-relay approve %s", p.Playnode, fp, p.Playnode)}
		out.quiet = true
		return nil, nil
	}
	tokens, err := parseTokens(cur[TokensFile], r.docs.Where(TokensFile))
	if err != nil {
		return nil, err
	}
	t, err := tokens.lookupToken(e.Token, e.Playnode, now)
	if err != nil {
		out.refuse = &proto.Refuse{Code: proto.RefuseToken, Reason: err.Error()}
		return nil, nil
	}
	out.tokenID = t.ID
	auth, err := parseAuthorized(cur[AuthorizedFile], r.docs.Where(AuthorizedFile))
	if err != nil {
		return nil, err
	}
	if n, ok := auth.byName[e.Playnode]; ok {
		out.refuse = &proto.Refuse{Code: proto.RefuseNameTaken, Reason: fmt.Sprintf("playnode %q is already bound to another key (%s); choose another name, the token was not used", e.Playnode, identity.Fingerprint(n.key))}
		return nil, nil
	}
	if t.Approve {
		if out.refuse = r.holdForApproval(ps, e, s, now); out.refuse != nil {
			return nil, nil
		}
		t.Uses--
		out.pending, out.refuse = true, waits
		ps = append(ps, PendingNode{Playnode: e.Playnode, Token: t.ID, From: sourceAddr(s.mux.RemoteAddr()), At: now, State: StatePending, key: s.key})
		return map[string][]byte{TokensFile: tokens.marshal(), PendingFile: marshalPending(ps)}, nil
	}
	comment := fmt.Sprintf("%s enrolled with token %s from %s at %s", e.Playnode, t.ID, s.mux.RemoteAddr(), now.UTC().Format(time.RFC3339))
	authData, err := addAuthorized(cur[AuthorizedFile], r.docs.Where(AuthorizedFile), e.Playnode, s.key, comment)
	if err != nil {
		out.refuse = &proto.Refuse{Code: proto.RefuseNameTaken, Reason: err.Error()}
		return nil, nil
	}
	t.Uses--
	return map[string][]byte{TokensFile: tokens.marshal(), AuthorizedFile: authData}, nil
}

// holdForApproval says why e cannot wait in the pending list ps, nil if it
// can: the name waits with another key, or the list is full.
func (r *Relay) holdForApproval(ps []PendingNode, e *proto.Enroll, s *nodeSession, now time.Time) *proto.Refuse {
	for _, p := range ps {
		if p.Playnode == e.Playnode {
			return &proto.Refuse{Code: proto.RefuseNameTaken, Reason: fmt.Sprintf("playnode %q already waits for approval with another key; choose another name, the token was not used", e.Playnode)}
		}
	}
	if len(ps) >= r.cfg.MaxPending {
		return &proto.Refuse{Code: proto.RefuseRate, Reason: fmt.Sprintf("the relay's pending list is full (%d)", r.cfg.MaxPending)}
	}
	return nil
}

// sourceAddr is the address part of a remote address, as the pending list
// records it.
func sourceAddr(remote net.Addr) string {
	src := remote.String()
	if ap, err := netip.ParseAddrPort(src); err == nil {
		src = ap.Addr().Unmap().String()
	}
	return src
}

// enrollment publishes an enrollment event.
func (g *registry) enrollment(kind EventKind, playnode, remote, fingerprint, reason string) {
	defer g.publish()
	g.mu.Lock()
	defer g.mu.Unlock()
	g.queue(Event{Kind: kind, Playnode: playnode, Remote: remote, Fingerprint: fingerprint, Reason: reason})
}
