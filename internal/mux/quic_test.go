package mux_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"golang.org/x/crypto/ssh"

	"paradigm/internal/mux"
	"paradigm/internal/mux/muxtest"
)

func newEd25519(t testing.TB) (ed25519.PrivateKey, ssh.PublicKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return priv, key
}

func listenUDP(t testing.TB, addr string) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// quicEnv is a relay listening on 127.0.0.1:0/udp with one authorized node key.
type quicEnv struct {
	ln       *mux.QUICListener
	hostPub  ssh.PublicKey
	nodeKey  ed25519.PrivateKey
	nodePub  ssh.PublicKey
	server   mux.QUICServerConfig
	client   mux.QUICClientConfig
	accepted chan acceptResult
}

func newQUICEnv(t testing.TB, tune func(*quicEnv)) *quicEnv {
	t.Helper()
	e := &quicEnv{accepted: make(chan acceptResult, 1)}
	var hostKey ed25519.PrivateKey
	hostKey, e.hostPub = newEd25519(t)
	e.nodeKey, e.nodePub = newEd25519(t)
	e.server = mux.QUICServerConfig{
		HostKey: hostKey,
		Authorize: func(_ net.Addr, user string, key ssh.PublicKey) (string, error) {
			if ssh.FingerprintSHA256(key) == ssh.FingerprintSHA256(e.nodePub) && user == "player-1" {
				return "player-1", nil
			}
			return "", errUnauthorized
		},
	}
	e.client = mux.QUICClientConfig{
		Key:             e.nodeKey,
		User:            "player-1",
		HostKeyCallback: ssh.FixedHostKey(e.hostPub),
	}
	if tune != nil {
		tune(e)
	}
	ln, err := mux.ListenQUIC(listenUDP(t, "127.0.0.1:0"), &e.server)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	e.ln = ln
	return e
}

// accept runs Accept once, in the background.
func (e *quicEnv) accept() {
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), muxtest.Timeout)
		defer cancel()
		s, peer, err := e.ln.Accept(ctx)
		e.accepted <- acceptResult{s: s, peer: peer, err: err}
	}()
}

func (e *quicEnv) result(t testing.TB) acceptResult {
	t.Helper()
	select {
	case r := <-e.accepted:
		if r.s != nil {
			t.Cleanup(func() { r.s.Close() })
		}
		return r
	case <-time.After(2 * muxtest.Timeout):
		t.Fatal("Accept did not return")
		return acceptResult{}
	}
}

// dial runs DialQUIC from pconn (a fresh 127.0.0.1 socket when nil) to raddr
// (the relay when nil).
func (e *quicEnv) dial(t testing.TB, pconn net.PacketConn, raddr net.Addr) (mux.Session, error) {
	t.Helper()
	if pconn == nil {
		pconn = listenUDP(t, "127.0.0.1:0")
	}
	if raddr == nil {
		raddr = e.ln.Addr()
	}
	ctx, cancel := context.WithTimeout(context.Background(), muxtest.Timeout)
	defer cancel()
	s, err := mux.DialQUIC(ctx, pconn, raddr, &e.client)
	if s != nil {
		t.Cleanup(func() { s.Close() })
	}
	return s, err
}

func (e *quicEnv) pair(t testing.TB, pconn net.PacketConn, raddr net.Addr) (client, server mux.Session) {
	t.Helper()
	e.accept()
	client, err := e.dial(t, pconn, raddr)
	if err != nil {
		t.Fatalf("DialQUIC: %v", err)
	}
	r := e.result(t)
	if r.err != nil {
		t.Fatalf("Accept: %v", r.err)
	}
	if r.peer.Playnode != "player-1" || r.peer.Key == nil || r.peer.ClientVersion != mux.ALPN {
		t.Errorf("peer = %+v, want playnode player-1 with its key and ALPN", r.peer)
	}
	return client, r.s
}

// TestQUICConformance runs the suite with stream limits of 1000, so that its
// ContextCancel case (open unaccepted streams until OpenStream blocks)
// reaches the limit within its 10000 tries; the default is 10000.
func TestQUICConformance(t *testing.T) {
	muxtest.Run(t, func(t *testing.T) (mux.Session, mux.Session) {
		e := newQUICEnv(t, func(e *quicEnv) {
			e.server.MaxPeerStreams = 1000
			e.client.MaxStreams = 1000
		})
		return e.pair(t, nil, nil)
	})
}

func TestQUICWrongHostKey(t *testing.T) {
	errMismatch := errors.New("host key mismatch")
	_, otherPub := newEd25519(t)
	e := newQUICEnv(t, nil)
	want := ssh.FixedHostKey(otherPub)
	var gotHost string
	e.client.Addr = "relay.example:7000"
	e.client.HostKeyCallback = func(host string, remote net.Addr, key ssh.PublicKey) error {
		gotHost = host
		if err := want(host, remote, key); err != nil {
			return errors.Join(errMismatch, err)
		}
		return nil
	}
	if _, err := e.dial(t, nil, nil); !errors.Is(err, errMismatch) {
		t.Errorf("DialQUIC: got %v, want the host key callback's error", err)
	}
	if gotHost != "relay.example:7000" {
		t.Errorf("HostKeyCallback hostname = %q, want the configured Addr", gotHost)
	}
}

func TestQUICUnauthorizedKey(t *testing.T) {
	e := newQUICEnv(t, nil)
	e.client.Key, _ = newEd25519(t)
	e.accept()
	_, err := e.dial(t, nil, nil)
	var appErr *quic.ApplicationError
	if !errors.As(err, &appErr) || !appErr.Remote || !strings.Contains(appErr.ErrorMessage, "not authorized") {
		t.Errorf("DialQUIC with an unauthorized key: got %v, want the relay's refusal", err)
	}
	if !errors.Is(err, mux.ErrKeyRefused) {
		t.Errorf("DialQUIC with an unauthorized key: got %v, want ErrKeyRefused", err)
	}
	r := e.result(t)
	if !errors.Is(r.err, errUnauthorized) || !errors.Is(r.err, mux.ErrPeerHandshake) {
		t.Errorf("Accept: got %v, want Authorize's error matching ErrPeerHandshake", r.err)
	}
	var pe *mux.PeerHandshakeError
	if !errors.As(r.err, &pe) || pe.Remote == nil || pe.Remote.(*net.UDPAddr).IP.String() != "127.0.0.1" {
		t.Errorf("Accept: got %#v, want a *PeerHandshakeError with the node's address", r.err)
	}
	// The listener goes on.
	e.client.Key = e.nodeKey
	e.pair(t, nil, nil)
}

// TestQUICClientWithoutCertificate dials with a plain TLS client: the
// handshake fails (or the connection dies right after the client's side of
// it completes), Accept never sees it, and the listener goes on.
func TestQUICClientWithoutCertificate(t *testing.T) {
	e := newQUICEnv(t, nil)
	e.accept()
	ctx := muxtest.Context(t)
	tr := &quic.Transport{Conn: listenUDP(t, "127.0.0.1:0")}
	defer tr.Close()
	conn, err := tr.Dial(ctx, e.ln.Addr(), &tls.Config{
		InsecureSkipVerify: true,
		NextProtos:         []string{mux.ALPN},
	}, nil)
	if err == nil {
		select {
		case <-conn.Context().Done():
		case <-ctx.Done():
			t.Fatal("connection without a client certificate still alive")
		}
	}
	e.pair(t, nil, nil) // the Accept started above returns the authorized node
}

func TestQUICConfigRequired(t *testing.T) {
	e := newQUICEnv(t, nil)
	e.client.HostKeyCallback = nil
	if _, err := e.dial(t, nil, nil); err == nil {
		t.Error("DialQUIC without HostKeyCallback: got nil error")
	}
	e.client.HostKeyCallback = ssh.FixedHostKey(e.hostPub)
	e.client.Key = e.client.Key[:10]
	if _, err := e.dial(t, nil, nil); err == nil {
		t.Error("DialQUIC with a truncated key: got nil error")
	}
	if _, err := mux.ListenQUIC(listenUDP(t, "127.0.0.1:0"), &mux.QUICServerConfig{HostKey: e.nodeKey}); err == nil {
		t.Error("ListenQUIC without Authorize: got nil error")
	}
}

// TestQUICListenerClose: the sessions share the listener's socket, so they
// end with it; the node learns at once from the CONNECTION_CLOSE.
func TestQUICListenerClose(t *testing.T) {
	e := newQUICEnv(t, nil)
	client, server := e.pair(t, nil, nil)
	if err := e.ln.Close(); err != nil {
		t.Fatal(err)
	}
	muxtest.WaitDone(t, server)
	muxtest.WaitDone(t, client)
	if _, _, err := e.ln.Accept(context.Background()); !errors.Is(err, net.ErrClosed) || errors.Is(err, mux.ErrPeerHandshake) {
		t.Errorf("Accept after Close: got %v, want net.ErrClosed", err)
	}
	if errors.Is(client.Err(), mux.ErrKeepaliveTimeout) {
		t.Errorf("node Err() = %v, want the relay's close, not a timeout", client.Err())
	}
}

// TestQUICStreamCloseStopsPeer: Close stops reading (STOP_SENDING), so the
// peer's writes fail with a stream error, not silently into the void, and
// the session lives on.
func TestQUICStreamCloseStopsPeer(t *testing.T) {
	e := newQUICEnv(t, nil)
	client, server := e.pair(t, nil, nil)
	c, s := muxtest.Open(t, client, server)
	c.Close()
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Read after Close: got %v, want net.ErrClosed", err)
	}
	s.SetWriteDeadline(time.Now().Add(muxtest.Timeout))
	var err error
	for err == nil {
		_, err = s.Write(make([]byte, 32<<10))
	}
	var se *quic.StreamError
	if !errors.As(err, &se) || !se.Remote {
		t.Errorf("peer Write after Close: got %v, want a remote stream error", err)
	}
	if client.Err() != nil || server.Err() != nil {
		t.Errorf("sessions died: %v, %v", client.Err(), server.Err())
	}
}

func TestQUICKeepaliveDetectsBlackhole(t *testing.T) {
	e := newQUICEnv(t, func(e *quicEnv) {
		e.server.Keepalive = 200 * time.Millisecond
		e.client.Keepalive = 200 * time.Millisecond
	})
	p := newUDPProxy(t, e.ln.Addr())
	client, server := e.pair(t, nil, p.conn.LocalAddr())
	c, _ := muxtest.Open(t, client, server)
	readErr := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 1))
		readErr <- err
	}()

	p.blackhole.Store(true)
	for _, s := range []mux.Session{client, server} {
		muxtest.WaitDone(t, s)
		if !errors.Is(s.Err(), mux.ErrKeepaliveTimeout) {
			t.Errorf("Err() = %v, want ErrKeepaliveTimeout", s.Err())
		}
	}
	if err := <-readErr; !errors.Is(err, mux.ErrKeepaliveTimeout) || !errors.Is(err, mux.ErrSessionClosed) {
		t.Errorf("in-flight Read: got %v, want ErrKeepaliveTimeout and ErrSessionClosed", err)
	}
}

// udpProxy relays datagrams between one client and target until blackhole
// is set, then drops everything both ways, as a dead NAT does.
type udpProxy struct {
	conn      *net.UDPConn
	blackhole atomic.Bool
}

func newUDPProxy(t *testing.T, target net.Addr) *udpProxy {
	p := &udpProxy{conn: listenUDP(t, "127.0.0.1:0")}
	up, err := net.DialUDP("udp", nil, target.(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	var client atomic.Pointer[net.UDPAddr]
	var wg sync.WaitGroup
	t.Cleanup(func() {
		p.conn.Close()
		up.Close()
		wg.Wait()
	})
	wg.Go(func() {
		buf := make([]byte, 64<<10)
		for {
			n, from, err := p.conn.ReadFromUDP(buf)
			if err != nil {
				return
			}
			client.Store(from)
			if !p.blackhole.Load() {
				up.Write(buf[:n])
			}
		}
	})
	wg.Go(func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := up.Read(buf)
			if err != nil {
				return
			}
			if to := client.Load(); to != nil && !p.blackhole.Load() {
				p.conn.WriteToUDP(buf[:n], to)
			}
		}
	})
	return p
}

// lossyConn is a UDP socket that can be made to drop everything. It hides
// *net.UDPConn's optimised methods, so quic-go uses ReadFrom and WriteTo.
type lossyConn struct {
	c    *net.UDPConn
	dead atomic.Bool
}

func (l *lossyConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, addr, err := l.c.ReadFrom(b)
		if err != nil || !l.dead.Load() {
			return n, addr, err
		}
	}
}

func (l *lossyConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if l.dead.Load() {
		return len(b), nil
	}
	return l.c.WriteTo(b, addr)
}

func (l *lossyConn) Close() error                       { return l.c.Close() }
func (l *lossyConn) LocalAddr() net.Addr                { return l.c.LocalAddr() }
func (l *lossyConn) SetDeadline(t time.Time) error      { return l.c.SetDeadline(t) }
func (l *lossyConn) SetReadDeadline(t time.Time) error  { return l.c.SetReadDeadline(t) }
func (l *lossyConn) SetWriteDeadline(t time.Time) error { return l.c.SetWriteDeadline(t) }
func (l *lossyConn) SetReadBuffer(n int) error          { return l.c.SetReadBuffer(n) }
func (l *lossyConn) SetWriteBuffer(n int) error         { return l.c.SetWriteBuffer(n) }

// TestQUICMigration moves the node from 127.0.0.1 to 127.0.0.2 in the
// middle of an 8 MiB transfer each way: both senders pause half way, the
// node migrates, the old socket goes dead, and the second halves can only
// travel over the new path. Both arrive byte-exact and the session lives on.
func TestQUICMigration(t *testing.T) {
	const size = 8 << 20
	e := newQUICEnv(t, nil)
	old := &lossyConn{c: listenUDP(t, "127.0.0.1:0")}
	client, server := e.pair(t, old, nil)
	newConn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
	if err != nil {
		t.Skipf("no 127.0.0.2 on this host: %v", err)
	}
	c, s := muxtest.Open(t, client, server)

	halfUp, halfDown, resume := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	var up, down transferResult
	wg.Go(func() { up = transfer(c, s, size, 1, halfUp, resume) })
	wg.Go(func() { down = transfer(s, c, size, 2, halfDown, resume) })
	for _, half := range []chan struct{}{halfUp, halfDown} {
		select {
		case <-half:
		case <-time.After(muxtest.Timeout):
			t.Fatal("transfer did not reach half way")
		}
	}
	if err := mux.MigrateQUIC(muxtest.Context(t), client, newConn); err != nil {
		t.Fatalf("MigrateQUIC: %v", err)
	}
	old.dead.Store(true) // from now on only the new path works
	close(resume)
	wg.Wait()
	for name, r := range map[string]transferResult{"node to relay": up, "relay to node": down} {
		if r.err != nil {
			t.Errorf("%s: %v", name, r.err)
		} else if r.n != size || r.got != r.sent {
			t.Errorf("%s: got %d bytes %x, want %d bytes %x", name, r.n, r.got[:4], size, r.sent[:4])
		}
	}
	if err := client.Err(); err != nil {
		t.Fatalf("session died: %v", err)
	}
	if got := server.RemoteAddr().(*net.UDPAddr).IP; !got.Equal(net.IPv4(127, 0, 0, 2)) {
		t.Errorf("relay sees the node at %v, want 127.0.0.2", got)
	}
	if got := client.LocalAddr().String(); got != newConn.LocalAddr().String() {
		t.Errorf("node LocalAddr() = %s, want the new socket's %s", got, newConn.LocalAddr())
	}
	muxtest.Open(t, client, server) // and a new stream works
}

type transferResult struct {
	sent, got [32]byte
	n         int64
	err       error
}

// transfer sends size seeded random bytes from src to dst and reads them
// there. The sender closes half after writing half of them and waits for
// resume before writing the rest.
func transfer(src, dst mux.Stream, size int, seed uint64, half, resume chan struct{}) transferResult {
	var r transferResult
	var sendErr error
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		h := sha256.New()
		rng := mrand.NewChaCha8([32]byte{byte(seed)})
		buf := make([]byte, 64<<10)
		for off := 0; off < size && sendErr == nil; off += len(buf) {
			if off == size/2 {
				close(half)
				<-resume
			}
			rng.Read(buf)
			h.Write(buf)
			_, sendErr = src.Write(buf)
		}
		if sendErr == nil {
			sendErr = src.CloseWrite()
		}
		r.sent = [32]byte(h.Sum(nil))
	}()
	h := sha256.New()
	n, err := io.Copy(h, dst)
	<-sent
	r.n, r.got = n, [32]byte(h.Sum(nil))
	r.err = errors.Join(err, sendErr)
	return r
}

func BenchmarkQUICStreamThroughput(b *testing.B) {
	e := newQUICEnv(b, nil)
	client, server := e.pair(b, nil, nil)
	muxtest.Throughput(b, client, server)
}
