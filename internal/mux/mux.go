package mux

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"
)

// Stream is one forwarded connection or the control stream.
type Stream interface {
	net.Conn
	// CloseWrite half-closes the stream: the peer reads EOF after the data
	// already written, and this side can still read.
	CloseWrite() error
}

// Session is one authenticated node<->relay connection.
type Session interface {
	OpenStream(ctx context.Context) (Stream, error)
	AcceptStream(ctx context.Context) (Stream, error)
	// Close is idempotent; it tears down the streams, the transport and the
	// TCP connection and waits for the goroutines the Session owns.
	Close() error
	// Done is closed once the session is dead: peer gone, keepalive failed,
	// or Close called.
	Done() <-chan struct{}
	// Context is cancelled once the session is dead, after Done is closed,
	// so that context.AfterFunc can clean up after it without a goroutine
	// that waits for the session's whole life.
	Context() context.Context
	// Err says why the session ended, nil while it is alive. It always
	// matches ErrSessionClosed, and ErrKeepaliveTimeout when the link died.
	Err() error
	LocalAddr() net.Addr
	RemoteAddr() net.Addr
	NumStreams() int
}

var (
	// ErrSessionClosed is matched by Session.Err of every dead session and
	// by stream errors caused by the session dying, including a Read that
	// would otherwise have reported a clean io.EOF.
	ErrSessionClosed = errors.New("mux session closed")
	// ErrKeepaliveTimeout means a keepalive ping went unanswered: the link
	// is dead or half-open.
	ErrKeepaliveTimeout = errors.New("keepalive timeout")
	// ErrPeerClosed is matched by Session.Err when the peer ended the
	// connection itself (it stopped, or its process died and its kernel
	// closed the socket), as opposed to a link that went silent or broke.
	ErrPeerClosed = errors.New("peer closed the connection")
	// ErrNotSSH means the peer's first bytes were not an SSH version line
	// (a port scanner, an HTTP client, a misconfigured node).
	ErrNotSSH = errors.New("not an ssh client")
	// ErrKeyRefused is matched by a dial error when the relay refused the
	// node's key during authentication (unknown, revoked, or an enrollment
	// over its rate), as opposed to a network or handshake failure.
	ErrKeyRefused = errors.New("relay refused the node key")
	// ErrPeerStreams is matched by Session.Err of a relay session whose
	// node opened a stream beyond SSHServerConfig.MaxPeerStreams.
	ErrPeerStreams = errors.New("peer opened more streams than allowed")
)

// Options tune a Session; the zero value is the defaults.
type Options struct {
	// Keepalive paces liveness checks, in both directions; each end detects
	// a dead or half-open link on its own. Over SSH any byte from the peer
	// proves it alive; after Keepalive of quiet an SSH keepalive request asks
	// the peer to answer, and after 2*Keepalive of silence (checked every
	// Keepalive/4, so at most 2.25*Keepalive) the session dies with
	// ErrKeepaliveTimeout. A slow link busy with a transfer keeps delivering
	// bytes and is not mistaken for a dead one. Over QUIC, quic-go's
	// keepalive and an idle timeout of 2*Keepalive do the same. Default 10s.
	Keepalive time.Duration
	// StreamWindow is yamux's maximum per-stream receive window. Default
	// 4 MiB: not smaller than x/crypto/ssh's fixed 2 MiB channel window
	// (channelWindowSize = 64*32 KiB in ssh/channel.go), so that the SSH
	// channel, shared by all streams of a node, is the per-node throughput
	// cap (2 MiB per round trip) and one stream can use all of it. Minimum
	// 256 KiB (yamux's initial window).
	StreamWindow uint32
	// Logger receives yamux's own log lines: errors and warnings at Warn,
	// the rest at Debug. Nil discards them.
	Logger *slog.Logger
}

// Defaults both roles share; the relay's and the node's flags show them.
const (
	// DefaultKeepalive is Options.Keepalive's default.
	DefaultKeepalive = 10 * time.Second
	// DefaultHandshakeTimeout bounds a handshake (transport, authentication
	// and, on the relay, the hello) when the caller sets no bound.
	DefaultHandshakeTimeout = 15 * time.Second
)

const (
	defaultKeepalive    = DefaultKeepalive
	defaultStreamWindow = 4 << 20
	minStreamWindow     = 256 << 10 // yamux initialStreamWindow
	nodeAcceptBacklog   = 1024
	relayAcceptBacklog  = 128
	streamOpenTimeout   = 30 * time.Second
	streamCloseTimeout  = time.Minute
)

func (o Options) withDefaults() (Options, error) {
	if o.Keepalive == 0 {
		o.Keepalive = defaultKeepalive
	}
	if o.Keepalive < 0 {
		return o, fmt.Errorf("keepalive %v is negative", o.Keepalive)
	}
	if o.StreamWindow == 0 {
		o.StreamWindow = defaultStreamWindow
	}
	if o.StreamWindow < minStreamWindow {
		return o, fmt.Errorf("stream window %d is below the minimum %d", o.StreamWindow, minStreamWindow)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o, nil
}
