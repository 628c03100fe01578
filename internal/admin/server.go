// Package admin is the relay's operator surface over HTTP: a JSON API under
// /api/v1 built on the relay's live Snapshot, its events as Server-Sent
// Events, Prometheus metrics, health checks, signed webhooks and a status
// page. Handlers are thin: decode, call the relay, encode.
//
// # Who owns what
//
// Server owns its listener, the http.Server, the event ring (fed by one
// relay subscription, read by every SSE client) and the webhook sender (its
// own subscription and bounded queues). Run starts them and waits for all of
// them before it returns. Nothing here can block the relay: subscriptions
// drop and count what their reader does not take in time.
package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/netutil"

	"paradigm/internal/relay"
)

// Defaults of Config.
const (
	DefaultListen        = "127.0.0.1:4480"
	DefaultMaxSSEClients = 64
	DefaultMaxConns      = 256
	DefaultEventRing     = 1024
	DefaultHeartbeat     = 15 * time.Second
	DefaultWebhookGrace  = 30 * time.Second
	DefaultWebhookQueue  = 1024

	// MaxBodyBytes bounds a request body.
	MaxBodyBytes = 64 << 10
	// maxTokenFileBytes bounds the token file.
	maxTokenFileBytes = 1 << 20

	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	idleTimeout       = 60 * time.Second
	writeTimeout      = 30 * time.Second // every response but the event stream
	maxHeaderBytes    = 16 << 10
)

// AddrFile, in the relay's data folder, names the admin endpoint of the
// relay running there, for `paradigm-relay ls` and `ssh-config`.
const AddrFile = "admin.json"

// Config is everything the admin server needs; internal/relaycli fills it
// from the flags of paradigm-relay serve.
type Config struct {
	Relay *relay.Relay
	// Listen is the admin address; loopback unless the operator
	// deliberately exposes it (then TokenFile is required).
	Listen string
	// TokenFile holds bearer tokens, one per line (blank lines and lines
	// starting with # ignored). Write actions need one, even on loopback.
	TokenFile string
	// TLSCert and TLSKey serve HTTPS; without them a non-loopback Listen
	// logs a loud warning.
	TLSCert, TLSKey string
	// MaxSSEClients bounds the event streams served at once.
	MaxSSEClients int
	// MaxConns bounds the endpoint's open connections; more wait in the
	// kernel's accept queue until one closes.
	MaxConns int
	// EventRing is how many recent events a reconnecting stream can
	// resume from (Last-Event-ID).
	EventRing int
	// Heartbeat is how often an idle event stream gets a comment line.
	Heartbeat time.Duration

	// Webhooks are URLs every event is POSTed to, signed with the secret
	// in WebhookSecretFile.
	Webhooks          []string
	WebhookSecretFile string
	// WebhookGrace: a playnode that comes back within it after going
	// down sends nothing.
	WebhookGrace time.Duration
	// WebhookQueue bounds the events waiting for each receiver.
	WebhookQueue int
	// WebhookBackoff is the first retry delay (doubled up to
	// WebhookBackoffMax) and WebhookAttempts the tries of one delivery.
	WebhookBackoff, WebhookBackoffMax time.Duration
	WebhookAttempts                   int
	WebhookTimeout                    time.Duration
	// WebhookTransport sends deliveries; nil is http.DefaultTransport.
	WebhookTransport http.RoundTripper

	Logger *slog.Logger
}

// Server is the admin endpoint of one relay.
type Server struct {
	cfg      Config
	log      *slog.Logger
	relay    *relay.Relay
	ln       net.Listener
	loopback bool // Listen is a loopback address
	tokens   [][32]byte
	srv      *http.Server
	ring     *ring
	hooks    *webhooks // nil without Webhooks
	sse      chan struct{}
	tls      bool

	closeOnce sync.Once
}

// New checks cfg, reads the token and secret files and binds Listen. Run
// serves; Close releases what New took if Run is never called.
func New(cfg Config) (*Server, error) {
	if cfg.Relay == nil {
		return nil, errors.New("admin: no relay")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	if cfg.MaxSSEClients <= 0 {
		cfg.MaxSSEClients = DefaultMaxSSEClients
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.EventRing <= 0 {
		cfg.EventRing = DefaultEventRing
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = DefaultHeartbeat
	}
	if (cfg.TLSCert == "") != (cfg.TLSKey == "") {
		return nil, errors.New("--admin-tls-cert and --admin-tls-key go together")
	}
	s := &Server{cfg: cfg, log: cfg.Logger, relay: cfg.Relay, sse: make(chan struct{}, cfg.MaxSSEClients)}
	host, _, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("--admin %q: %w", cfg.Listen, err)
	}
	s.loopback = isLoopbackHost(host)
	if cfg.TokenFile != "" {
		if s.tokens, err = readTokens(cfg.TokenFile); err != nil {
			return nil, err
		}
	}
	if !s.loopback && len(s.tokens) == 0 {
		return nil, fmt.Errorf("--admin %s is not a loopback address: it needs --admin-token-file", cfg.Listen)
	}
	if len(cfg.Webhooks) > 0 {
		if s.hooks, err = newWebhooks(cfg); err != nil {
			return nil, err
		}
	}
	var tlsCfg *tls.Config
	if cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("--admin-tls-cert/--admin-tls-key: %w", err)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		s.tls = true
	}
	if s.ln, err = net.Listen("tcp", cfg.Listen); err != nil {
		return nil, fmt.Errorf("admin listen: %w", err)
	}
	s.ln = netutil.LimitListener(s.ln, s.cfg.MaxConns)
	if tlsCfg != nil {
		s.ln = tls.NewListener(s.ln, tlsCfg)
	}
	if !s.loopback && !s.tls {
		s.log.Warn("admin endpoint is NOT on loopback and NOT behind TLS: its bearer tokens and the fleet's state cross the network in clear text (set --admin-tls-cert and --admin-tls-key)", "addr", cfg.Listen)
	}
	s.ring = newRing(cfg.EventRing)
	s.srv = &http.Server{
		Handler:           s.routes(),
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	return s, nil
}

// Addr is the address the admin endpoint listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// URL is the admin endpoint's base URL.
func (s *Server) URL() string {
	scheme := "http"
	if s.tls {
		scheme = "https"
	}
	return scheme + "://" + s.ln.Addr().String()
}

// Run serves until ctx is cancelled or the relay stops, then closes every
// stream and waits for its goroutines. It returns nil on cancellation.
func (s *Server) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	snap, sub := s.relay.Subscribe(s.cfg.EventRing)
	s.ring.begin(snap.Seq)
	wg.Go(func() {
		s.ring.feed(sub)
		cancel() // the relay stopped
	})
	defer sub.Close()
	if s.hooks != nil {
		wg.Go(func() { s.hooks.run(ctx, s.relay) })
	}
	s.srv.BaseContext = func(net.Listener) context.Context { return ctx }
	s.writeAddrFile()
	s.log.Info("admin endpoint listening", "addr", s.URL())
	errc := make(chan error, 1)
	wg.Go(func() { errc <- s.srv.Serve(s.ln) })
	<-ctx.Done()
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	err := s.srv.Shutdown(sctx)
	if err != nil {
		s.srv.Close()
	}
	sub.Close()
	wg.Wait()
	s.removeAddrFile()
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) {
		return serr
	}
	return nil
}

// Close releases the listener of a server whose Run was never called.
func (s *Server) Close() error {
	var err error
	s.closeOnce.Do(func() { err = s.ln.Close() })
	return err
}

type addrDoc struct {
	URL string `json:"url"`
}

func (s *Server) writeAddrFile() {
	b, _ := json.Marshal(addrDoc{URL: s.URL()})
	path := filepath.Join(s.relay.DataDir(), AddrFile)
	if err := os.WriteFile(path, append(b, '\n'), 0o600); err != nil {
		s.log.Warn("write admin address file", "err", err)
	}
}

func (s *Server) removeAddrFile() {
	os.Remove(filepath.Join(s.relay.DataDir(), AddrFile))
}

// readTokens reads a token file: one bearer token a line.
func readTokens(path string) ([][32]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("--admin-token-file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxTokenFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("--admin-token-file: %w", err)
	}
	if len(b) > maxTokenFileBytes {
		return nil, fmt.Errorf("--admin-token-file %s: larger than %d bytes", path, maxTokenFileBytes)
	}
	var out [][32]byte
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if len(line) < 16 || strings.ContainsAny(line, " \t") {
			return nil, fmt.Errorf("%s:%d: a token is one word of at least 16 characters", path, i+1)
		}
		out = append(out, sha256.Sum256([]byte(line)))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("--admin-token-file %s: no token in it", path)
	}
	return out, nil
}

// hasToken reports whether r carries one of the tokens; every token is
// compared, in constant time, whatever matches.
func (s *Server) hasToken(r *http.Request) bool {
	auth := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(auth, "Bearer ")
	if !ok || len(s.tokens) == 0 {
		return false
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	match := 0
	for _, t := range s.tokens {
		match |= subtle.ConstantTimeCompare(sum[:], t[:])
	}
	return match == 1
}

// fromLoopback reports whether r comes from this machine, directly: the
// endpoint listens on loopback, the peer is loopback, no proxy header says
// it forwards someone else's request, and the Host is a loopback name (a
// web page that rebinds its own name to 127.0.0.1 gets nothing).
func (s *Server) fromLoopback(r *http.Request) bool {
	if !s.loopback || r.Header.Get("X-Forwarded-For") != "" || r.Header.Get("Forwarded") != "" || r.Header.Get("X-Real-Ip") != "" {
		return false
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(r.Host); err == nil {
		host = h
	}
	if !isLoopbackHost(strings.Trim(host, "[]")) {
		return false
	}
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	return err == nil && ap.Addr().Unmap().IsLoopback()
}

func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}

// RunWith runs the relay and its admin server a until ctx is cancelled or
// the relay stops; each stops the other. It is what `paradigm-relay serve`
// runs.
func RunWith(ctx context.Context, r *relay.Relay, a *Server) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	var aerr error
	wg.Go(func() {
		aerr = a.Run(ctx)
		cancel()
	})
	rerr := r.Run(ctx)
	cancel()
	wg.Wait()
	return errors.Join(rerr, aerr)
}
