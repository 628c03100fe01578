package mux

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"golang.org/x/crypto/ssh"

	"paradigm/internal/identity"
	"paradigm/internal/logthrottle"
)

// ErrPeerHandshake is matched by the QUICListener.Accept errors that concern
// one peer (its key refused, the peer gone during setup): log them and call
// Accept again. Any other Accept error means the listener is done.
var ErrPeerHandshake = errors.New("quic peer not accepted")

// PeerHandshakeError is the error Accept returns for one refused or
// vanished peer: it matches ErrPeerHandshake and wraps the cause, and
// carries the peer's address so that the caller can rate-limit its log
// line per source (logthrottle).
type PeerHandshakeError struct {
	Remote net.Addr
	Err    error
}

func (e *PeerHandshakeError) Error() string {
	return fmt.Sprintf("%v: %s: %v", ErrPeerHandshake, e.Remote, e.Err)
}

func (e *PeerHandshakeError) Unwrap() []error { return []error{ErrPeerHandshake, e.Err} }

// QUICServerConfig configures the relay side of the QUIC transport. It uses
// the same key and the same Authorize as SSHServerConfig.
type QUICServerConfig struct {
	// HostKey is the relay's ed25519 host key (identity.LoadEd25519); its
	// derived certificate is the relay's QUIC identity.
	HostKey ed25519.PrivateKey
	// Authorize maps a node key to its playnode name, or returns an error.
	// user is the CommonName of the node's certificate (the name it claims).
	// Called once per connection, after the TLS handshake.
	Authorize func(remote net.Addr, user string, key ssh.PublicKey) (playnode string, err error)
	// HandshakeTimeout bounds the QUIC handshake: quic-go gives up after
	// HandshakeTimeout without a packet from the peer, or 2*HandshakeTimeout
	// in all. Default 10s.
	HandshakeTimeout time.Duration
	// MaxPeerStreams is how many streams the node may have open at once:
	// its stream credit (quic-go's MaxIncomingStreams), which quic-go
	// returns only once both ends have closed a stream, and which a peer
	// cannot exceed (quic-go closes the connection with STREAM_LIMIT_ERROR).
	// The relay sets 1, the control stream: the relay never closes it while
	// the session lives, so the node can open no other. Default 10000.
	// The streams the relay opens are bounded by the node's MaxStreams.
	MaxPeerStreams int
	// Admit, when set, is asked before quic-go spends a handshake on a new
	// connection from remote, once remote has proved it receives what is
	// sent to it (a Retry round trip, see admitConn): forged source
	// addresses never reach it. false refuses the connection at once
	// (CONNECTION_REFUSED); true holds a slot until release is called,
	// which the listener does once, when the handshake ended either way. It
	// must not block: it runs on quic-go's packet loop. The relay bounds
	// handshakes in total and per address with it, as it does for SSH.
	Admit func(remote net.Addr) (release func(), ok bool)
	// Throttle, when set, takes the log lines that peers cause (a node
	// certificate refused, reason ReasonBadCertificate), so that a
	// redialling peer cannot flood the log; nil logs each one at Warn on
	// Options.Logger.
	Throttle *logthrottle.Limiter
	Options
}

// admitKey holds a connection's release func in its context.
type admitKey struct{}

// alwaysRetry is the Transport's VerifySourceAddress: every Initial without
// a valid token is answered with a Retry (RFC 9000 8.1.2), and quic-go
// creates a connection, and calls ConnContext (admitConn), only for an
// Initial that returns the Retry's token from the address it was sent to.
//
// Always, not only under load: a QUIC Initial's source address is
// unverified, and with Admit run on it, about 50 forged Initials a second
// held every handshake slot (each for the handshake timeout) and locked
// every QUIC playnode out. Retry under load only would let forged Initials
// take the slots up to the load threshold, and a threshold needs tuning;
// Retry always leaves them none. The price is one round trip more per
// connection, paid once per session by nodes that stay connected for days.
// A forged Initial now costs the relay one Retry packet (smaller than the
// 1200-byte Initial, so no amplification; quic-go drops Retries it cannot
// send fast enough) and no state.
func alwaysRetry(net.Addr) bool { return true }

// admitConn is the Transport's ConnContext: it applies Admit to every new
// connection attempt and arranges its release. quic-go calls it once the
// client's address is validated (alwaysRetry); an unvalidated one is
// refused without asking Admit, should quic-go ever call it for one.
func (l *QUICListener) admitConn(ctx context.Context, info *quic.ClientInfo) (context.Context, error) {
	if !info.AddrVerified {
		return nil, errAddrNotVerified
	}
	if l.cfg.Admit == nil {
		return ctx, nil
	}
	release, ok := l.cfg.Admit(info.RemoteAddr)
	if !ok {
		return nil, errHandshakeRefused
	}
	var once sync.Once
	done := func() { once.Do(release) }
	context.AfterFunc(ctx, done) // the handshake failed, or the connection ended
	return context.WithValue(ctx, admitKey{}, done), nil
}

// handshakeDone releases the Admit slot of a connection whose handshake
// completed.
func handshakeDone(conn *quic.Conn) {
	if done, ok := conn.Context().Value(admitKey{}).(func()); ok {
		done()
	}
}

var (
	errHandshakeRefused = errors.New("handshake limit reached")
	errAddrNotVerified  = errors.New("client address not validated")
)

// QUICListener accepts node sessions on one UDP socket.
type QUICListener struct {
	tr   *quic.Transport
	ln   *quic.Listener
	cfg  QUICServerConfig
	opts Options

	mu       sync.Mutex
	sessions map[*quicSession]struct{}
	closed   bool
	once     sync.Once
}

// ListenQUIC serves QUIC on pconn, which the listener owns from then on
// (Close closes it, and so does a failing ListenQUIC).
func ListenQUIC(pconn net.PacketConn, cfg *QUICServerConfig) (*QUICListener, error) {
	l, err := listenQUIC(pconn, cfg)
	if err != nil {
		pconn.Close()
		return nil, err
	}
	return l, nil
}

func listenQUIC(pconn net.PacketConn, cfg *QUICServerConfig) (*QUICListener, error) {
	opts, err := cfg.Options.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("quic server config: %w", err)
	}
	if cfg.Authorize == nil {
		return nil, errors.New("quic server config: Authorize is required")
	}
	if err := checkQUICKey(cfg.HostKey); err != nil {
		return nil, fmt.Errorf("quic server config: host key: %w", err)
	}
	cert, err := identity.TLSCertificate(cfg.HostKey, "paradigm relay")
	if err != nil {
		return nil, fmt.Errorf("quic server config: %w", err)
	}
	tuneSocketBuffers(pconn, opts.Logger)
	l := &QUICListener{cfg: *cfg, opts: opts, sessions: make(map[*quicSession]struct{})}
	base := &tls.Config{
		MinVersion:             tls.VersionTLS13,
		Certificates:           []tls.Certificate{cert},
		ClientAuth:             tls.RequireAnyClientCert,
		NextProtos:             []string{ALPN},
		SessionTicketsDisabled: true, // every connection proves its key afresh
	}
	tlsConf := base.Clone()
	tlsConf.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		c := base.Clone()
		c.VerifyPeerCertificate = l.verifyNodeCert(hello.Conn.RemoteAddr())
		return c, nil
	}
	resetKey, err := statelessResetKey(cfg.HostKey)
	if err != nil {
		return nil, fmt.Errorf("quic server config: %w", err)
	}
	l.tr = &quic.Transport{
		Conn:                pconn,
		StatelessResetKey:   resetKey,
		VerifySourceAddress: alwaysRetry,
		ConnContext:         l.admitConn,
	}
	qconf := quicConfig(opts, cmp.Or(cfg.HandshakeTimeout, defaultHandshakeTimeout), cmp.Or(cfg.MaxPeerStreams, defaultQUICMaxStreams), true)
	l.ln, err = l.tr.Listen(tlsConf, qconf)
	if err != nil {
		l.tr.Close()
		return nil, fmt.Errorf("listen quic: %w", err)
	}
	return l, nil
}

// statelessResetKey derives the relay's stateless reset key from its host
// key, so that a restarted relay resets its old connections at the nodes'
// next packet (see resetProbe) instead of leaving them to time out. HKDF
// (RFC 5869) with a label of its own: the key reveals nothing of the host
// key, and no other use of the host key can produce it.
func statelessResetKey(hostKey ed25519.PrivateKey) (*quic.StatelessResetKey, error) {
	b, err := hkdf.Key(sha256.New, hostKey.Seed(), nil, "paradigm quic stateless reset key", len(quic.StatelessResetKey{}))
	if err != nil {
		return nil, fmt.Errorf("derive stateless reset key: %w", err)
	}
	return (*quic.StatelessResetKey)(b), nil
}

// verifyNodeCert accepts one self-signed ed25519 certificate, whatever its
// key: authorization happens in Accept, where a refusal can be reported to
// both ends. Failures here never reach Accept (quic-go drops the
// connection), so they are logged.
func (l *QUICListener) verifyNodeCert(remote net.Addr) func([][]byte, [][]*x509.Certificate) error {
	return func(raw [][]byte, _ [][]*x509.Certificate) error {
		_, err := peerCertKey(raw)
		if err != nil {
			l.warnPeer(ReasonBadCertificate, remote, "quic node certificate refused", "err", err)
		}
		return err
	}
}

// ReasonBadCertificate is the logthrottle reason of a refused QUIC node
// certificate.
const ReasonBadCertificate = "bad quic certificate"

// warnPeer logs a line a peer caused, through Throttle when set.
func (l *QUICListener) warnPeer(reason string, remote net.Addr, msg string, attrs ...any) {
	if l.cfg.Throttle == nil {
		l.opts.Logger.Warn(msg, append(attrs, "reason", reason, "remote", remote.String())...)
		return
	}
	l.cfg.Throttle.Warn(reason, logthrottle.Source(remote), msg, attrs...)
}

// peerCertKey checks the peer's certificate chain: exactly one self-signed
// ed25519 certificate (identity.CertificateKey explains why that suffices).
func peerCertKey(raw [][]byte) (ssh.PublicKey, error) {
	if len(raw) != 1 {
		return nil, fmt.Errorf("peer sent %d certificates, want 1", len(raw))
	}
	cert, err := x509.ParseCertificate(raw[0])
	if err != nil {
		return nil, fmt.Errorf("parse peer certificate: %w", err)
	}
	return identity.CertificateKey(cert)
}

// Accept returns the next authorized node session. The TLS handshake
// (certificates both ways) has completed; Accept authorizes the node's key
// with Authorize and confirms it to the node. A refused or vanished peer
// yields a *PeerHandshakeError (matching ErrPeerHandshake and wrapping
// Authorize's error): the listener goes on. Peers whose certificate is
// malformed never get this far; they are logged at Warn (through Throttle
// when set). Any other error (listener closed, ctx done) is final.
func (l *QUICListener) Accept(ctx context.Context) (Session, Peer, error) {
	conn, err := l.ln.Accept(ctx)
	if err != nil {
		return nil, Peer{}, fmt.Errorf("accept quic: %w", err)
	}
	handshakeDone(conn)
	remote := conn.RemoteAddr()
	fail := func(code quic.ApplicationErrorCode, msg string, err error) (Session, Peer, error) {
		conn.CloseWithError(code, msg)
		return nil, Peer{}, &PeerHandshakeError{Remote: remote, Err: err}
	}
	state := conn.ConnectionState().TLS
	if len(state.PeerCertificates) != 1 { // unreachable: RequireAnyClientCert and verifyNodeCert
		return fail(quicCodeRefused, "no client certificate", errors.New("no client certificate"))
	}
	leaf := state.PeerCertificates[0]
	key, err := identity.CertificateKey(leaf)
	if err != nil { // unreachable: verifyNodeCert checked it
		return fail(quicCodeRefused, "bad client certificate", err)
	}
	playnode, err := l.cfg.Authorize(remote, leaf.Subject.CommonName, key)
	if err == nil && playnode == "" {
		err = errors.New("authorize returned no playnode name")
	}
	if err != nil {
		return fail(quicCodeRefused, "key "+identity.Fingerprint(key)+" not authorized", fmt.Errorf("quic auth: %w", err))
	}
	if err := confirmAuth(conn); err != nil {
		return fail(quicCodeClosed, "", fmt.Errorf("confirm auth: %w", err))
	}
	s := newQUICSession(conn)
	s.drained = make(chan struct{})
	go drainDatagrams(conn, s.drained)
	if !l.track(s) {
		s.Close()
		return nil, Peer{}, fmt.Errorf("accept quic: %w", net.ErrClosed)
	}
	return s, Peer{Playnode: playnode, Key: key, ClientVersion: state.NegotiatedProtocol, Remote: remote}, nil
}

// confirmAuth sends the node the one-byte authorization confirmation on a
// unidirectional stream. Neither call blocks: the node allows one such
// stream, and one byte fits any window.
func confirmAuth(conn *quic.Conn) error {
	st, err := conn.OpenUniStream()
	if err != nil {
		return err
	}
	if _, err := st.Write([]byte{quicAuthOK}); err != nil {
		return err
	}
	return st.Close()
}

// track registers s so that Close ends it; false once the listener is closed.
func (l *QUICListener) track(s *quicSession) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.sessions[s] = struct{}{}
	s.onEnd = func() {
		l.mu.Lock()
		delete(l.sessions, s)
		l.mu.Unlock()
	}
	return true
}

// Close stops accepting and closes the socket. Sessions accepted from the
// listener share its socket, so they end too: each gets a CONNECTION_CLOSE
// first, so that nodes reconnect at once rather than after an idle
// timeout. Idempotent.
func (l *QUICListener) Close() error {
	l.once.Do(func() {
		l.mu.Lock()
		l.closed = true
		sessions := make([]*quicSession, 0, len(l.sessions))
		for s := range l.sessions {
			sessions = append(sessions, s)
		}
		l.mu.Unlock()
		l.ln.Close()
		var wg sync.WaitGroup
		for _, s := range sessions {
			wg.Go(func() { s.conn.CloseWithError(quicCodeShutdown, "relay shutting down") })
		}
		wg.Wait()
		l.tr.Close()
		l.tr.Conn.Close()
		for _, s := range sessions {
			<-s.done // set when the connection ended
			<-s.drained
		}
	})
	return nil
}

// Addr is the UDP address the listener serves on.
func (l *QUICListener) Addr() net.Addr { return l.ln.Addr() }
