package mux_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"paradigm/internal/mux"
	"paradigm/internal/mux/muxtest"
)

func newSigner(t testing.TB) ssh.Signer {
	t.Helper()
	priv, _ := newEd25519(t)
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// sshEnv is a relay listening on 127.0.0.1:0 with one authorized node key.
type sshEnv struct {
	ln       net.Listener
	hostKey  ssh.Signer
	nodeKey  ssh.Signer
	server   mux.SSHServerConfig
	client   mux.SSHClientConfig
	accepted chan acceptResult
}

type acceptResult struct {
	s    mux.Session
	peer mux.Peer
	conn net.Conn
	err  error
}

var errUnauthorized = errors.New("key not authorized")

func newSSHEnv(t testing.TB) *sshEnv {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	e := &sshEnv{ln: ln, hostKey: newSigner(t), nodeKey: newSigner(t), accepted: make(chan acceptResult, 1)}
	e.server = mux.SSHServerConfig{
		HostKey: e.hostKey,
		Authorize: func(_ net.Addr, _ string, key ssh.PublicKey) (string, error) {
			if ssh.FingerprintSHA256(key) == ssh.FingerprintSHA256(e.nodeKey.PublicKey()) {
				return "player-1", nil
			}
			return "", errUnauthorized
		},
	}
	e.client = mux.SSHClientConfig{
		Key:             e.nodeKey,
		User:            "player-1",
		HostKeyCallback: ssh.FixedHostKey(e.hostKey.PublicKey()),
	}
	return e
}

// accept runs AcceptSSH on the next connection, in the background.
func (e *sshEnv) accept(t testing.TB) {
	go func() {
		conn, err := e.ln.Accept()
		if err != nil {
			e.accepted <- acceptResult{err: err}
			return
		}
		s, peer, err := mux.AcceptSSH(context.Background(), conn, &e.server)
		e.accepted <- acceptResult{s, peer, conn, err}
	}()
}

func (e *sshEnv) result(t testing.TB) acceptResult {
	t.Helper()
	select {
	case r := <-e.accepted:
		if r.s != nil {
			t.Cleanup(func() { r.s.Close() })
		}
		return r
	case <-time.After(muxtest.Timeout):
		t.Fatal("AcceptSSH did not return")
		return acceptResult{}
	}
}

func (e *sshEnv) dial(t testing.TB, addr string) (mux.Session, error) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s, err := mux.DialSSH(context.Background(), conn, &e.client)
	if s != nil {
		t.Cleanup(func() { s.Close() })
	}
	return s, err
}

// pair connects a node and a relay session over SSH on loopback TCP.
func (e *sshEnv) pair(t testing.TB, addr string) (client, server mux.Session, serverConn net.Conn) {
	t.Helper()
	e.accept(t)
	client, err := e.dial(t, addr)
	if err != nil {
		t.Fatalf("DialSSH: %v", err)
	}
	r := e.result(t)
	if r.err != nil {
		t.Fatalf("AcceptSSH: %v", r.err)
	}
	if r.peer.Playnode != "player-1" || r.peer.Key == nil || r.peer.ClientVersion != "SSH-2.0-paradigm" {
		t.Errorf("peer = %+v, want playnode player-1 with its key and version", r.peer)
	}
	return client, r.s, r.conn
}

func TestSSHConformance(t *testing.T) {
	muxtest.Run(t, func(t *testing.T) (mux.Session, mux.Session) {
		e := newSSHEnv(t)
		c, s, _ := e.pair(t, e.ln.Addr().String())
		return c, s
	})
}

func TestSSHPeerTCPClosed(t *testing.T) {
	e := newSSHEnv(t)
	client, server, serverConn := e.pair(t, e.ln.Addr().String())
	serverConn.Close() // under the relay's feet: no SSH or yamux goodbye
	muxtest.WaitDone(t, client)
	muxtest.WaitDone(t, server)
}

func TestSSHKeepaliveDetectsBlackhole(t *testing.T) {
	e := newSSHEnv(t)
	e.server.Keepalive = 200 * time.Millisecond
	e.client.Keepalive = 200 * time.Millisecond
	p := newBlackholeProxy(t, e.ln.Addr().String())
	client, server, _ := e.pair(t, p.ln.Addr().String())
	c, _ := muxtest.Open(t, client, server)
	readErr := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 1))
		readErr <- err
	}()

	p.blackhole()
	for _, s := range []mux.Session{client, server} {
		muxtest.WaitDone(t, s)
		if !errors.Is(s.Err(), mux.ErrKeepaliveTimeout) {
			t.Errorf("Err() = %v, want ErrKeepaliveTimeout", s.Err())
		}
		select {
		case <-s.Context().Done():
		case <-time.After(muxtest.Timeout):
			t.Errorf("Context not cancelled %v after the keepalive timeout", muxtest.Timeout)
		}
	}
	if err := <-readErr; !errors.Is(err, mux.ErrKeepaliveTimeout) {
		t.Errorf("in-flight Read: got %v, want ErrKeepaliveTimeout", err)
	}
}

// TestSSHSlowLinkStaysAlive sends a bulk transfer over a bottleneck link
// whose buffer holds more than one keepalive interval of data, as a cellular
// uplink does: a ping queued behind that data (yamux's own keepalive) would
// miss its deadline and kill a healthy session; the liveness watchdog must
// not.
func TestSSHSlowLinkStaysAlive(t *testing.T) {
	e := newSSHEnv(t)
	e.server.Keepalive = 150 * time.Millisecond
	e.client.Keepalive = 150 * time.Millisecond
	addr := newSlowLink(t, e.ln.Addr().String(), 2<<20)
	client, server, _ := e.pair(t, addr)
	c, s := muxtest.Open(t, client, server)

	const size = 6 << 20 // 3 s at 2 MiB/s: 20 keepalive intervals
	want := make([]byte, size)
	for i := range want {
		want[i] = byte(i * 7)
	}
	go func() {
		c.Write(want)
		c.CloseWrite()
	}()
	got, err := io.ReadAll(s)
	if err != nil {
		t.Fatalf("read %d of %d bytes over the slow link: %v (client: %v, server: %v)", len(got), size, err, client.Err(), server.Err())
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("got %d bytes, want %d identical ones", len(got), size)
	}
	for _, sess := range []mux.Session{client, server} {
		if err := sess.Err(); err != nil {
			t.Errorf("session died on a slow but live link: %v", err)
		}
	}
}

// newSlowLink proxies TCP to target through a bottleneck of bytesPerSec in
// each direction with an unbounded buffer before it: the sender's data is
// acknowledged at once and queues, as on a real slow link with a deep buffer.
// It returns the address to dial.
func newSlowLink(t *testing.T, target string, bytesPerSec int) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	shape := func(dst, src net.Conn) {
		queue := make(chan []byte, 4096) // 4096 reads of at most 32 KiB
		wg.Go(func() {
			defer close(queue)
			for {
				buf := make([]byte, 32<<10)
				n, err := src.Read(buf)
				if err != nil {
					return
				}
				queue <- buf[:n]
			}
		})
		for chunk := range queue {
			// Bandwidth emulation, not synchronisation.
			time.Sleep(time.Duration(len(chunk)) * time.Second / time.Duration(bytesPerSec))
			if _, err := dst.Write(chunk); err != nil {
				break
			}
		}
		dst.Close()
		src.Close()
	}
	wg.Go(func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, in, out)
			mu.Unlock()
			wg.Go(func() { shape(out, in) })
			wg.Go(func() { shape(in, out) })
		}
	})
	return ln.Addr().String()
}

// blackholeProxy forwards TCP until blackhole is called, then silently
// drops everything in both directions while keeping the connections open,
// as a dead NAT or a pulled cable does.
type blackholeProxy struct {
	ln   net.Listener
	mu   sync.Mutex
	dead bool
}

func newBlackholeProxy(t *testing.T, target string) *blackholeProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &blackholeProxy{ln: ln}
	var wg sync.WaitGroup
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		p.mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			p.mu.Lock()
			conns = append(conns, in, out)
			p.mu.Unlock()
			wg.Go(func() { p.forward(out, in) })
			wg.Go(func() { p.forward(in, out) })
		}
	})
	return p
}

func (p *blackholeProxy) forward(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			return
		}
		p.mu.Lock()
		dead := p.dead
		p.mu.Unlock()
		if dead {
			continue
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			return
		}
	}
}

func (p *blackholeProxy) blackhole() {
	p.mu.Lock()
	p.dead = true
	p.mu.Unlock()
}

func TestSSHWrongHostKey(t *testing.T) {
	e := newSSHEnv(t)
	errMismatch := errors.New("host key mismatch")
	want := ssh.FixedHostKey(newSigner(t).PublicKey())
	e.client.HostKeyCallback = func(host string, remote net.Addr, key ssh.PublicKey) error {
		if err := want(host, remote, key); err != nil {
			return errors.Join(errMismatch, err)
		}
		return nil
	}
	e.accept(t)
	if _, err := e.dial(t, e.ln.Addr().String()); !errors.Is(err, errMismatch) {
		t.Errorf("DialSSH: got %v, want the host key error", err)
	}
	if r := e.result(t); r.err == nil {
		t.Error("AcceptSSH: got nil error after the node hung up")
	}
}

func TestSSHUnauthorizedKey(t *testing.T) {
	e := newSSHEnv(t)
	e.client.Key = newSigner(t)
	e.accept(t)
	if _, err := e.dial(t, e.ln.Addr().String()); !errors.Is(err, mux.ErrKeyRefused) {
		t.Errorf("DialSSH with an unauthorized key: got %v, want ErrKeyRefused", err)
	}
	if r := e.result(t); !errors.Is(r.err, errUnauthorized) {
		t.Errorf("AcceptSSH: got %v, want Authorize's error", r.err)
	}
}

func TestSSHConfigRequired(t *testing.T) {
	e := newSSHEnv(t)
	e.client.HostKeyCallback = nil
	e.accept(t)
	if _, err := e.dial(t, e.ln.Addr().String()); err == nil {
		t.Error("DialSSH without HostKeyCallback: got nil error")
	}
	e.result(t)
}

func TestSSHRejectsNonSSH(t *testing.T) {
	tests := []struct {
		name    string
		send    string
		timeout time.Duration
		want    error
	}{
		{"http", "GET / HTTP/1.1\r\n\r\n", muxtest.Timeout, mux.ErrNotSSH},
		{"silent", "", 300 * time.Millisecond, os.ErrDeadlineExceeded},
		{"stalls after version", "SSH-2.0-x\r\n", 300 * time.Millisecond, os.ErrDeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newSSHEnv(t)
			e.server.HandshakeTimeout = tt.timeout
			e.accept(t)
			conn, err := net.Dial("tcp", e.ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			io.WriteString(conn, tt.send)
			if r := e.result(t); !errors.Is(r.err, tt.want) {
				t.Errorf("AcceptSSH: got %v, want %v", r.err, tt.want)
			}
		})
	}
}

// TestSSHRejectsOtherUses drives the relay with a plain x/crypto/ssh client,
// as someone trying to use it as a shell or port-forwarding server would.
func TestSSHRejectsOtherUses(t *testing.T) {
	e := newSSHEnv(t)
	e.accept(t)
	conn, err := net.Dial("tcp", e.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	cc, chans, reqs, err := ssh.NewClientConn(conn, "relay", &ssh.ClientConfig{
		User:            "player-1",
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(e.nodeKey)},
		HostKeyCallback: ssh.FixedHostKey(e.hostKey.PublicKey()),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	go ssh.DiscardRequests(reqs)
	go func() {
		for nc := range chans {
			nc.Reject(ssh.Prohibited, "")
		}
	}()

	wantProhibited := func(what string, err error) {
		t.Helper()
		var oce *ssh.OpenChannelError
		if !errors.As(err, &oce) || oce.Reason != ssh.Prohibited {
			t.Errorf("%s: got %v, want rejection with Prohibited", what, err)
		}
	}
	_, _, err = cc.OpenChannel("session", nil)
	wantProhibited("session channel", err)
	_, _, err = cc.OpenChannel("direct-tcpip", ssh.Marshal(struct {
		Host     string
		Port     uint32
		OrigHost string
		OrigPort uint32
	}{"127.0.0.1", 22, "127.0.0.1", 1}))
	wantProhibited("direct-tcpip channel", err)
	if ok, _, err := cc.SendRequest("tcpip-forward", true, ssh.Marshal(struct {
		Addr string
		Port uint32
	}{"0.0.0.0", 8080})); ok || err != nil {
		t.Errorf("tcpip-forward: got ok=%v, %v, want refused", ok, err)
	}
	if ok, _, err := cc.SendRequest("keepalive@openssh.com", true, nil); !ok || err != nil {
		t.Errorf("keepalive@openssh.com: got ok=%v, %v, want answered", ok, err)
	}

	if _, _, err := cc.OpenChannel(mux.ChannelType, nil); err != nil {
		t.Fatalf("mux channel: %v", err)
	}
	if r := e.result(t); r.err != nil {
		t.Fatalf("AcceptSSH: %v", r.err)
	}
	_, _, err = cc.OpenChannel(mux.ChannelType, nil)
	wantProhibited("second mux channel", err)
	if ok, _, err := cc.SendRequest("tcpip-forward", true, nil); ok || err != nil {
		t.Errorf("tcpip-forward after setup: got ok=%v, %v, want refused", ok, err)
	}
}

func BenchmarkStreamThroughput(b *testing.B) {
	e := newSSHEnv(b)
	e.accept(b)
	client, err := e.dial(b, e.ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	r := e.result(b)
	if r.err != nil {
		b.Fatal(r.err)
	}
	muxtest.Throughput(b, client, r.s)
}

// TestSSHAuthorizeOncePerKey offers an unauthorized key, then the node's.
func TestSSHAuthorizeOncePerKey(t *testing.T) {
	e := newSSHEnv(t)
	calls := map[string]int{}
	authorize := e.server.Authorize
	e.server.Authorize = func(remote net.Addr, user string, key ssh.PublicKey) (string, error) {
		calls[ssh.FingerprintSHA256(key)]++ // called from the handshake goroutine only
		return authorize(remote, user, key)
	}
	bad := newSigner(t)
	e.accept(t)
	conn, err := net.Dial("tcp", e.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	cc, _, _, err := ssh.NewClientConn(conn, "relay", &ssh.ClientConfig{
		User:            "player-1",
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(bad, e.nodeKey)},
		HostKeyCallback: ssh.FixedHostKey(e.hostKey.PublicKey()),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if _, _, err := cc.OpenChannel(mux.ChannelType, nil); err != nil {
		t.Fatal(err)
	}
	r := e.result(t)
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.peer.Playnode != "player-1" || ssh.FingerprintSHA256(r.peer.Key) != ssh.FingerprintSHA256(e.nodeKey.PublicKey()) {
		t.Errorf("peer = %s %s, want player-1 with the node key", r.peer.Playnode, ssh.FingerprintSHA256(r.peer.Key))
	}
	for _, k := range []ssh.Signer{bad, e.nodeKey} {
		if n := calls[ssh.FingerprintSHA256(k.PublicKey())]; n != 1 {
			t.Errorf("Authorize calls for %s: got %d, want 1", ssh.FingerprintSHA256(k.PublicKey()), n)
		}
	}
}

// closedAtClear is a relay-side connection that is closed just before the
// handshake's deadline is cleared: what happens when the node hangs up
// right after the handshake (a failover probe does) and x/crypto/ssh
// closes the connection at the end of data first.
type closedAtClear struct{ *net.TCPConn }

func (c closedAtClear) SetDeadline(t time.Time) error {
	if t.IsZero() {
		c.TCPConn.Close()
	}
	return c.TCPConn.SetDeadline(t)
}

// TestSSHPeerHangsUpAfterHandshake: a connection closed once the
// handshake succeeded is no handshake error; AcceptSSH returns the
// session, which ends. (The relay counts such a session as a probe, a
// failed handshake as a fault.)
func TestSSHPeerHangsUpAfterHandshake(t *testing.T) {
	e := newSSHEnv(t)
	go func() {
		conn, err := e.ln.Accept()
		if err != nil {
			e.accepted <- acceptResult{err: err}
			return
		}
		s, peer, err := mux.AcceptSSH(context.Background(), closedAtClear{conn.(*net.TCPConn)}, &e.server)
		e.accepted <- acceptResult{s, peer, conn, err}
	}()
	if _, err := e.dial(t, e.ln.Addr().String()); err != nil {
		t.Fatalf("DialSSH: %v", err)
	}
	r := e.result(t)
	if r.err != nil {
		t.Fatalf("AcceptSSH: %v, want the session", r.err)
	}
	select {
	case <-r.s.Done():
	case <-time.After(muxtest.Timeout):
		t.Fatal("the session of a closed connection did not end")
	}
}
