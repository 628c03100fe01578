package mux

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
)

// yamuxSession is a Session over yamux on a reliable byte stream (the SSH
// channel). It owns an accept loop, which also learns why yamux shut down:
// yamux v0.1.2 reports its shutdown error only from AcceptStream.
type yamuxSession struct {
	ymx       *yamux.Session
	log       *slog.Logger
	waitOwned func() // waits for transport goroutines (SSH request and channel handlers)

	acceptq chan *yamux.Stream
	done    chan struct{} // closed after err is set
	err     error
	killed  atomic.Pointer[error] // why the watchdog ended the session

	mu      sync.Mutex
	closing bool // Close called; guards wg.Add
	wg      sync.WaitGroup
	once    sync.Once
}

// newYamuxSession starts yamux over rwc, which must close the whole
// transport (not just one channel) in Close, so that yamux's death kills the
// connection. waitOwned is called by Close after rwc is closed.
func newYamuxSession(rwc io.ReadWriteCloser, server bool, opts Options, waitOwned func()) (*yamuxSession, error) {
	cfg := &yamux.Config{
		AcceptBacklog: acceptBacklog,
		// Liveness is the transport's watchdog (liveness.go): yamux's ping
		// queues behind data and kills healthy slow links.
		EnableKeepAlive:   false,
		KeepAliveInterval: opts.Keepalive, // unused, but yamux wants it positive
		// How long one frame may wait for the transport before its stream
		// operation fails; a slow link may hold several MiB of queued data.
		ConnectionWriteTimeout: max(time.Minute, 6*opts.Keepalive),
		MaxStreamWindowSize:    opts.StreamWindow,
		StreamOpenTimeout:      streamOpenTimeout,
		StreamCloseTimeout:     streamCloseTimeout,
		Logger:                 yamuxLogger{opts.Logger},
	}
	open := yamux.Client
	if server {
		open = yamux.Server
	}
	ymx, err := open(rwc, cfg)
	if err != nil {
		return nil, fmt.Errorf("start yamux: %w", err)
	}
	s := &yamuxSession{
		ymx:       ymx,
		log:       opts.Logger,
		waitOwned: waitOwned,
		acceptq:   make(chan *yamux.Stream),
		done:      make(chan struct{}),
	}
	s.wg.Go(s.acceptLoop)
	return s, nil
}

// acceptLoop hands accepted streams to AcceptStream callers and, when yamux
// shuts down, records the reason and closes done.
func (s *yamuxSession) acceptLoop() {
	for {
		st, err := s.ymx.AcceptStream()
		if err == nil {
			select {
			case s.acceptq <- st:
			case <-s.ymx.CloseChan():
				st.Close()
			}
			continue
		}
		if !s.ymx.IsClosed() {
			// ACKing the stream failed (write timeout on a congested link);
			// yamux dropped it, the session lives on.
			s.log.Debug("yamux accept", "err", err)
			continue
		}
		s.err = fmt.Errorf("%w: %w", ErrSessionClosed, s.cause(s.shutdownErr(err)))
		close(s.done)
		return
	}
}

// shutdownErr returns yamux's shutdown reason. After shutdown, AcceptStream
// returns it only once its backlog is empty; before that it may return
// ErrSessionShutdown from failing to ACK a queued stream. The backlog is
// bounded, so draining it terminates.
func (s *yamuxSession) shutdownErr(err error) error {
	for range acceptBacklog + 1 {
		if !errors.Is(err, yamux.ErrSessionShutdown) {
			return err
		}
		var st *yamux.Stream
		st, err = s.ymx.AcceptStream()
		if st != nil {
			st.Close()
			err = yamux.ErrSessionShutdown
		}
	}
	return err
}

// kill ends the session because of err (a dead link): Err will report it.
func (s *yamuxSession) kill(err error) {
	s.killed.CompareAndSwap(nil, &err)
	s.ymx.Close()
}

func (s *yamuxSession) cause(err error) error {
	if k := s.killed.Load(); k != nil {
		return *k
	}
	switch {
	case errors.Is(err, yamux.ErrKeepAliveTimeout):
		return ErrKeepaliveTimeout
	case errors.Is(err, yamux.ErrSessionShutdown):
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.closing {
			return net.ErrClosed
		}
		// The only other caller of yamux's Close is its StreamOpenTimeout.
		return errors.New("peer did not acknowledge a new stream in time")
	case errors.Is(err, io.EOF):
		// Never wrap io.EOF: callers take it for a clean end of stream.
		return fmt.Errorf("peer closed the connection: %w", io.ErrUnexpectedEOF)
	}
	return err
}

func (s *yamuxSession) OpenStream(ctx context.Context) (Stream, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("open stream: %w", err)
	}
	if ctx.Done() == nil {
		st, err := s.ymx.OpenStream()
		return s.opened(st, err)
	}
	// yamux's OpenStream blocks, without a context, while the peer has
	// AcceptBacklog unacknowledged streams. The goroutine closes the stream
	// itself if the caller gave up; it ends once yamux returns, which Close
	// forces.
	type result struct {
		st  *yamux.Stream
		err error
	}
	ch := make(chan result)
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return nil, s.deadErr()
	}
	s.wg.Go(func() {
		st, err := s.ymx.OpenStream()
		select {
		case ch <- result{st, err}:
		case <-ctx.Done():
			if st != nil {
				st.Close()
			}
		}
	})
	s.mu.Unlock()
	select {
	case r := <-ch:
		return s.opened(r.st, r.err)
	case <-ctx.Done():
		return nil, fmt.Errorf("open stream: %w", ctx.Err())
	}
}

func (s *yamuxSession) opened(st *yamux.Stream, err error) (Stream, error) {
	if err != nil {
		if s.ymx.IsClosed() {
			return nil, s.deadErr()
		}
		return nil, fmt.Errorf("open stream: %w", err)
	}
	return &yamuxStream{Stream: st, sess: s}, nil
}

func (s *yamuxSession) AcceptStream(ctx context.Context) (Stream, error) {
	select {
	case st := <-s.acceptq:
		return &yamuxStream{Stream: st, sess: s}, nil
	case <-s.done:
		return nil, s.err
	case <-ctx.Done():
		return nil, fmt.Errorf("accept stream: %w", ctx.Err())
	}
}

// deadErr waits for the accept loop to record why yamux shut down. Call it
// only once yamux is closed: then the loop finishes promptly.
func (s *yamuxSession) deadErr() error {
	<-s.done
	return s.err
}

func (s *yamuxSession) Close() error {
	s.once.Do(func() {
		s.mu.Lock()
		s.closing = true
		s.mu.Unlock()
		s.ymx.Close()
		s.wg.Wait()
		s.waitOwned()
	})
	return nil
}

func (s *yamuxSession) Done() <-chan struct{} { return s.done }

func (s *yamuxSession) Err() error {
	select {
	case <-s.done:
		return s.err
	default:
		return nil
	}
}

func (s *yamuxSession) LocalAddr() net.Addr  { return s.ymx.LocalAddr() }
func (s *yamuxSession) RemoteAddr() net.Addr { return s.ymx.RemoteAddr() }
func (s *yamuxSession) NumStreams() int      { return s.ymx.NumStreams() }

// yamuxStream makes truncation visible. yamux v0.1.2 force-closes every
// stream when the session dies, and a force-closed stream reads io.EOF just
// like one whose peer sent FIN. yamux does not expose whether the FIN was
// seen, so Read reports the session's error at EOF whenever the session is
// dead: conservative, a stream that ended cleanly just before its session
// died may report an error too, but a cut-off stream never reads as complete.
type yamuxStream struct {
	*yamux.Stream
	sess   *yamuxSession
	closed atomic.Bool
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
	case err == io.EOF && st.sess.ymx.IsClosed():
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
		case st.sess.ymx.IsClosed():
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
// with a level ("[ERR] yamux: ..."); errors and warnings go out at Warn.
type yamuxLogger struct{ log *slog.Logger }

func (l yamuxLogger) Print(v ...any)                 { l.emit(fmt.Sprint(v...)) }
func (l yamuxLogger) Printf(format string, v ...any) { l.emit(fmt.Sprintf(format, v...)) }
func (l yamuxLogger) Println(v ...any)               { l.emit(fmt.Sprintln(v...)) }

func (l yamuxLogger) emit(line string) {
	level := slog.LevelDebug
	if strings.HasPrefix(line, "[ERR]") || strings.HasPrefix(line, "[WARN]") {
		level = slog.LevelWarn
	}
	l.log.Log(context.Background(), level, "yamux", "err", strings.TrimSpace(line))
}
