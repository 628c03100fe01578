package e2e

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// TestNodeMaxStreams runs a node with --max-streams 1 (and a --max-buffer
// to match): while one connection is served, a second one through the
// portalias is refused, its client closed without a byte; once the first
// ends, connections are served again.
func TestNodeMaxStreams(t *testing.T) {
	t.Parallel()
	d := newDeployment(t)
	key := d.addPlaynode(t, playnode)
	r := d.serve(t, "ssh", "127.0.0.1:0")
	args := append(d.nodeArgs(r, playnode, key, fmt.Sprintf("echo=%d", startEcho(t))), "--max-streams", "1", "--max-buffer", "1MiB")
	start(t, "node", nodeBin, args...)
	echo := r.waitLog(t, 1, "playnode connected", "playnode", playnode).port(t, "echo")
	waitUntil(t, "echo through its portalias", func() bool { return tryEcho(echo) == nil })

	first := dialPortalias(t, echo)
	if _, err := first.Write([]byte("a")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(first, make([]byte, 1)); err != nil {
		t.Fatalf("first connection: %v, want its echo", err)
	}
	// The relay may accept, forward, hear the refusal and reset the second
	// connection before the dialer's connect has returned: on a busy
	// machine the dial itself then reports the reset, which is the same
	// refusal without a byte.
	second, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(echo))), 5*time.Second)
	switch {
	case errors.Is(err, syscall.ECONNRESET):
	case err != nil:
		t.Fatalf("dial portalias %d: %v", echo, err)
	default:
		defer second.Close()
		second.SetDeadline(time.Now().Add(waitTimeout))
		second.Write([]byte("b"))
		if n, err := io.Copy(io.Discard, second); n != 0 {
			t.Errorf("second connection beyond --max-streams 1: got %d bytes (err %v), want it closed without a byte", n, err)
		}
	}
	first.Close()
	waitUntil(t, "echo once the first connection ended", func() bool { return tryEcho(echo) == nil })
}
