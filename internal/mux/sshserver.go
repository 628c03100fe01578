package mux

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"
)

// Peer is the authenticated node at the other end of a server Session.
type Peer struct {
	Playnode      string
	Key           ssh.PublicKey
	ClientVersion string
	Remote        net.Addr
}

// SSHServerConfig configures the relay side.
type SSHServerConfig struct {
	// HostKey must be an ed25519 key.
	HostKey ssh.Signer
	// Authorize maps a node key to its playnode name, or returns an error
	// (the relay logs the key's fingerprint). Called at most once per
	// distinct key per connection.
	Authorize func(remote net.Addr, user string, key ssh.PublicKey) (playnode string, err error)
	// HandshakeTimeout covers the SSH handshake, authentication and the mux
	// channel open. Default 10s.
	HandshakeTimeout time.Duration
	// MaxAuthTries bounds authentication attempts per connection. Default 3.
	MaxAuthTries int
	// MaxPeerStreams bounds the streams the node may open over the
	// connection's life; the relay sets 1, the control stream, which is all
	// a node opens in protocol version 1. The stream past it ends the
	// session (Err matches ErrPeerStreams) before yamux holds anything for
	// it. 0 means no limit beyond yamux's accept backlog: 128 waiting
	// streams of up to 256 KiB each (sshgate.go). Streams opened on any
	// mux channel but the first are refused whatever the limit: the relay
	// never accepts them.
	MaxPeerStreams int
	// MaxPeerBytes bounds the bytes the node may send, over the session's
	// life, on the streams it opens, when their number is bounded (the
	// stream limit is not 0): the relay reads the control stream only up to
	// the hello, and yamux would let the node park a whole StreamWindow
	// there. The byte past it ends the session (Err matches ErrPeerBytes)
	// before yamux holds it. 0 means no limit; a peer without a stream
	// limit (the mesh) has none either.
	MaxPeerBytes int64
	// PeerStreams, when set, replaces MaxPeerStreams for the peer that
	// authenticated, by the name Authorize gave it: the relay lets another
	// relay of its cluster (the mesh) open as many as it forwards.
	PeerStreams func(playnode string) int
	Options
}

// maxKeysPerConn bounds the Authorize cache of one connection; x/crypto/ssh
// bounds the attempts themselves by MaxAuthTries.
const maxKeysPerConn = 16

// AcceptSSH runs the relay side on an accepted TCP conn: SSH handshake under
// HandshakeTimeout, public-key authentication only, then one ChannelType
// channel from the node (more mux channels are the relay's to open, see
// sshSession). Other channel types and a second mux channel from the node
// are rejected with ssh.Prohibited, global requests are refused except
// keepalive@openssh.com. On error conn is closed and the error says which
// step failed; a non-SSH peer matches ErrNotSSH, a timeout
// os.ErrDeadlineExceeded, a refused key wraps Authorize's error.
func AcceptSSH(ctx context.Context, conn net.Conn, cfg *SSHServerConfig) (Session, Peer, error) {
	s, peer, err := acceptSSH(ctx, conn, cfg)
	if err != nil {
		conn.Close()
		return nil, Peer{}, err
	}
	return s, peer, nil
}

func acceptSSH(ctx context.Context, conn net.Conn, cfg *SSHServerConfig) (Session, Peer, error) {
	remote := conn.RemoteAddr()
	opts, err := cfg.Options.withDefaults()
	if err != nil {
		return nil, Peer{}, fmt.Errorf("ssh server config: %w", err)
	}
	if cfg.HostKey == nil || cfg.Authorize == nil {
		return nil, Peer{}, errors.New("ssh server config: HostKey and Authorize are required")
	}
	if t := cfg.HostKey.PublicKey().Type(); t != ssh.KeyAlgoED25519 {
		return nil, Peer{}, fmt.Errorf("ssh server config: host key type %s, want %s", t, ssh.KeyAlgoED25519)
	}
	timeout := cmp.Or(cfg.HandshakeTimeout, defaultHandshakeTimeout)
	raw := conn
	prefix := []byte(sshPrefix)
	pc, peeked := conn.(*prefixConn)
	if peeked {
		raw, prefix = pc.Conn, pc.prefix
	}
	pace := tuneTCP(raw, opts.Keepalive)
	handshakeDone := handshakeDeadline(ctx, conn, timeout)
	fail := func(step string, err error) (Session, Peer, error) {
		handshakeDone() // stop watching ctx
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, Peer{}, fmt.Errorf("%s from %s: %w", step, remote, err)
	}

	// x/crypto/ssh skips up to 1024 non-SSH lines before the client's
	// version, so an HTTP request would hang until the deadline. RFC 4253
	// 4.2 allows such lines only from the server: check the first bytes
	// (unless WaitSSHVersion did).
	if !peeked {
		if err := readSSHPrefix(conn, prefix); err != nil {
			return fail("read ssh version", err)
		}
	}

	auth := &authCache{authorize: cfg.Authorize}
	sshCfg := &ssh.ServerConfig{
		Config:            ssh.Config{Ciphers: preferredCiphers()},
		MaxAuthTries:      cmp.Or(cfg.MaxAuthTries, 3),
		PublicKeyCallback: auth.publicKey,
		ServerVersion:     sshVersion,
	}
	sshCfg.AddHostKey(cfg.HostKey)
	ac := newActivityConn(newPacedConn(&prefixConn{raw, prefix}, raw, pace), raw)
	sc, chans, reqs, err := ssh.NewServerConn(ac, sshCfg)
	if err != nil {
		if auth.lastErr != nil {
			return fail("ssh auth", fmt.Errorf("%w (%w)", auth.lastErr, err))
		}
		return fail("ssh handshake", err)
	}
	// x/crypto/ssh keeps sshCfg, and so auth, for the connection's life.
	auth.results = nil
	ch, chReqs, err := acceptMuxChannel(sc, chans, reqs)
	if err != nil {
		sc.Close()
		return fail("wait for mux channel", err)
	}
	var sess atomic.Pointer[sshSession]
	var wg sync.WaitGroup
	wg.Go(func() {
		serveConn(reqs, chans, chReqs, func(nc ssh.NewChannel) {
			nc.Reject(ssh.Prohibited, "one "+ChannelType+" channel per connection")
		})
		if s := sess.Load(); s != nil {
			s.ended() // the connection is gone, so is yamux on it
		}
	})
	if err := handshakeDone(); err != nil {
		sc.Close()
		wg.Wait()
		return fail("ssh handshake", err)
	}
	res, ok := sc.Permissions.ExtraData[authResultKey{}].(authResult)
	if !ok { // unreachable: public-key auth is the only method
		sc.Close()
		wg.Wait()
		return nil, Peer{}, fmt.Errorf("accept ssh from %s: authenticated without a key", remote)
	}
	limit := peerLimits{streams: cfg.MaxPeerStreams}
	if cfg.PeerStreams != nil {
		limit.streams = cfg.PeerStreams(res.playnode)
	}
	if limit.streams > 0 {
		limit.bytes = cfg.MaxPeerBytes
	}
	s, err := newSSHSession(sc, ac, pace, ch, true, limit, opts, &wg)
	if err != nil {
		return nil, Peer{}, fmt.Errorf("accept ssh from %s: %w", remote, err)
	}
	sess.Store(s)
	return s, Peer{Playnode: res.playnode, Key: res.key, ClientVersion: string(sc.ClientVersion()), Remote: remote}, nil
}

// acceptMuxChannel waits for the mux channel, rejecting any other type and
// answering global requests meanwhile.
func acceptMuxChannel(sc *ssh.ServerConn, chans <-chan ssh.NewChannel, reqs <-chan *ssh.Request) (ssh.Channel, <-chan *ssh.Request, error) {
	for {
		select {
		case req, ok := <-reqs:
			if !ok {
				reqs = nil // chans closes too
				continue
			}
			if req.WantReply {
				req.Reply(req.Type == requestKeepalive, nil)
			}
		case nc, ok := <-chans:
			if !ok {
				return nil, nil, fmt.Errorf("connection ended: %w", sc.Wait())
			}
			if nc.ChannelType() != ChannelType {
				nc.Reject(ssh.Prohibited, "only "+ChannelType+" channels are allowed")
				continue
			}
			ch, chReqs, err := nc.Accept()
			if err != nil {
				return nil, nil, fmt.Errorf("accept channel: %w", err)
			}
			return ch, chReqs, nil
		}
	}
}

type authResultKey struct{}

type authResult struct {
	playnode string
	key      ssh.PublicKey
	err      error
}

// authCache calls Authorize once per distinct key: x/crypto/ssh's own cache
// holds one key, so a client probing keys A, B, A would be asked twice.
// x/crypto/ssh calls the callback from the handshake goroutine only.
type authCache struct {
	authorize func(remote net.Addr, user string, key ssh.PublicKey) (string, error)
	results   map[string]authResult
	lastErr   error
}

func (a *authCache) publicKey(meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
	id := string(key.Marshal())
	if a.results == nil {
		a.results = make(map[string]authResult)
	}
	res, ok := a.results[id]
	if !ok {
		if len(a.results) >= maxKeysPerConn {
			return nil, fmt.Errorf("more than %d keys offered", maxKeysPerConn)
		}
		res.key = key
		res.playnode, res.err = a.authorize(meta.RemoteAddr(), meta.User(), key)
		if res.err == nil && res.playnode == "" {
			res.err = errors.New("authorize returned no playnode name")
		}
		a.results[id] = res
	}
	if res.err != nil {
		a.lastErr = res.err
		return nil, res.err
	}
	return &ssh.Permissions{ExtraData: map[any]any{authResultKey{}: res}}, nil
}

const sshPrefix = "SSH-"

// readSSHPrefix reads the first bytes of the peer's version line into
// prefix and checks them.
func readSSHPrefix(conn net.Conn, prefix []byte) error {
	if _, err := io.ReadFull(conn, prefix); err != nil {
		return err
	}
	if !bytes.Equal(prefix, []byte(sshPrefix)) {
		return fmt.Errorf("%w: first bytes %q", ErrNotSSH, prefix)
	}
	return nil
}

// WaitSSHVersion waits, until deadline, for conn's peer to send the first
// bytes of an SSH version line, and returns a conn that replays them for
// AcceptSSH. A relay calls it before it gives the peer a handshake slot, so
// that connections that send nothing (a slowloris flood) cannot hold the
// slots real playnodes need.
func WaitSSHVersion(conn net.Conn, deadline time.Time) (net.Conn, error) {
	conn.SetReadDeadline(deadline)
	prefix := make([]byte, len(sshPrefix))
	if err := readSSHPrefix(conn, prefix); err != nil {
		return nil, fmt.Errorf("read ssh version from %s: %w", conn.RemoteAddr(), err)
	}
	conn.SetReadDeadline(time.Time{})
	return &prefixConn{conn, prefix}, nil
}

// prefixConn replays the bytes read to check the version prefix.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(b []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(b, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}
