package mux_test

import (
	"errors"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"paradigm/internal/mux"
	"paradigm/internal/mux/muxtest"
)

// TestQUICRelayRestartResets kills a relay (its socket closes without a
// CONNECTION_CLOSE, as when the process is killed) and starts a new one with
// the same host key on the same port, while a node's session is idle. The
// node's session must end from the new relay's stateless reset, not from
// its idle timeout: idle keepalive PINGs are too short to draw a reset from
// quic-go, so this needs the node's reset probes.
func TestQUICRelayRestartResets(t *testing.T) {
	e := newQUICEnv(t, func(e *quicEnv) {
		e.server.Keepalive = time.Hour // the relay never pings first
		e.client.Keepalive = 2 * time.Second
	})
	// lossyConn (never lossy here) hides *net.UDPConn, and with it the
	// don't-fragment bit that quic-go's path MTU discovery needs: its
	// padded probes right after the handshake would draw a reset by
	// themselves. Idle, the node sends only PINGs and acknowledgements.
	client, _ := e.pair(t, &lossyConn{c: listenUDP(t, "127.0.0.1:0")}, nil)

	addr := e.ln.Addr().String()
	mux.CrashQUICListener(e.ln)
	ln, err := mux.ListenQUIC(listenUDP(t, addr), &e.server)
	if err != nil {
		t.Fatalf("restart the relay on %s: %v", addr, err)
	}
	t.Cleanup(func() { ln.Close() })

	muxtest.WaitDone(t, client)
	var reset *quic.StatelessResetError
	if !errors.As(client.Err(), &reset) || errors.Is(client.Err(), mux.ErrKeepaliveTimeout) {
		t.Fatalf("node session ended with %v, want the restarted relay's stateless reset", client.Err())
	}
	select {
	case <-client.Context().Done():
	case <-time.After(muxtest.Timeout):
		t.Fatal("node session's Context not cancelled after its end")
	}

	// The node reconnects to the restarted relay.
	e.ln = ln
	e.pair(t, nil, nil)
}
