package node

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"paradigm/internal/identity"
	"paradigm/internal/mux"
)

// quicRetryInterval is how long a node on TransportAuto keeps to SSH after
// QUIC failed before it tries QUIC again: UDP blocked on one network may
// work on the next.
const quicRetryInterval = 10 * time.Minute

// quicProbeTimeout bounds a QUIC attempt on TransportAuto, so a network that
// drops UDP costs little before the SSH fallback.
const quicProbeTimeout = 5 * time.Second

// transportChooser remembers, for TransportAuto, whether QUIC worked.
type transportChooser struct {
	mu         sync.Mutex
	quicFailed time.Time // zero while QUIC works or was never tried
}

// useQUIC reports whether the next auto attempt should try QUIC.
func (c *transportChooser) useQUIC(now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.quicFailed.IsZero() || now.Sub(c.quicFailed) >= quicRetryInterval
}

func (c *transportChooser) result(quicOK bool, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if quicOK {
		c.quicFailed = time.Time{}
	} else {
		c.quicFailed = now
	}
}

// dial opens an authenticated session to relay candidate c with the
// configured transport, returning the transport used.
func (n *Node) dial(ctx context.Context, c candidate) (mux.Session, string, error) {
	switch n.cfg.Transport {
	case TransportQUIC:
		s, err := n.dialQUIC(ctx, c, n.cfg.HandshakeTimeout)
		return s, TransportQUIC, err
	case TransportAuto:
		if !n.chooser.useQUIC(time.Now()) {
			s, err := n.dialSSH(ctx, c)
			return s, TransportSSH, err
		}
		s, err := n.dialQUIC(ctx, c, min(quicProbeTimeout, n.cfg.HandshakeTimeout))
		if err == nil {
			n.chooser.result(true, time.Now())
			return s, TransportQUIC, nil
		}
		if ctx.Err() != nil || errors.Is(err, ErrHostKey) {
			return nil, TransportQUIC, err
		}
		n.log.Warn("quic to relay failed, falling back to ssh", "relay", c.name, "err", err, "retry_quic_in", quicRetryInterval.String())
		s, err = n.dialSSH(ctx, c)
		if err == nil {
			// Only SSH getting through while QUIC did not says UDP is
			// blocked: a relay that is down, restarting or untrusted fails
			// both, and must not keep the node off QUIC.
			n.chooser.result(false, time.Now())
		}
		return s, TransportSSH, err
	default:
		s, err := n.dialSSH(ctx, c)
		return s, TransportSSH, err
	}
}

func (n *Node) dialSSH(ctx context.Context, c candidate) (mux.Session, error) {
	d := net.Dialer{KeepAlive: n.cfg.Keepalive}
	conn, err := d.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return nil, fmt.Errorf("dial relay %s: %w", c.name, err)
	}
	s, err := mux.DialSSH(ctx, conn, &mux.SSHClientConfig{
		Key:              n.key,
		User:             n.enrollUser(),
		HostKeyCallback:  n.hostKey,
		Addr:             c.name,
		HandshakeTimeout: n.cfg.HandshakeTimeout,
		Options:          n.muxOptions(),
	})
	if err != nil {
		return nil, fmt.Errorf("connect to relay %s: %w", c.name, err)
	}
	return s, nil
}

func (n *Node) dialQUIC(ctx context.Context, c candidate, timeout time.Duration) (mux.Session, error) {
	if n.quicKey == nil {
		return nil, errors.New("quic needs an ed25519 node key")
	}
	raddr, err := net.ResolveUDPAddr("udp", c.addr)
	if err != nil {
		return nil, fmt.Errorf("resolve relay %s: %w", c.name, err)
	}
	pconn, err := net.ListenUDP("udp", nil)
	if err != nil {
		return nil, fmt.Errorf("open udp socket: %w", err)
	}
	s, err := mux.DialQUIC(ctx, pconn, raddr, &mux.QUICClientConfig{
		Key:              n.quicKey,
		User:             n.enrollUser(),
		HostKeyCallback:  n.hostKey,
		Addr:             c.name,
		HandshakeTimeout: timeout,
		Options:          n.muxOptions(),
	})
	if err != nil {
		return nil, fmt.Errorf("connect to relay %s over quic: %w", c.name, err)
	}
	return s, nil
}

// loadQUICKey reads the node key as ed25519 for QUIC when the transport may
// use it; an SSH-only node may use any key type ssh-keygen makes.
func loadQUICKey(cfg *Config) (ed25519.PrivateKey, error) {
	if cfg.Transport == TransportSSH {
		return nil, nil
	}
	return identity.LoadEd25519(cfg.KeyFile)
}

// muxOptions are the session options of both transports. StreamWindow
// bounds what the relay can send ahead of a service on each stream over
// SSH (yamux); QUIC keeps its own windows.
func (n *Node) muxOptions() mux.Options {
	return mux.Options{Keepalive: n.cfg.Keepalive, StreamWindow: n.cfg.StreamWindow(), Logger: n.log}
}
