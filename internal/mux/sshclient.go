package mux

import (
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

// SSHClientConfig configures the node side.
type SSHClientConfig struct {
	Key ssh.Signer
	// User is the playnode name; informational, the relay binds names to keys.
	User string
	// HostKeyCallback verifies the relay's ed25519 host key. Required.
	HostKeyCallback ssh.HostKeyCallback
	// Addr is the relay address as the operator configured it
	// ("relay.example:7000"), the hostname HostKeyCallback checks (e.g. with
	// knownhosts). Default: the conn's remote address.
	Addr string
	// HandshakeTimeout covers the SSH handshake, authentication and the mux
	// channel open. Default 10s.
	HandshakeTimeout time.Duration
	Options
}

// DialSSH runs the node side over an already dialled conn (the caller dials,
// so tests and fault proxies can interpose): SSH handshake and public-key
// authentication under HandshakeTimeout, then the ChannelType channel with a
// yamux client in it. On error conn is closed.
func DialSSH(ctx context.Context, conn net.Conn, cfg *SSHClientConfig) (Session, error) {
	s, err := dialSSH(ctx, conn, cfg)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return s, nil
}

func dialSSH(ctx context.Context, conn net.Conn, cfg *SSHClientConfig) (Session, error) {
	addr := cmp.Or(cfg.Addr, conn.RemoteAddr().String())
	opts, err := cfg.Options.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("ssh client config: %w", err)
	}
	if cfg.Key == nil || cfg.HostKeyCallback == nil {
		return nil, errors.New("ssh client config: Key and HostKeyCallback are required")
	}
	pace := tuneTCP(conn, opts.Keepalive)
	handshakeDone := handshakeDeadline(ctx, conn, cmp.Or(cfg.HandshakeTimeout, defaultHandshakeTimeout))
	fail := func(step string, err error) (Session, error) {
		handshakeDone() // stop watching ctx
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("%s with relay %s: %w", step, addr, err)
	}

	// offered: the handshake got as far as offering the key, so a failure
	// of NewClientConn after it, with the connection still up, is the
	// relay refusing the key (x/crypto/ssh words it "unable to
	// authenticate" and has no error type for it).
	var offered bool
	sshCfg := &ssh.ClientConfig{
		Config: ssh.Config{Ciphers: preferredCiphers()},
		User:   cfg.User,
		Auth: []ssh.AuthMethod{ssh.PublicKeysCallback(func() ([]ssh.Signer, error) {
			offered = true
			return []ssh.Signer{cfg.Key}, nil
		})},
		HostKeyCallback:   cfg.HostKeyCallback,
		HostKeyAlgorithms: []string{ssh.KeyAlgoED25519},
		ClientVersion:     sshVersion,
	}
	ac := newActivityConn(newPacedConn(conn, conn, pace), conn)
	cc, chans, reqs, err := ssh.NewClientConn(ac, addr, sshCfg)
	if err != nil {
		if offered && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !isNetError(err) {
			err = fmt.Errorf("%w: %w", ErrKeyRefused, err)
		}
		return fail("ssh handshake", err)
	}
	// The relay sends nothing before it answers the channel open.
	ch, chReqs, err := cc.OpenChannel(ChannelType, nil)
	if err != nil {
		cc.Close()
		return fail("open mux channel", err)
	}
	// The session is set before the relay can open another mux channel:
	// it does so only for a stream, after the control stream's hello.
	var sess atomic.Pointer[sshSession]
	var wg sync.WaitGroup
	wg.Go(func() {
		serveConn(reqs, chans, chReqs, func(nc ssh.NewChannel) {
			if s := sess.Load(); s != nil && nc.ChannelType() == ChannelType {
				s.acceptLane(nc)
				return
			}
			nc.Reject(ssh.Prohibited, "a playnode accepts only "+ChannelType+" channels")
		})
		if s := sess.Load(); s != nil {
			s.ended() // the connection is gone, so is yamux on it
		}
	})
	if err := handshakeDone(); err != nil {
		cc.Close()
		wg.Wait()
		return fail("ssh handshake", err)
	}
	s, err := newSSHSession(cc, ac, pace, ch, false, peerLimits{}, opts, &wg)
	if err != nil {
		return nil, fmt.Errorf("dial ssh relay %s: %w", addr, err)
	}
	sess.Store(s)
	return s, nil
}

// isNetError reports a transport failure (reset, timeout, closed).
func isNetError(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, net.ErrClosed)
}
