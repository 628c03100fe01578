package mux

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/yamux"
	"golang.org/x/crypto/ssh"
)

// maxLanes bounds the mux channels of one SSH connection. x/crypto/ssh fixes
// each channel's receive window at 2 MiB, so one channel carries at most
// 2 MiB per round trip; the relay spreads a busy playnode's streams over up
// to maxLanes channels (16 MiB per round trip), and the node rejects more.
const maxLanes = 8

// sshSession is a Session over one SSH connection carrying one or more
// ChannelType channels ("lanes"), each with its own yamux session.
//
// The node opens lane 0 and the control stream on it, and opens no other
// stream; the relay opens the other lanes lazily, when every lane already
// carries a stream it opened, and puts each new stream on the least-loaded
// lane. So the relay accepts streams on lane 0 only, straight from yamux
// (no accept goroutine on the relay: memory per idle node), and the node
// accepts on every lane through one pump goroutine per lane. Idle sessions
// keep one lane; lanes, once open, live as long as the session. Closing any
// lane closes the SSH connection, so one dead lane kills the session.
type sshSession struct {
	conn   ssh.Conn
	pace   *pacer // sizes every lane's packets (sshpace.go)
	server bool
	cfg    *yamux.Config
	log    *slog.Logger

	// peerStreams and peerOpened bound the streams the node opens, relay
	// side (sshgate.go): SSHServerConfig.MaxPeerStreams, 0 for no limit.
	peerStreams int
	peerOpened  atomic.Int32
	peerRefused atomic.Bool // the node opened one too many: yamux's lines go to Debug

	mu      sync.Mutex
	lanes   []*lane // lanes[0] is fixed; append only, under mu
	pending int     // lanes being opened
	noGrow  bool    // the node refused a lane: stay with what is open
	closing bool    // Close called; guards wg.Add

	acceptq   chan acceptedStream // node: streams from every lane's pump
	firstDead atomic.Int32        // index of the lane whose yamux closed the connection, -1 if none
	killed    atomic.Pointer[error]
	errOnce   sync.Once
	err       error
	first     *lane           // lanes[0], for Done without the lock
	wg        *sync.WaitGroup // every goroutine serving the connection
	once      sync.Once

	stopLiveness func()
	ctx          context.Context // cancelled by ended
	cancel       context.CancelFunc
}

// lane is one mux channel and its yamux session.
type lane struct {
	idx    int32
	ymx    *yamux.Session
	opened atomic.Int32 // streams this side opened on the lane and has not closed
	// carried counts the bytes the lane's channel has carried both ways:
	// among lanes with as few streams, a new stream goes to the one that
	// carried least, not beside a bulk transfer (doc.go).
	carried atomic.Int64
}

type acceptedStream struct {
	l  *lane
	st *yamux.Stream
}

// newSSHSession starts yamux on the mux channel ch (lane 0) and the
// liveness watchdog on ac, the connection under conn. wg already tracks the
// goroutines serving conn; the session owns it from here and waits for it in
// Close.
func newSSHSession(conn ssh.Conn, ac *activityConn, pace *pacer, ch ssh.Channel, server bool, peerStreams int, opts Options, wg *sync.WaitGroup) (*sshSession, error) {
	s := &sshSession{
		conn:    conn,
		server:  server,
		log:     opts.Logger,
		acceptq: make(chan acceptedStream),
		wg:      wg,
		pace:    pace,
	}
	s.peerStreams = peerStreams // before addLane, which reads it
	s.cfg = yamuxConfig(opts, server, &s.peerRefused)
	s.firstDead.Store(-1)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	l, err := s.addLane(ch)
	if err != nil {
		conn.Close()
		wg.Wait()
		return nil, fmt.Errorf("start session: %w", err)
	}
	s.first = l
	s.stopLiveness = watchLiveness(conn, ac, opts.Keepalive, s.Done(), func() { s.kill(ErrKeepaliveTimeout) }, s.ended, s.wg)
	return s, nil
}

// addLane starts yamux on ch as the next lane; the node also starts its
// accept pump. It fails once Close was called or maxLanes are open.
func (s *sshSession) addLane(ch ssh.Channel) (*lane, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing || len(s.lanes) >= maxLanes {
		ch.Close()
		return nil, fmt.Errorf("add mux channel: %w", s.errClosedOrFull())
	}
	l := &lane{idx: int32(len(s.lanes))}
	open := yamux.Client
	if s.server {
		open = yamux.Server
	}
	cc := newChannelConn(ch, s.conn, s.pace, &l.carried, func() { s.firstDead.CompareAndSwap(-1, l.idx) })
	if s.server {
		cc.gate = &peerStreamGate{lane: l.idx, limit: s.peerStreams, opened: &s.peerOpened, refused: &s.peerRefused}
	}
	ymx, err := open(cc, s.cfg)
	if err != nil {
		ch.Close()
		return nil, fmt.Errorf("start yamux: %w", err)
	}
	l.ymx = ymx
	s.lanes = append(s.lanes, l)
	if !s.server {
		s.wg.Go(func() { s.pump(l) })
	}
	return l, nil
}

func (s *sshSession) errClosedOrFull() error {
	if s.closing {
		return net.ErrClosed
	}
	return fmt.Errorf("%d mux channels already open", maxLanes)
}

// acceptLane takes a mux channel the relay opened (node side).
func (s *sshSession) acceptLane(nc ssh.NewChannel) {
	s.mu.Lock()
	full := s.closing || len(s.lanes) >= maxLanes
	s.mu.Unlock()
	if full {
		nc.Reject(ssh.ResourceShortage, fmt.Sprintf("at most %d %s channels", maxLanes, ChannelType))
		return
	}
	ch, reqs, err := nc.Accept()
	if err != nil {
		return
	}
	s.mu.Lock()
	if !s.closing {
		s.wg.Go(func() { ssh.DiscardRequests(reqs) })
	}
	s.mu.Unlock()
	if _, err := s.addLane(ch); err != nil {
		s.log.Debug("mux channel refused", "err", err)
	}
}

// pump hands the streams accepted on l to AcceptStream (node side).
func (s *sshSession) pump(l *lane) {
	for {
		st, err := l.ymx.AcceptStream()
		if err == nil {
			select {
			case s.acceptq <- acceptedStream{l, st}:
			case <-l.ymx.CloseChan():
				st.Close()
			}
			continue
		}
		if l.ymx.IsClosed() {
			return
		}
		// ACKing the stream failed (write timeout on a congested link);
		// yamux dropped it, the session lives on.
		s.log.Debug("yamux accept", "err", err)
	}
}

func (s *sshSession) AcceptStream(ctx context.Context) (Stream, error) {
	if !s.server {
		select {
		case a := <-s.acceptq:
			return newYamuxStream(s, a.l, a.st), nil
		case <-s.Done():
			return nil, s.Err()
		case <-ctx.Done():
			return nil, fmt.Errorf("accept stream: %w", ctx.Err())
		}
	}
	l := s.first
	for {
		st, err := l.ymx.AcceptStreamWithContext(ctx)
		switch {
		case err == nil:
			return newYamuxStream(s, l, st), nil
		case ctx.Err() != nil && !l.ymx.IsClosed():
			return nil, fmt.Errorf("accept stream: %w", ctx.Err())
		case l.ymx.IsClosed():
			return nil, s.deadErr()
		}
		s.log.Debug("yamux accept", "err", err) // ACK failed; the session lives on
	}
}

// OpenStream opens the stream on lane 0 (node) or on the least-loaded
// lane, opening a new lane first when every lane is busy (relay).
func (s *sshSession) OpenStream(ctx context.Context) (Stream, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("open stream: %w", err)
	}
	l, err := s.pickLane(ctx)
	if err != nil {
		return nil, err
	}
	if ctx.Done() == nil {
		st, err := l.ymx.OpenStream()
		return s.opened(l, st, err)
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
		st, err := l.ymx.OpenStream()
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
		return s.opened(l, r.st, r.err)
	case <-ctx.Done():
		return nil, fmt.Errorf("open stream: %w", ctx.Err())
	}
}

func (s *sshSession) opened(l *lane, st *yamux.Stream, err error) (Stream, error) {
	if err != nil {
		if l.ymx.IsClosed() {
			return nil, s.deadErr()
		}
		return nil, fmt.Errorf("open stream: %w", err)
	}
	l.opened.Add(1)
	ys := newYamuxStream(s, l, st)
	ys.counted = true
	return ys, nil
}

// pickLane returns the lane with the fewest streams opened by this side,
// of those any lane but lane 0, which carries the control stream, and the
// one that carried the fewest bytes.
// On the relay, when that lane already carries one, it opens a new lane
// (unless maxLanes are open or being opened) and returns it; the stream
// waits for the channel open, one round trip, once per lane.
func (s *sshSession) pickLane(ctx context.Context) (*lane, error) {
	s.mu.Lock()
	best := s.lanes[0]
	if s.server {
		for _, l := range s.lanes[1:] {
			n, bn := l.opened.Load(), best.opened.Load()
			if n < bn || n == bn && (best.idx == 0 || l.carried.Load() < best.carried.Load()) {
				best = l
			}
		}
	}
	grow := s.server && !s.closing && !s.noGrow && best.opened.Load() > 0 && len(s.lanes)+s.pending < maxLanes
	if !grow {
		s.mu.Unlock()
		return best, nil
	}
	s.pending++
	type result struct {
		l   *lane
		err error
	}
	ch := make(chan result, 1)
	s.wg.Go(func() {
		l, err := s.openLane()
		s.mu.Lock()
		s.pending--
		var refused *ssh.OpenChannelError
		if errors.As(err, &refused) {
			s.noGrow = true // a node without lanes, or at its maximum
		}
		s.mu.Unlock()
		ch <- result{l, err}
	})
	s.mu.Unlock()
	select {
	case r := <-ch:
		if r.err != nil {
			// The peer refused (older node, or its maximum): use what exists.
			s.log.Debug("open mux channel", "err", r.err)
			return best, nil
		}
		return r.l, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("open stream: %w", ctx.Err())
	}
}

// openLane opens one more mux channel to the node (relay side).
func (s *sshSession) openLane() (*lane, error) {
	ch, reqs, err := s.conn.OpenChannel(ChannelType, nil)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	if !s.closing {
		s.wg.Go(func() { ssh.DiscardRequests(reqs) })
	}
	s.mu.Unlock()
	return s.addLane(ch)
}

// kill ends the session because of err (a dead link): Err will report it.
func (s *sshSession) kill(err error) {
	s.killed.CompareAndSwap(nil, &err)
	s.first.ymx.Close()
}

// ended cancels Context once the session is dead: it waits for Done. The
// goroutine serving the SSH connection calls it when the connection ends,
// which every end of the session brings about (yamux closing a lane closes
// the connection); the liveness watch calls it as a backstop, for a
// connection that ended before the session was handed to that goroutine.
func (s *sshSession) ended() {
	<-s.Done()
	s.cancel()
}

func (s *sshSession) Context() context.Context { return s.ctx }

// Done is lane 0's: whichever lane dies closes the connection, and so
// lane 0.
func (s *sshSession) Done() <-chan struct{} { return s.first.ymx.CloseChan() }

func (s *sshSession) Err() error {
	select {
	case <-s.Done():
	default:
		return nil
	}
	s.errOnce.Do(func() {
		s.err = fmt.Errorf("%w: %w", ErrSessionClosed, s.cause())
	})
	return s.err
}

// deadErr waits for the session to die and says why. Call it only once a
// lane is closed: then lane 0 follows promptly.
func (s *sshSession) deadErr() error {
	<-s.Done()
	return s.Err()
}

// cause says why the session died: the watchdog's verdict, else the
// shutdown reason of the lane that closed the connection first.
func (s *sshSession) cause() error {
	if k := s.killed.Load(); k != nil {
		return *k
	}
	s.mu.Lock()
	l, closing := s.lanes[0], s.closing
	if i := int(s.firstDead.Load()); i > 0 && i < len(s.lanes) {
		l = s.lanes[i]
	}
	s.mu.Unlock()
	err := shutdownErr(l.ymx)
	switch {
	case errors.Is(err, yamux.ErrKeepAliveTimeout):
		return ErrKeepaliveTimeout
	case errors.Is(err, yamux.ErrSessionShutdown):
		if closing {
			return net.ErrClosed
		}
		// The only other caller of yamux's Close is its StreamOpenTimeout.
		return errors.New("peer did not acknowledge a new stream in time")
	case errors.Is(err, io.EOF):
		// Never wrap io.EOF: callers take it for a clean end of stream.
		return fmt.Errorf("%w: %w", ErrPeerClosed, io.ErrUnexpectedEOF)
	}
	return err
}

// shutdownErr returns a closed yamux session's shutdown reason. yamux
// v0.1.2 reports it only from AcceptStream, and only once the accept
// backlog is empty; before that AcceptStream may return ErrSessionShutdown
// from failing to ACK a queued stream. The backlog is bounded, so draining
// it terminates.
func shutdownErr(ymx *yamux.Session) error {
	err := yamux.ErrSessionShutdown
	for range max(nodeAcceptBacklog, relayAcceptBacklog) + 1 {
		var st *yamux.Stream
		st, err = ymx.AcceptStream()
		if st != nil {
			st.Close()
			err = yamux.ErrSessionShutdown
			continue
		}
		if !errors.Is(err, yamux.ErrSessionShutdown) {
			return err
		}
	}
	return err
}

func (s *sshSession) Close() error {
	s.once.Do(func() {
		s.mu.Lock()
		s.closing = true
		lanes := s.lanes
		s.mu.Unlock()
		for _, l := range lanes {
			l.ymx.Close()
		}
		s.stopLiveness()
		s.wg.Wait() // the connection's goroutine has called ended
	})
	return nil
}

func (s *sshSession) LocalAddr() net.Addr  { return s.conn.LocalAddr() }
func (s *sshSession) RemoteAddr() net.Addr { return s.conn.RemoteAddr() }

func (s *sshSession) NumStreams() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, l := range s.lanes {
		n += l.ymx.NumStreams()
	}
	return n
}
