package node

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"runtime"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"paradigm/internal/identity"
	"paradigm/internal/mux"
	"paradigm/internal/proto"
)

// Node keeps one playnode connected to the relay.
type Node struct {
	cfg      Config
	log      *slog.Logger
	key      ssh.Signer
	services map[string]Service
	hello    proto.Hello
	hostKey  ssh.HostKeyCallback
	quicKey  ed25519.PrivateKey // nil when the transport is ssh
	chooser  transportChooser
	streams  *streamLimit
	// attempted, when set (by tests), is called with each candidate
	// before Run tries it.
	attempted func(candidate)
}

// New validates cfg and loads the node's key.
func New(cfg Config) (*Node, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	key, created, err := loadOrCreateKey(cfg.KeyFile, cfg.EnrollToken != "", cfg.Name)
	if err != nil {
		return nil, err
	}
	if created {
		cfg.Logger.Info("node key created for enrollment", "key", cfg.KeyFile, "key_fingerprint", identity.Fingerprint(key.PublicKey()))
	}
	n := &Node{
		cfg:      cfg,
		log:      cfg.Logger.With("playnode", cfg.Name),
		key:      key,
		services: map[string]Service{},
		hello:    proto.Hello{Version: proto.Version, Playnode: cfg.Name, Software: "paradigm-node", HostKeys: true},
		streams:  &streamLimit{max: int64(cfg.MaxStreams)},
	}
	for _, s := range cfg.Services {
		n.services[s.Name] = s
		_, port, _ := net.SplitHostPort(s.Addr)
		var p uint16
		fmt.Sscan(port, &p)
		n.hello.Services = append(n.hello.Services, proto.Service{Name: s.Name, Port: p})
	}
	if err := n.hello.Validate(); err != nil {
		return nil, err
	}
	if n.quicKey, err = loadQUICKey(&n.cfg); err != nil {
		return nil, fmt.Errorf("transport %s: %w", cfg.Transport, err)
	}
	n.hostKey = hostKeyCallback(&n.cfg, n.log)
	return n, nil
}

// Run connects to the relays and reconnects forever, failing over from one
// to the next as failover.go describes, with exponential backoff and jitter
// capped at BackoffMax, until ctx is cancelled; it then returns nil.
func (n *Node) Run(ctx context.Context) error {
	n.log.Info("node starting", "relay", strings.Join(n.cfg.Relays, ","), "key_fingerprint", identity.Fingerprint(n.key.PublicKey()), "services", len(n.services), "procs", runtime.GOMAXPROCS(0))
	// While the relays refuse this node for a reason only their operator
	// can change, the wait grows the same way but up to RefusedRetry: the
	// first retries are quick (an authorize typed just after the node
	// started takes effect at once), later ones minutes apart.
	rot := newRotation(n.cfg.BackoffMax, n.cfg.RefusedRetry)
	var last candidate // the relay of the last session, for the move line
	var lastErr error
	for attempt := 1; ; attempt++ {
		cands := n.candidates(ctx)
		i := rot.pick(cands)
		c := cands[i]
		if n.attempted != nil {
			n.attempted(c)
		}
		start := time.Now()
		welcomed, err := n.connect(ctx, c, i, func() {
			if last.name != "" && last.key() != c.key() {
				n.log.Info("moved to another relay", "relay", c.name, "remote", c.addr, "from", last.name, "from_remote", last.addr, "reason", errText(lastErr))
			}
			last = c
		})
		if ctx.Err() != nil {
			return nil
		}
		if welcomed {
			lastErr = err // why the node left last's session
		}
		res := classify(welcomed, time.Since(start), err)
		delay, roundOver := rot.done(cands, i, res)
		// A session that worked for a while starts the count afresh; one
		// that was refused or dropped at once keeps growing the backoff,
		// so a misconfigured node does not hammer the relays.
		if res.stable {
			attempt = 1
		}
		if res.moveTo != nil { // not a failure: Info
			n.log.Info("disconnected from relay", "relay", c.name, "remote", c.addr, "err", err, "retry_in", "0s")
			continue
		}
		attrs := []any{"relay", c.name, "remote", c.addr, "err", err, "attempt", attempt, "retry_in", delay.Round(time.Millisecond).String()}
		if roundOver && len(cands) > 1 {
			attrs = append(attrs, "all_relays_failed", true)
		}
		if res.slow {
			attrs = append(attrs, n.refusedHint(slowCode(err))...)
		}
		n.log.Warn("disconnected from relay", attrs...)
		if delay == 0 {
			continue
		}
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return nil
		}
	}
}

// classify says how an attempt that lasted lasted and ended with err went.
func classify(welcomed bool, lasted time.Duration, err error) attemptResult {
	res := attemptResult{welcomed: welcomed, stable: welcomed && lasted > stableSession}
	_, res.slow = slowRetry(err)
	var mb *errMoveBack
	if errors.As(err, &mb) {
		res.moveTo = &mb.to
	}
	return res
}

func slowCode(err error) proto.RefuseCode {
	code, _ := slowRetry(err)
	return code
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// stableSession is how long a session must last for the next reconnect to
// start again from the shortest backoff.
const stableSession = 10 * time.Second

// backoff is capped exponential backoff with jitter: each wait is drawn from
// [d/2, d] with d doubling from 500 ms up to max, so a fleet that lost the
// relay at once does not come back at once.
type backoff struct {
	max time.Duration
	d   time.Duration
}

func (b *backoff) next() time.Duration {
	b.d = min(max(2*b.d, 500*time.Millisecond), b.max)
	half := b.d / 2
	return half + rand.N(b.d-half+1)
}

func (b *backoff) reset() { b.d = 0 }

// connect runs one session with candidate c, cands[index] of its attempt:
// dial, handshake, hello, then serve streams until the link dies or an
// earlier relay answers a probe (errMoveBack). welcomed reports whether the
// relay accepted the hello; onWelcome runs then, before anything else.
func (n *Node) connect(ctx context.Context, c candidate, index int, onWelcome func()) (welcomed bool, err error) {
	if c.err != nil {
		return false, c.err
	}
	hsCtx, cancel := context.WithTimeout(ctx, n.cfg.HandshakeTimeout)
	defer cancel()
	sess, transport, err := n.dial(hsCtx, c)
	if err != nil {
		return false, err
	}
	defer sess.Close()
	ctrl, err := sess.OpenStream(hsCtx)
	if err != nil {
		return false, fmt.Errorf("open control stream: %w", err)
	}
	if err := n.greet(hsCtx, ctrl, c, transport); err != nil {
		return false, err
	}
	cancel()
	onWelcome()

	var wg sync.WaitGroup
	defer wg.Wait()
	ended := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		ended <- n.control(ctrl, c.name)
		sess.Close()
	}()
	var moveTo *candidate // set before the session closes for it
	if index > 0 && n.cfg.PreferFirstAfter > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			earlier := func() []candidate { return n.earlierThan(sess.Context(), c) }
			if to, ok := preferFirst(sess.Context(), n.cfg.PreferFirstAfter, earlier, n.probe); ok {
				moveTo = &to
				sess.Close()
			}
		}()
	}
	stop := context.AfterFunc(ctx, func() { sess.Close() })
	defer stop()
	for {
		st, err := sess.AcceptStream(ctx)
		if err != nil {
			sess.Close()
			wg.Wait() // the prober has ended: moveTo is final
			if moveTo != nil {
				return true, &errMoveBack{to: *moveTo}
			}
			select {
			case cerr := <-ended:
				if cerr != nil {
					return true, cerr
				}
			default:
			}
			if sessErr := sess.Err(); sessErr != nil {
				return true, sessErr
			}
			return true, err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			n.serveStream(sess.Context(), st)
		}()
	}
}

// greet sends the hello and waits for the relay's welcome or refusal.
func (n *Node) greet(ctx context.Context, ctrl mux.Stream, c candidate, transport string) error {
	if dl, ok := ctx.Deadline(); ok {
		ctrl.SetDeadline(dl)
		defer ctrl.SetDeadline(time.Time{})
	}
	if n.cfg.EnrollToken != "" {
		// Before the hello, in the same flight; a relay that knows this key
		// ignores it.
		e := &proto.Enroll{Version: proto.Version, Playnode: n.cfg.Name, Token: n.cfg.EnrollToken}
		if err := proto.WriteMessage(ctrl, e); err != nil {
			return fmt.Errorf("send enroll: %w", err)
		}
	}
	if err := proto.WriteMessage(ctrl, &n.hello); err != nil {
		// A relay that refuses the hello closes at once, which can fail
		// the write after the hello went out; its refusal is buffered.
		if m, rerr := proto.ReadMessage(ctrl); rerr == nil {
			if r, ok := m.(*proto.Refuse); ok {
				return r
			}
		}
		return fmt.Errorf("send hello: %w", err)
	}
	m, err := proto.ReadMessage(ctrl)
	if err != nil {
		return fmt.Errorf("read welcome: %w", err)
	}
	switch m := m.(type) {
	case *proto.Welcome:
		n.logWelcome("connected to relay", c.name, m, "remote", c.addr, "transport", transport)
		return nil
	case *proto.Refuse:
		return m
	default:
		return fmt.Errorf("relay sent %T instead of a welcome", m)
	}
}

// control reads the relay's later messages: portalias updates and the
// refusal that ends a session (replaced, revoked, shutting down).
func (n *Node) control(ctrl mux.Stream, relay string) error {
	for {
		m, err := proto.ReadMessage(ctrl)
		if err != nil {
			return nil // the session's own error says more
		}
		switch m := m.(type) {
		case *proto.Welcome:
			n.logWelcome("portaliases updated", relay, m)
		case *proto.Refuse:
			return m
		case *proto.HostKeys:
			n.learnHostKeys(m, relay) // rotation.go
		default:
			return fmt.Errorf("relay sent unexpected %T", m)
		}
	}
}

func (n *Node) logWelcome(msg, relay string, w *proto.Welcome, extra ...any) {
	attrs := append([]any{"relay", relay}, extra...)
	got := map[string]bool{}
	for _, p := range w.Portaliases {
		attrs = append(attrs, p.Service, p.Portalias)
		got[p.Service] = true
	}
	n.log.Info(msg, attrs...)
	for name := range n.services {
		if !got[name] {
			n.log.Error("relay assigned no portalias to service (see the relay's log)", "service", name)
		}
	}
}

// serveStream answers one stream the relay opened: it reads the header,
// dials the named service from this node's own configuration (nothing else),
// reports the outcome and splices. ctx is the session's: once the session
// is dead, the service's connection is reset, so that a splice waiting on a
// service that sends nothing (after a clean end of the other direction)
// ends with its session, and Run's shutdown does not wait for the service.
func (n *Node) serveStream(ctx context.Context, st mux.Stream) {
	st.SetReadDeadline(time.Now().Add(n.cfg.HandshakeTimeout))
	name, err := proto.ReadStreamHeader(st)
	st.SetReadDeadline(time.Time{})
	if err != nil {
		n.log.Warn("bad stream header from relay", "err", err)
		st.Close()
		return
	}
	if !n.streams.acquire() {
		if warn, count := n.streams.refused(time.Now()); warn {
			n.log.Warn("streams refused: playnode at its limit", "max_streams", n.cfg.MaxStreams, "refused", count)
		}
		proto.WriteStreamStatus(st, proto.StatusRefused, fmt.Sprintf("playnode at its limit of %d streams (--max-streams)", n.cfg.MaxStreams))
		st.Close()
		return
	}
	defer n.streams.release()
	svc, ok := n.services[name]
	if !ok {
		n.log.Warn("relay asked for a service this playnode does not have", "service", name)
		proto.WriteStreamStatus(st, proto.StatusUnknownService, "no service "+name+" on this playnode")
		st.Close()
		return
	}
	d := net.Dialer{Timeout: n.cfg.DialTimeout}
	c, err := d.DialContext(ctx, "tcp", svc.Addr)
	if err != nil {
		n.log.Warn("dial service", "service", name, "err", err)
		proto.WriteStreamStatus(st, proto.StatusDialFailed, err.Error())
		st.Close()
		return
	}
	if err := proto.WriteStreamStatus(st, proto.StatusOK, ""); err != nil {
		c.Close()
		st.Close()
		return
	}
	tc := c.(*net.TCPConn)
	stop := context.AfterFunc(ctx, func() {
		tc.SetLinger(0)
		tc.Close()
	})
	defer stop()
	in, out, err := mux.Splice(st, tc)
	n.log.Debug("stream closed", "service", name, "in", in, "out", out, "err", err)
}
