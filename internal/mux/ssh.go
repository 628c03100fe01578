package mux

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/cpu"
)

// ChannelType is the SSH channel type yamux runs in: the node opens the
// first, the relay may open more (lanes, sshsession.go).
const ChannelType = "paradigm-mux@v1"

const (
	sshVersion              = "SSH-2.0-paradigm"
	defaultHandshakeTimeout = DefaultHandshakeTimeout
	requestKeepalive        = "keepalive@openssh.com"
)

// preferredCiphers puts AES-GCM first where the CPU accelerates AES and
// GHASH, ChaCha20-Poly1305 first elsewhere (many ARM players lack the
// crypto extensions, where chacha is several times faster). The client's
// order decides, so the node's CPU picks; both ends offer both.
func preferredCiphers() []string {
	aes := cpu.X86.HasAES && cpu.X86.HasPCLMULQDQ || cpu.ARM64.HasAES && cpu.ARM64.HasPMULL
	return cipherOrder(aes)
}

func cipherOrder(aesHardware bool) []string {
	if aesHardware {
		return []string{ssh.CipherAES128GCM, ssh.CipherChaCha20Poly1305, ssh.CipherAES256GCM}
	}
	return []string{ssh.CipherChaCha20Poly1305, ssh.CipherAES128GCM, ssh.CipherAES256GCM}
}

// handshakeDeadline puts conn under the handshake deadline (or ctx's, if
// earlier) and makes ctx cancellation expire it. done clears the deadline
// and reports ctx's error if ctx was cancelled meanwhile. A connection
// closed meanwhile is no error of the handshake, which succeeded: the peer
// hung up right after it (a failover probe does), x/crypto/ssh closed the
// connection at the end of data, and the session made next sees that end
// (counted as a probe, not a failed handshake: TestProbeCounted).
func handshakeDeadline(ctx context.Context, conn net.Conn, timeout time.Duration) (done func() error) {
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	return func() error {
		if !stop() && ctx.Err() != nil {
			return ctx.Err()
		}
		if err := conn.SetDeadline(time.Time{}); !errors.Is(err, net.ErrClosed) {
			return err
		}
		return nil
	}
}

// tuneTCP turns on kernel keepalives as a second line behind the liveness
// watchdog (they also keep NAT state fresh when no data flows) and starts
// the pacer on the socket (sshpace.go). TCP_NODELAY is Go's default and
// stays on.
func tuneTCP(conn net.Conn, interval time.Duration) *pacer {
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: interval, Interval: interval, Count: 3})
	}
	if ps, ok := conn.(pacedSocket); ok {
		return newPacer(ps.setNotSentLowat, ps.queueInfo)
	}
	return newPacer(notSentLowat(conn), tcpQueue(conn))
}

// channelConn is the byte stream yamux runs on. Close closes the whole SSH
// connection (and so the TCP connection), not just the channel: yamux's
// death must end the transport, and closing the connection also unblocks a
// channel Write waiting for window. Writes join each yamux data frame's
// header with its body (frameWriter). onClose runs first, to record which
// lane ended the session.
type channelConn struct {
	ssh.Channel
	conn    ssh.Conn
	w       frameWriter
	carried *atomic.Int64 // the lane's byte count, both ways
	onClose func()
	gate    *peerStreamGate // relay lanes: the streams the node opens (sshgate.go)
}

func newChannelConn(ch ssh.Channel, conn ssh.Conn, pace *pacer, carried *atomic.Int64, onClose func()) *channelConn {
	return &channelConn{Channel: ch, conn: conn, w: frameWriter{ch: ch, pace: pace}, carried: carried, onClose: onClose}
}

func (c *channelConn) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.carried.Add(int64(n))
	return n, err
}

func (c *channelConn) Read(b []byte) (int, error) {
	n, err := c.Channel.Read(b)
	c.carried.Add(int64(n))
	if c.gate != nil {
		if gerr := c.gate.scan(b[:n]); gerr != nil {
			return 0, gerr
		}
	}
	return n, err
}

func (c *channelConn) Close() error {
	c.onClose()
	return c.conn.Close()
}

func (c *channelConn) LocalAddr() net.Addr  { return c.conn.LocalAddr() }
func (c *channelConn) RemoteAddr() net.Addr { return c.conn.RemoteAddr() }

// serveConn answers, in one goroutine for the life of the connection,
// everything outside the mux channels' data: global requests (keepalives
// answered, the rest refused), requests on the first mux channel (refused)
// and channels the peer opens (newChannel accepts or rejects them).
func serveConn(reqs <-chan *ssh.Request, chans <-chan ssh.NewChannel, chReqs <-chan *ssh.Request, newChannel func(ssh.NewChannel)) {
	for reqs != nil || chans != nil || chReqs != nil {
		select {
		case req, ok := <-reqs:
			if !ok {
				reqs = nil
				continue
			}
			if req.WantReply {
				req.Reply(req.Type == requestKeepalive, nil)
			}
		case req, ok := <-chReqs:
			if !ok {
				chReqs = nil
				continue
			}
			if req.WantReply {
				req.Reply(false, nil)
			}
		case nc, ok := <-chans:
			if !ok {
				chans = nil
				continue
			}
			newChannel(nc)
		}
	}
}
