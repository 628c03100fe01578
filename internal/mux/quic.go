package mux

// # QUIC transport flow
//
//	node (client)                                   relay (server)
//	Initial, no token -------------------------------> ListenQUIC
//	                  <------------------------------- Retry with a token (always: alwaysRetry)
//	UDP, QUIC v1 + TLS 1.3, ALPN "paradigm/1" ------> Admit, then the handshake
//	  (Initial with the token)
//	  verify relay cert: ed25519, self-signed,
//	  HostKeyCallback(Addr, remote, key)            <- cert derived from the host key
//	  client cert derived from the node key --------> ed25519, self-signed (else: handshake fails)
//	                                                   Accept: Authorize(remote, CN, key) -> playnode
//	AcceptUniStream: one byte quicAuthOK, FIN <------- (refused: CONNECTION_CLOSE quicCodeRefused)
//	OpenStream: control stream (seen by the relay ----> AcceptStream
//	  once the node writes its Hello)
//	AcceptStream <------------------------------------ OpenStream: one per forwarded TCP connection
//
// Every stream is a native QUIC bidirectional stream: no yamux, so a lost
// packet stalls only the streams whose data it carried. QUIC announces a
// stream with its first STREAM frame, so AcceptStream returns a stream only
// once the opener has written to it (or closed it); the node's Hello and
// the relay's stream header are always written at once, so nothing waits.
//
// In TLS 1.3 the client finishes its handshake before the server has
// checked the client's certificate, so a refused node would learn of the
// refusal only after DialQUIC returned. The relay therefore confirms
// authorization with the one-byte unidirectional stream above, and DialQUIC
// returns only after reading it: as with SSH, a returned Session has been
// authorized.
//
// Liveness is QUIC's: a PING every Keepalive when idle and an idle timeout
// of 2*Keepalive, on both ends (QUIC applies the smaller of the two ends'
// idle timeouts to both). A node whose relay has gone quiet also sends
// DATAGRAM probes, so that a restarted relay's stateless reset reaches it
// (see resetProbe). A node can move to another address (Wi-Fi to
// cellular) without a new session, see MigrateQUIC.
//
// References: RFC 9000 (QUIC), RFC 9001 (QUIC-TLS), RFC 8446 4.4.3
// (CertificateVerify).

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
)

// ALPN is the TLS application protocol both ends require.
const ALPN = "paradigm/1"

// QUIC application error codes (CONNECTION_CLOSE) and stream error codes
// (STOP_SENDING).
const (
	quicCodeClosed   quic.ApplicationErrorCode = 0 // Session.Close
	quicCodeRefused  quic.ApplicationErrorCode = 1 // Authorize refused the node key
	quicCodeShutdown quic.ApplicationErrorCode = 2 // the relay's listener closed

	streamCodeClosed quic.StreamErrorCode = 0 // Stream.Close: the reader went away
)

// quicAuthOK is the relay's one-byte confirmation that the node is authorized.
const quicAuthOK = 0x01

const (
	defaultQUICMaxStreams = 10000
	// Flow-control windows (Options.StreamWindow is yamux's and does not
	// apply): quic-go grows them from the initial to the
	// maximum as the measured bandwidth-delay product demands. 16 MiB per
	// stream fills 1 Gbit/s at 130 ms; 64 MiB per connection lets four such
	// streams run at once.
	quicInitialStreamWindow = 512 << 10
	quicMaxStreamWindow     = 16 << 20
	quicInitialConnWindow   = 1 << 20
	quicMaxConnWindow       = 64 << 20
)

// quicConfig is the quic.Config both ends use. The idle timeout is
// 2*Keepalive, so a dead link is declared within the bound the SSH
// transport documents; quic-go sends a PING every Keepalive when nothing
// else was sent.
func quicConfig(opts Options, handshake time.Duration, maxStreams int, server bool) *quic.Config {
	c := &quic.Config{
		HandshakeIdleTimeout:           handshake,
		MaxIdleTimeout:                 2 * opts.Keepalive,
		KeepAlivePeriod:                opts.Keepalive,
		InitialStreamReceiveWindow:     quicInitialStreamWindow,
		MaxStreamReceiveWindow:         quicMaxStreamWindow,
		InitialConnectionReceiveWindow: quicInitialConnWindow,
		MaxConnectionReceiveWindow:     quicMaxConnWindow,
		MaxIncomingStreams:             int64(maxStreams),
		MaxIncomingUniStreams:          -1,   // the relay takes none
		EnableDatagrams:                true, // resetProbe, node to relay only
		Allow0RTT:                      false,
	}
	if !server {
		c.MaxIncomingUniStreams = 1 // the authorization confirmation
	}
	return c
}

// checkQUICKey rejects anything but a complete ed25519 private key.
func checkQUICKey(key ed25519.PrivateKey) error {
	if len(key) != ed25519.PrivateKeySize {
		return fmt.Errorf("ed25519 private key of %d bytes, want %d", len(key), ed25519.PrivateKeySize)
	}
	return nil
}

// quicSession is a Session over one QUIC connection. It owns the
// transports it created (client side: one per socket it has used) and a
// goroutine that records why the connection ended.
type quicSession struct {
	conn  *quic.Conn
	log   *slog.Logger // node sessions only: MigrateQUIC's buffer warning
	probe *resetProbe  // node sessions only, nil if the relay takes no datagrams
	onEnd func()       // relay sessions only: drops the session from its listener
	// drained is closed when drainDatagrams returns (relay sessions only).
	drained chan struct{}

	done   chan struct{} // closed after err is set
	err    error
	ctx    context.Context // cancelled after done is closed
	cancel context.CancelFunc

	streams atomic.Int64
	// local is LocalAddr: quic-go's Conn.LocalAddr reads a field its run
	// loop replaces when a migration switches paths, unsynchronised.
	local atomic.Pointer[net.Addr]

	mu         sync.Mutex
	transports []*quic.Transport // closed in Close, last first
	closed     bool
	once       sync.Once
}

func newQUICSession(conn *quic.Conn) *quicSession {
	s := &quicSession{conn: conn, done: make(chan struct{})}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	local := conn.LocalAddr()
	s.local.Store(&local)
	// No goroutine waits for the end: one less per idle session.
	context.AfterFunc(conn.Context(), func() {
		s.err = fmt.Errorf("%w: %w", ErrSessionClosed, quicCause(context.Cause(conn.Context())))
		close(s.done)
		s.cancel()
	})
	return s
}

// quicCause says why a QUIC connection ended, in the package's terms.
func quicCause(err error) error {
	var idle *quic.IdleTimeoutError
	var app *quic.ApplicationError
	var reset *quic.StatelessResetError
	switch {
	case errors.As(err, &idle):
		return fmt.Errorf("%w: %w", ErrKeepaliveTimeout, err)
	case errors.As(err, &app) && !app.Remote:
		return err // our own Close; matches net.ErrClosed
	case errors.As(err, &app):
		return fmt.Errorf("%w: %w", ErrPeerClosed, err)
	case errors.As(err, &reset):
		return fmt.Errorf("peer lost the connection state (restarted?): %w", err)
	case err == nil || errors.Is(err, io.EOF):
		// Never wrap io.EOF: callers take it for a clean end of stream.
		return errors.New("connection ended")
	}
	return err
}

// deadErr waits for the recorded reason. Call it only once the connection
// is dead: then the watcher finishes promptly.
func (s *quicSession) deadErr() error {
	<-s.done
	return s.err
}

func (s *quicSession) isDead() bool { return s.conn.Context().Err() != nil }

// OpenStream opens a stream at once, or waits under ctx while the peer's
// MaxStreams limit is reached. The peer sees the stream when it is written.
func (s *quicSession) OpenStream(ctx context.Context) (Stream, error) {
	st, err := s.conn.OpenStreamSync(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("open stream: %w", ctx.Err())
		}
		if s.isDead() {
			return nil, s.deadErr()
		}
		return nil, fmt.Errorf("open stream: %w", err)
	}
	return s.newStream(st), nil
}

func (s *quicSession) AcceptStream(ctx context.Context) (Stream, error) {
	st, err := s.conn.AcceptStream(ctx)
	if err != nil {
		if s.isDead() {
			return nil, s.deadErr()
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("accept stream: %w", ctx.Err())
		}
		return nil, fmt.Errorf("accept stream: %w", err)
	}
	return s.newStream(st), nil
}

func (s *quicSession) newStream(st *quic.Stream) *quicStream {
	s.streams.Add(1)
	return &quicStream{st: st, sess: s}
}

// Close sends CONNECTION_CLOSE, closes the transports and sockets the
// session owns, and waits for its goroutine. Idempotent.
func (s *quicSession) Close() error {
	s.once.Do(func() {
		s.conn.CloseWithError(quicCodeClosed, "")
		s.mu.Lock()
		s.closed = true
		trs := s.transports
		s.mu.Unlock()
		for i := len(trs) - 1; i >= 0; i-- {
			trs[i].Close()
			trs[i].Conn.Close()
		}
		<-s.done
		s.probe.stop()
		if s.drained != nil {
			<-s.drained
		}
		if s.onEnd != nil {
			s.onEnd()
		}
	})
	return nil
}

func (s *quicSession) Done() <-chan struct{} { return s.done }

func (s *quicSession) Context() context.Context { return s.ctx }

func (s *quicSession) Err() error {
	select {
	case <-s.done:
		return s.err
	default:
		return nil
	}
}

func (s *quicSession) LocalAddr() net.Addr  { return *s.local.Load() }
func (s *quicSession) RemoteAddr() net.Addr { return s.conn.RemoteAddr() }

// NumStreams counts the streams opened or accepted and not yet Closed.
// QUIC keeps no such count that includes streams this side has not
// closed, so a stream ended only by CloseWrite and EOF still counts until
// Close (Splice always closes both ends).
func (s *quicSession) NumStreams() int { return int(s.streams.Load()) }

// quicStream adapts a QUIC stream to Stream. quic-go's Read already tells a
// FIN (io.EOF) from a reset (*quic.StreamError) and from a dead connection
// (the connection's error), so truncation is never read as a clean end; the
// wrapper maps a dead connection to the session's error, serializes Write
// with Close (quic-go forbids them concurrently, Splice does it), and adds
// the net.Conn methods.
type quicStream struct {
	st     *quic.Stream
	sess   *quicSession
	closed atomic.Bool
	wmu    sync.Mutex // Write, CloseWrite, Close: quic-go's Close must not race Write
}

func (st *quicStream) Read(b []byte) (int, error) {
	if st.closed.Load() {
		return 0, net.ErrClosed
	}
	n, err := st.st.Read(b)
	if err != nil && err != io.EOF {
		err = st.mapErr(err)
	}
	return n, err
}

func (st *quicStream) Write(b []byte) (int, error) {
	st.wmu.Lock()
	defer st.wmu.Unlock()
	if st.closed.Load() {
		return 0, net.ErrClosed
	}
	n, err := st.st.Write(b)
	if err != nil {
		err = st.mapErr(err)
	}
	return n, err
}

func (st *quicStream) mapErr(err error) error {
	switch {
	case st.closed.Load():
		return net.ErrClosed
	case st.sess.isDead() || isConnError(err):
		// A connection-level error can reach a stream a moment before the
		// connection's context says it is dead: wait for the session's
		// verdict so that every stream reports the same cause.
		return st.sess.deadErr()
	}
	return err // a reset by the peer (*quic.StreamError), a deadline
}

// isConnError reports whether err ends the whole QUIC connection rather
// than one stream.
func isConnError(err error) bool {
	var (
		idle  *quic.IdleTimeoutError
		hs    *quic.HandshakeTimeoutError
		app   *quic.ApplicationError
		tr    *quic.TransportError
		reset *quic.StatelessResetError
	)
	return errors.As(err, &idle) || errors.As(err, &hs) || errors.As(err, &app) || errors.As(err, &tr) || errors.As(err, &reset)
}

// CloseWrite sends FIN after the data already written.
func (st *quicStream) CloseWrite() error {
	st.wmu.Lock()
	defer st.wmu.Unlock()
	if st.closed.Load() {
		return net.ErrClosed
	}
	return st.st.Close()
}

// Close sends FIN after the data already written and stops reading
// (STOP_SENDING: a peer still writing gets a *quic.StreamError, as a TCP
// peer gets a reset). Blocked and later Reads and Writes return
// net.ErrClosed. A Write blocked on flow control is cut short.
func (st *quicStream) Close() error {
	if st.closed.Swap(true) {
		return nil
	}
	st.st.CancelRead(streamCodeClosed) // wakes a blocked Read
	st.st.SetWriteDeadline(time.Unix(1, 0))
	st.wmu.Lock()
	err := st.st.Close()
	st.wmu.Unlock()
	st.sess.streams.Add(-1)
	if err != nil && st.sess.isDead() {
		return nil // nothing left to close
	}
	return err
}

func (st *quicStream) LocalAddr() net.Addr                { return st.sess.LocalAddr() }
func (st *quicStream) RemoteAddr() net.Addr               { return st.sess.RemoteAddr() }
func (st *quicStream) SetDeadline(t time.Time) error      { return st.st.SetDeadline(t) }
func (st *quicStream) SetReadDeadline(t time.Time) error  { return st.st.SetReadDeadline(t) }
func (st *quicStream) SetWriteDeadline(t time.Time) error { return st.st.SetWriteDeadline(t) }
