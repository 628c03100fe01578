package e2e

import (
	"errors"
	"io"
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"

	"paradigm/internal/testenv"
)

// killChunk and killTransfer size the transfers cut by a kill: 64 MiB, far
// more than the kill leaves time for, and the reader waits for killAfter
// bytes so that the transfer is under way when the kill lands.
const (
	killChunk    = 64 << 10
	killTransfer = 1024 // chunks
	killAfter    = 1 << 20
)

// TestKillResets kills the relay, then the node, with SIGKILL in the middle
// of a transfer through a portalias. The kernel closes a dead process's
// sockets, with a FIN unless told otherwise, and a FIN would make a
// truncated download look complete. The client on the server side must
// read a reset when the relay dies, and the service on the device side must
// read a reset when the node dies.
func TestKillResets(t *testing.T) {
	t.Parallel()
	for _, transport := range transports {
		t.Run(transport, func(t *testing.T) {
			t.Parallel()
			t.Run("relay", func(t *testing.T) {
				t.Parallel()
				k := newKillFleet(t, transport)
				c := dialPortalias(t, k.portaliases["bulk"])
				readUnderWay(t, c)
				k.relay.stop(t, syscall.SIGKILL)
				n, err := io.Copy(io.Discard, c)
				if !errors.Is(err, syscall.ECONNRESET) {
					t.Errorf("client read %d more bytes after the relay was killed, then err %v; want ECONNRESET, never a clean EOF", n, err)
				}
			})
			t.Run("node", func(t *testing.T) {
				t.Parallel()
				k := newKillFleet(t, transport)
				c := dialPortalias(t, k.portaliases["sink"])
				wrote := make(chan struct{})
				go func() {
					defer close(wrote)
					writeBulk(c)
				}()
				t.Cleanup(func() { c.Close(); <-wrote })
				var got sinkResult
				select {
				case got = <-k.sunk:
				case <-time.After(waitTimeout):
					t.Fatalf("the sink service read nothing through its portalias within %v", waitTimeout)
				}
				if got.err != nil {
					t.Fatalf("the sink service failed before the kill: %v", got.err)
				}
				k.node.stop(t, syscall.SIGKILL)
				select {
				case got = <-k.sunk:
				case <-time.After(waitTimeout):
					t.Fatalf("the sink service's read did not end within %v of the node's death", waitTimeout)
				}
				if !errors.Is(got.err, syscall.ECONNRESET) {
					t.Errorf("the sink service read %d bytes in all, then err %v after the node was killed; want ECONNRESET, never a clean EOF", got.n, got.err)
				}
			})
		})
	}
}

// killFleet is a relay and one playnode with two services: bulk sends
// killTransfer chunks to whoever connects, sink reads whatever arrives and
// reports how its read ended.
type killFleet struct {
	relay       *relayProc
	node        *proc
	portaliases map[string]uint16
	sunk        chan sinkResult // sink: once killAfter bytes arrived, then at the end
}

type sinkResult struct {
	n   int64
	err error
}

func newKillFleet(t *testing.T, transport string) *killFleet {
	t.Helper()
	k := &killFleet{sunk: make(chan sinkResult, 2)}
	d := newDeployment(t)
	// A killed peer is noticed over QUIC only by silence: keep it short.
	d.keepalive = "2s"
	bulk := testenv.Serve(t, waitTimeout, func(c *net.TCPConn) { writeBulk(c) })
	sink := testenv.Serve(t, waitTimeout, func(c *net.TCPConn) {
		n, err := io.CopyN(io.Discard, c, killAfter)
		k.sunk <- sinkResult{n, err}
		if err != nil {
			return
		}
		m, err := io.Copy(io.Discard, c)
		k.sunk <- sinkResult{n + m, err}
	})
	key := d.addPlaynode(t, playnode)
	k.relay = d.serve(t, transport, "127.0.0.1:0")
	k.node = d.runNode(t, k.relay, playnode, key, "bulk="+portOf(bulk), "sink="+portOf(sink))
	e := k.relay.waitLog(t, 1, "playnode connected", "playnode", playnode)
	k.portaliases = map[string]uint16{"bulk": e.port(t, "bulk"), "sink": e.port(t, "sink")}
	return k
}

func portOf(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return port
}

// writeBulk writes killTransfer chunks to c, stopping at the first error.
func writeBulk(c net.Conn) {
	chunk := make([]byte, killChunk)
	for range killTransfer {
		if _, err := c.Write(chunk); err != nil {
			return
		}
	}
}

func dialPortalias(t *testing.T, portalias uint16) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(portalias))), 5*time.Second)
	if err != nil {
		t.Fatalf("dial portalias %d: %v", portalias, err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(waitTimeout))
	return c.(*net.TCPConn)
}

// readUnderWay reads killAfter bytes from c: the transfer is under way.
func readUnderWay(t *testing.T, c net.Conn) {
	t.Helper()
	if n, err := io.CopyN(io.Discard, c, killAfter); err != nil {
		t.Fatalf("download through the portalias: %v after %d bytes, want %d", err, n, killAfter)
	}
}
