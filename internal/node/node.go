package node

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"runtime"
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
	trim     *trimmer
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
	n.trim = newTrimmer(n.streams, n.log)
	if err := n.hello.Validate(); err != nil {
		return nil, err
	}
	if n.quicKey, err = loadQUICKey(&n.cfg); err != nil {
		return nil, fmt.Errorf("transport %s: %w", cfg.Transport, err)
	}
	n.hostKey = hostKeyCallback(&n.cfg, n.log)
	return n, nil
}

// Run connects to the relay and reconnects forever, with exponential backoff
// and jitter capped at BackoffMax, until ctx is cancelled; it then returns
// nil.
func (n *Node) Run(ctx context.Context) error {
	n.log.Info("node starting", "relay", n.cfg.Relay, "key_fingerprint", identity.Fingerprint(n.key.PublicKey()), "services", len(n.services), "procs", runtime.GOMAXPROCS(0))
	b := backoff{max: n.cfg.BackoffMax}
	// While the relay refuses this node for a reason only its operator can
	// change, the wait grows the same way but up to RefusedRetry: the first
	// retries are quick (an authorize typed just after the node started
	// takes effect at once), later ones minutes apart.
	refused := backoff{max: n.cfg.RefusedRetry}
	defer n.trim.stop() // trim.go
	for attempt := 1; ; attempt++ {
		start := time.Now()
		welcomed, err := n.connect(ctx)
		if ctx.Err() != nil {
			return nil
		}
		// A session that worked for a while starts the backoff afresh; one
		// that was refused or dropped at once keeps growing it, so a
		// misconfigured node does not hammer the relay.
		if welcomed && time.Since(start) > stableSession {
			b.reset()
			attempt = 1
		}
		var delay time.Duration
		var hint []any
		if code, slow := slowRetry(err); slow {
			delay = refused.next()
			hint = n.refusedHint(code)
		} else {
			refused.reset()
			delay = b.next()
		}
		n.log.Warn("disconnected from relay", append([]any{"err", err, "attempt", attempt, "retry_in", delay.Round(time.Millisecond).String()}, hint...)...)
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return nil
		}
	}
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

// connect runs one session: dial, handshake, hello, then serve streams until
// the link dies. welcomed reports whether the relay accepted the hello.
func (n *Node) connect(ctx context.Context) (welcomed bool, err error) {
	hsCtx, cancel := context.WithTimeout(ctx, n.cfg.HandshakeTimeout)
	defer cancel()
	sess, transport, err := n.dial(hsCtx)
	if err != nil {
		return false, err
	}
	defer sess.Close()
	ctrl, err := sess.OpenStream(hsCtx)
	if err != nil {
		return false, fmt.Errorf("open control stream: %w", err)
	}
	if err := n.greet(hsCtx, ctrl, transport); err != nil {
		return false, err
	}
	cancel()
	// Start-up and the handshake are over: their pages of the executable
	// can go (trim.go).
	n.trim.sessionUp()

	var wg sync.WaitGroup
	defer wg.Wait()
	ended := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		ended <- n.control(ctrl)
		sess.Close()
	}()
	stop := context.AfterFunc(ctx, func() { sess.Close() })
	defer stop()
	for {
		st, err := sess.AcceptStream(ctx)
		if err != nil {
			sess.Close()
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
func (n *Node) greet(ctx context.Context, ctrl mux.Stream, transport string) error {
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
		n.logWelcome("connected to relay", m, "transport", transport)
		return nil
	case *proto.Refuse:
		return m
	default:
		return fmt.Errorf("relay sent %T instead of a welcome", m)
	}
}

// control reads the relay's later messages: portalias updates and the
// refusal that ends a session (replaced, revoked, shutting down).
func (n *Node) control(ctrl mux.Stream) error {
	for {
		m, err := proto.ReadMessage(ctrl)
		if err != nil {
			return nil // the session's own error says more
		}
		switch m := m.(type) {
		case *proto.Welcome:
			n.logWelcome("portaliases updated", m)
		case *proto.Refuse:
			return m
		case *proto.HostKeys:
			n.learnHostKeys(m) // rotation.go
		default:
			return fmt.Errorf("relay sent unexpected %T", m)
		}
	}
}

func (n *Node) logWelcome(msg string, w *proto.Welcome, extra ...any) {
	attrs := append([]any{"relay", n.cfg.Relay}, extra...)
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
	defer n.trim.streamEnded()
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
