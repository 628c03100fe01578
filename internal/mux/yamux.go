package mux

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
)

// yamuxConfig is the yamux configuration of every lane, on the relay
// (server) or on the node. quiet, once set, sends yamux's log lines to
// Debug (yamuxLogger); nil for never.
func yamuxConfig(opts Options, server bool, quiet *atomic.Bool) *yamux.Config {
	// AcceptBacklog sizes two things: the queue of streams the peer opened
	// and this side has not accepted yet (a slice of pointers allocated with
	// the session), and how many streams this side may have opened that the
	// peer has not acknowledged. The node accepts every forwarded
	// connection, so it keeps a deep queue; the relay accepts only the
	// control stream but opens the forwarded streams, and a peer
	// acknowledges each within a round trip, so 128 in flight per lane
	// (8 lanes) are ample. The node's 8 KiB queue would be a tenth of the
	// relay's memory per idle playnode. On the relay the queue never holds
	// more than the control stream: the node may open no other
	// (SSHServerConfig.MaxPeerStreams, sshgate.go).
	backlog := nodeAcceptBacklog
	if server {
		backlog = relayAcceptBacklog
	}
	return &yamux.Config{
		AcceptBacklog: backlog,
		// Liveness is the transport's watchdog (liveness.go): yamux's ping
		// queues behind data and kills healthy slow links.
		EnableKeepAlive:   false,
		KeepAliveInterval: opts.Keepalive, // unused, but yamux wants it positive
		// How long one frame may wait for the transport before its stream
		// operation fails; a slow link may hold several MiB of queued data.
		ConnectionWriteTimeout: max(time.Minute, 6*opts.Keepalive),
		MaxStreamWindowSize:    yamuxWindow(opts.StreamWindow),
		StreamOpenTimeout:      streamOpenTimeout,
		StreamCloseTimeout:     streamCloseTimeout,
		Logger:                 yamuxLogger{opts.Logger, quiet},
	}
}

// yamuxWindow is the MaxStreamWindowSize for a stream window of w bytes.
// yamux keeps a stream's unread data in a bytes.Buffer whose ReadFrom
// wants bytes.MinRead free past the data before each read, so a window of
// exactly a power of two, once filled by a reader that stalls, doubles the
// buffer: 8 MiB for the default 4 MiB. A window MinRead smaller fills a
// buffer of its own size (measured by TestStalledStreamBuffer: 4.2 MiB per
// stalled stream instead of 8.1). yamux's minimum window stays as it is.
func yamuxWindow(w uint32) uint32 {
	if w >= minStreamWindow+bytes.MinRead {
		return w - bytes.MinRead
	}
	return w
}

// yamuxStream makes truncation visible. yamux v0.1.2 force-closes every
// stream when the session dies, and a force-closed stream reads io.EOF just
// like one whose peer sent FIN. yamux does not expose whether the FIN was
// seen, so Read reports the session's error at EOF whenever the session is
// dead: conservative, a stream that ended cleanly just before its session
// died may report an error too, but a cut-off stream never reads as complete.
type yamuxStream struct {
	*yamux.Stream
	sess    *sshSession
	lane    *lane
	counted bool // opened by this side: counts toward lane.opened until Close
	closed  atomic.Bool
}

func newYamuxStream(s *sshSession, l *lane, st *yamux.Stream) *yamuxStream {
	return &yamuxStream{Stream: st, sess: s, lane: l}
}

func (st *yamuxStream) Read(b []byte) (int, error) {
	if st.closed.Load() {
		return 0, net.ErrClosed
	}
	n, err := st.Stream.Read(b)
	switch {
	case err == nil:
	case st.closed.Load():
		err = net.ErrClosed
	case err == io.EOF && st.lane.ymx.IsClosed():
		err = st.sess.deadErr()
	case errors.Is(err, yamux.ErrTimeout):
		err = deadlineError{err}
	}
	return n, err
}

func (st *yamuxStream) Write(b []byte) (int, error) {
	n, err := st.Stream.Write(b)
	if err != nil {
		switch {
		case st.closed.Load():
			err = net.ErrClosed
		case st.lane.ymx.IsClosed():
			err = st.sess.deadErr()
		case errors.Is(err, yamux.ErrTimeout):
			err = deadlineError{err}
		}
	}
	return n, err
}

// CloseWrite sends FIN: yamux's Close is a half-close.
func (st *yamuxStream) CloseWrite() error {
	return st.Stream.Close()
}

// Close sends FIN and stops reading: blocked and later Reads and Writes
// return net.ErrClosed. yamux keeps the stream until the peer's FIN, or
// resets it after StreamCloseTimeout (1 minute); data arriving meanwhile is
// buffered up to the stream window and dropped.
func (st *yamuxStream) Close() error {
	if st.closed.Swap(true) {
		return nil
	}
	if st.counted {
		st.lane.opened.Add(-1)
	}
	err := st.Stream.Close()
	st.Stream.SetDeadline(time.Unix(1, 0)) // wake blocked Reads
	return err
}

// deadlineError makes yamux's deadline error match os.ErrDeadlineExceeded,
// as net.Conn deadline errors do, and keeps Timeout().
type deadlineError struct{ err error }

func (e deadlineError) Error() string   { return e.err.Error() }
func (e deadlineError) Timeout() bool   { return true }
func (e deadlineError) Temporary() bool { return true }
func (e deadlineError) Unwrap() []error { return []error{e.err, os.ErrDeadlineExceeded} }

// yamuxLogger routes yamux's log lines to slog. yamux prefixes its lines
// with a level ("[ERR] yamux: ..."); errors and warnings go out at Warn,
// until quiet is set: a relay session whose node opened a stream it may
// not (sshgate.go) ends with yamux logging the read error, and the relay
// reports that end itself, rate-limited, so an authorized key cannot buy
// an unthrottled Warn line per connection.
type yamuxLogger struct {
	log   *slog.Logger
	quiet *atomic.Bool // nil: never
}

func (l yamuxLogger) Print(v ...any)                 { l.emit(fmt.Sprint(v...)) }
func (l yamuxLogger) Printf(format string, v ...any) { l.emit(fmt.Sprintf(format, v...)) }
func (l yamuxLogger) Println(v ...any)               { l.emit(fmt.Sprintln(v...)) }

func (l yamuxLogger) emit(line string) {
	level := slog.LevelDebug
	if (l.quiet == nil || !l.quiet.Load()) && (strings.HasPrefix(line, "[ERR]") || strings.HasPrefix(line, "[WARN]")) {
		level = slog.LevelWarn
	}
	l.log.Log(context.Background(), level, "yamux", "err", strings.TrimSpace(line))
}
