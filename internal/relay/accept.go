package relay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"time"

	"golang.org/x/crypto/ssh"

	"paradigm/internal/identity"
	"paradigm/internal/logthrottle"
	"paradigm/internal/mux"
	"paradigm/internal/proto"
)

// acceptNodes accepts playnode SSH connections until the listener closes,
// admitting each against the per-address limit.
func (r *Relay) acceptNodes(ctx context.Context) error {
	var delay time.Duration
	for {
		conn, err := r.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// EMFILE and friends: back off instead of spinning.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			r.log.Warn("accept playnode connection", "err", err)
			select {
			case <-time.After(delay):
			case <-ctx.Done():
			}
			continue
		}
		delay = 0
		src, ok := r.unauth.acquire(conn.RemoteAddr(), r.cfg.MaxUnauthPerAddress)
		if !ok {
			if src.IsValid() {
				r.throttle.Warn("unauth-per-address", src, "too many unauthenticated connections from one address, closed", "remote", conn.RemoteAddr().String(), "transport", "ssh", "limit", r.cfg.MaxUnauthPerAddress)
			}
			conn.Close()
			continue
		}
		r.wg.Go(func() { r.serveNode(ctx, conn, func() { r.unauth.release(src) }) })
	}
}

// serveNode runs one playnode SSH connection from handshake to disconnect.
// The connection counts against its source address (release) from the
// start. It takes a handshake slot only once its first bytes show an SSH
// client (within FirstBytesTimeout), so that a flood of connections that
// send nothing, from however many addresses, holds no slot; and it keeps
// the slot until its hello is answered, so that one that authenticates and
// then sends nothing costs a slot for HandshakeTimeout at most.
func (r *Relay) serveNode(ctx context.Context, conn net.Conn, release func()) {
	defer release()
	r.reg.counters.handshakes.Add(1)
	deadline := time.Now().Add(r.cfg.HandshakeTimeout)
	peeked, err := mux.WaitSSHVersion(conn, time.Now().Add(r.cfg.FirstBytesTimeout))
	if err != nil {
		if ctx.Err() == nil {
			r.reg.counters.handshakeFailed.Add(1)
			r.throttle.Warn("first-bytes", logthrottle.Source(conn.RemoteAddr()), "no ssh version line in time, closed", "remote", conn.RemoteAddr().String(), "err", err)
		}
		conn.Close()
		return
	}
	conn = peeked
	select {
	case r.hsSlots <- struct{}{}:
		defer func() { <-r.hsSlots }()
	case <-time.After(r.cfg.HandshakeTimeout):
		conn.Close()
		r.reg.counters.handshakeFailed.Add(1)
		r.throttle.Warn("handshake-slots", logthrottle.Source(conn.RemoteAddr()), "too many handshakes in progress, connection closed", "remote", conn.RemoteAddr().String(), "transport", "ssh", "limit", r.cfg.MaxHandshakes)
		return
	case <-ctx.Done():
		conn.Close()
		return
	}
	ms, peer, err := r.acceptSSH(ctx, conn, deadline)
	if err != nil {
		if ctx.Err() == nil {
			r.reg.counters.handshakeFailed.Add(1)
			r.throttle.Warn("handshake-failed", logthrottle.Source(conn.RemoteAddr()), "playnode handshake failed", "remote", conn.RemoteAddr().String(), "transport", "ssh", "err", err)
		}
		return
	}
	r.serveSession(ctx, ms, peer, "ssh", deadline)
}

// acceptSSH runs the SSH handshake and authentication, by deadline.
func (r *Relay) acceptSSH(ctx context.Context, conn net.Conn, deadline time.Time) (mux.Session, mux.Peer, error) {
	hsCtx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	return mux.AcceptSSH(hsCtx, conn, &mux.SSHServerConfig{
		HostKey:          r.hostKey,
		Authorize:        r.authorize,
		HandshakeTimeout: r.cfg.HandshakeTimeout,
		MaxPeerStreams:   1,         // the control stream: a node opens no other
		MaxPeerBytes:     256 << 10, // and sends on it an Enroll and a Hello, 64 KiB each at most
		PeerStreams:      peerStreams,
		Options:          mux.Options{Keepalive: r.cfg.Keepalive, Logger: r.log},
	})
}

// listenQUIC opens the QUIC listener with the host key as its identity.
func (r *Relay) listenQUIC() error {
	priv, err := identity.LoadEd25519(filepath.Join(r.cfg.DataDir, HostKeyFile))
	if err != nil {
		return fmt.Errorf("host key for quic: %w", err)
	}
	pconn, err := net.ListenPacket("udp", r.cfg.QUICListen)
	if err != nil {
		return fmt.Errorf("listen for playnodes (quic): %w", err)
	}
	r.quic, err = mux.ListenQUIC(pconn, &mux.QUICServerConfig{
		HostKey:          priv,
		Authorize:        r.authorize,
		HandshakeTimeout: r.cfg.HandshakeTimeout,
		Admit:            r.admitQUIC,
		Throttle:         r.throttle,
		MaxPeerStreams:   1, // the control stream: a node opens no other
		Options:          mux.Options{Keepalive: r.cfg.Keepalive, Logger: r.log},
	})
	if err != nil {
		return fmt.Errorf("listen for playnodes (quic): %w", err)
	}
	return nil
}

// acceptQUIC serves QUIC sessions until the listener closes. A peer that
// fails authentication is logged and the listener goes on.
func (r *Relay) acceptQUIC(ctx context.Context) {
	for {
		s, peer, err := r.quic.Accept(ctx)
		if errors.Is(err, mux.ErrPeerHandshake) {
			r.reg.counters.handshakeFailed.Add(1)
			var src netip.Addr
			if pe := (*mux.PeerHandshakeError)(nil); errors.As(err, &pe) {
				src = logthrottle.Source(pe.Remote)
			}
			r.throttle.Warn("handshake-failed", src, "playnode handshake failed", "transport", "quic", "err", err)
			continue
		}
		if err != nil {
			if ctx.Err() == nil {
				r.log.Error("quic listener stopped", "err", err)
			}
			return
		}
		// The deadline doubles as the connection's start (beginPending: the
		// newer connection of a key wins), so it is read here, in accept
		// order, not in the goroutine, which may run after a later one's.
		deadline := time.Now().Add(r.cfg.HandshakeTimeout)
		r.wg.Go(func() { r.serveSession(ctx, s, peer, "quic", deadline) })
	}
}

// authorize maps a node's key to the playnode it is bound to. Unknown keys
// are logged with their fingerprint so the operator can authorize them.
func (r *Relay) authorize(remote net.Addr, user string, key ssh.PublicKey) (string, error) {
	if user == proto.MeshUser && r.cluster != nil {
		return r.authorizeRelay(remote, key) // mesh.go
	}
	name, ok := r.reg.authorized(key.Marshal())
	if !ok {
		if name, ok := r.authorizeEnrolling(remote, user, key); ok { // enroll.go
			return name, nil
		}
		r.reg.counters.authFailed.Add(1)
		r.throttle.Warn("unknown-key", logthrottle.Source(remote), "unknown node key refused", "remote", remote.String(), "user", user,
			"fingerprint", identity.Fingerprint(key), "authorize", fmt.Sprintf("paradigm-relay authorize --data %s %s '%s'", r.cfg.DataDir, safeUser(user), identity.PublicLine(key, "")))
		return "", fmt.Errorf("key %s is not authorized", identity.Fingerprint(key))
	}
	return name, nil
}

// safeUser is the claimed name for the authorize hint, or a placeholder
// when the claim is not a valid playnode name.
func safeUser(user string) string {
	if err := validPlaynode(user); err != nil {
		return "NAME"
	}
	return user
}

// peerStreams is how many streams a peer may open: a playnode its control
// stream, another relay of the cluster one per connection it forwards here
// (each then bounded by its playnode's --max-streams-per-node; mesh.go).
func peerStreams(peer string) int {
	if peer == meshPeer {
		return 0 // no limit but yamux's accept backlog, which serveMesh drains
	}
	return 1
}
