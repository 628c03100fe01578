package mux

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/quic-go/quic-go"
	"golang.org/x/crypto/ssh"

	"paradigm/internal/identity"
)

// QUICClientConfig configures the node side of the QUIC transport. It uses
// the same key and the same HostKeyCallback as SSHClientConfig.
type QUICClientConfig struct {
	// Key is the node's ed25519 key (identity.LoadEd25519); its derived
	// certificate is the node's client certificate.
	Key ed25519.PrivateKey
	// User is the playnode name, sent as the certificate's CommonName;
	// informational, the relay binds names to keys.
	User string
	// HostKeyCallback verifies the relay's ed25519 key, taken from its
	// certificate. Required.
	HostKeyCallback ssh.HostKeyCallback
	// Addr is the relay address as the operator configured it, the hostname
	// HostKeyCallback checks. Default: raddr.
	Addr string
	// HandshakeTimeout covers the QUIC handshake and the relay's
	// authorization. Default 10s.
	HandshakeTimeout time.Duration
	// MaxStreams is how many streams the relay may have open to this node
	// at once. Default 10000.
	MaxStreams int
	Options
}

// DialQUIC runs the node side over pconn, a UDP socket the caller opened
// (so that tests and fault proxies can interpose, and so that MigrateQUIC
// can later move the session to another one): QUIC handshake with mutual
// certificates, then the relay's authorization, all under
// HandshakeTimeout. The relay's certificate must carry an ed25519 key,
// self-signed, which HostKeyCallback accepts; WebPKI plays no part. The
// returned Session owns pconn; on error pconn is closed.
func DialQUIC(ctx context.Context, pconn net.PacketConn, raddr net.Addr, cfg *QUICClientConfig) (Session, error) {
	s, err := dialQUIC(ctx, pconn, raddr, cfg)
	if err != nil {
		pconn.Close()
		return nil, err
	}
	return s, nil
}

func dialQUIC(ctx context.Context, pconn net.PacketConn, raddr net.Addr, cfg *QUICClientConfig) (Session, error) {
	addr := cmp.Or(cfg.Addr, raddr.String())
	opts, err := cfg.Options.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("quic client config: %w", err)
	}
	if cfg.HostKeyCallback == nil {
		return nil, errors.New("quic client config: HostKeyCallback is required")
	}
	if err := checkQUICKey(cfg.Key); err != nil {
		return nil, fmt.Errorf("quic client config: key: %w", err)
	}
	cert, err := identity.TLSCertificate(cfg.Key, cfg.User)
	if err != nil {
		return nil, fmt.Errorf("quic client config: %w", err)
	}
	timeout := cmp.Or(cfg.HandshakeTimeout, defaultHandshakeTimeout)
	hctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	tlsConf := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{ALPN},
		// The relay is not verified by WebPKI but by its pinned key, below:
		// the standard pattern for pinned self-signed certificates.
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			key, err := peerCertKey(raw)
			if err != nil {
				return err
			}
			return cfg.HostKeyCallback(addr, raddr, key)
		},
	}
	tuneSocketBuffers(pconn, opts.Logger)
	tr := &quic.Transport{Conn: pconn}
	qconf := quicConfig(opts, timeout, cmp.Or(cfg.MaxStreams, defaultQUICMaxStreams), false)
	conn, err := tr.Dial(hctx, raddr, tlsConf, qconf)
	if err != nil {
		tr.Close()
		return nil, fmt.Errorf("quic handshake with relay %s: %w", addr, err)
	}
	if err := awaitAuth(hctx, conn); err != nil {
		conn.CloseWithError(quicCodeClosed, "")
		tr.Close()
		if app := (*quic.ApplicationError)(nil); errors.As(err, &app) && app.Remote && app.ErrorCode == quicCodeRefused {
			err = fmt.Errorf("%w: %w", ErrKeyRefused, err)
		}
		return nil, fmt.Errorf("quic auth with relay %s: %w", addr, err)
	}
	s := newQUICSession(conn)
	s.log = opts.Logger
	s.transports = []*quic.Transport{tr}
	s.probe = startResetProbe(conn, opts.Keepalive)
	return s, nil
}

// awaitAuth reads the relay's authorization confirmation. A refusal
// arrives as the connection's close instead, with the relay's reason.
func awaitAuth(ctx context.Context, conn *quic.Conn) error {
	st, err := conn.AcceptUniStream(ctx)
	if err != nil {
		if conn.Context().Err() != nil {
			return context.Cause(conn.Context())
		}
		return err
	}
	if d, ok := ctx.Deadline(); ok {
		st.SetReadDeadline(d)
	}
	got, err := io.ReadAll(io.LimitReader(st, 2))
	if err != nil {
		return err
	}
	if len(got) != 1 || got[0] != quicAuthOK {
		return fmt.Errorf("unexpected confirmation % x", got)
	}
	return nil
}

// MigrateQUIC moves a node session made by DialQUIC to pconn, a new UDP
// socket (the node's address changed, or is about to: Wi-Fi to cellular):
// it probes the relay over pconn (QUIC path validation, RFC 9000 9) under
// ctx and, once the relay answered, sends everything over it. Streams
// carry on without loss. The session owns pconn from then on, even when
// the migration fails; on failure the session still uses its previous path.
//
// The previous sockets stay open until the session closes: quic-go v0.65
// ends a connection when any transport it has used closes, even one it
// has switched away from. Migrations are rare (one per network change),
// so this costs one idle socket each.
func MigrateQUIC(ctx context.Context, s Session, pconn net.PacketConn) error {
	qs, ok := s.(*quicSession)
	if !ok || qs.log == nil { // a relay session cannot migrate (RFC 9000 9: only clients do)
		pconn.Close()
		return fmt.Errorf("migrate: %T is not a QUIC node session", s)
	}
	tuneSocketBuffers(pconn, qs.log)
	tr := &quic.Transport{Conn: pconn}
	qs.mu.Lock()
	if qs.closed {
		qs.mu.Unlock()
		pconn.Close()
		return fmt.Errorf("migrate: %w", net.ErrClosed)
	}
	qs.transports = append(qs.transports, tr)
	qs.mu.Unlock()

	path, err := qs.conn.AddPath(tr)
	if err != nil {
		return fmt.Errorf("migrate to %s: %w", pconn.LocalAddr(), err)
	}
	if err := path.Probe(ctx); err != nil {
		path.Close()
		if qs.isDead() {
			return qs.deadErr()
		}
		return fmt.Errorf("migrate to %s: probe: %w", pconn.LocalAddr(), err)
	}
	if err := path.Switch(); err != nil {
		path.Close()
		return fmt.Errorf("migrate to %s: switch: %w", pconn.LocalAddr(), err)
	}
	local := pconn.LocalAddr()
	qs.local.Store(&local)
	return nil
}
