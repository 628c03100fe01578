package mux

import (
	"bytes"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
)

// TestQUICSocketBufferWarning checks the decision and its once-per-process
// rule with the sizes a capped kernel grants (this machine's limits may be
// high enough, or the test root, for a real socket to be capped).
func TestQUICSocketBufferWarning(t *testing.T) {
	t.Cleanup(func() { socketBufferWarning = sync.Once{} })
	for _, tc := range []struct {
		name     string
		rcv, snd int
		ok       bool
		want     int
	}{
		{"capped", 416 << 10, 416 << 10, true, 1},
		{"send capped only", quicSocketBuffer, 1 << 20, true, 1},
		{"granted", quicSocketBuffer, quicSocketBuffer, true, 0},
		{"not a socket", 0, 0, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			socketBufferWarning = sync.Once{}
			var out bytes.Buffer
			log := slog.New(slog.NewTextHandler(&out, nil))
			for range 3 {
				warnSmallBuffers(tc.rcv, tc.snd, tc.ok, log)
			}
			if got := strings.Count(out.String(), "udp socket buffers too small for quic"); got != tc.want {
				t.Fatalf("got %d warnings for 3 sockets, want %d:\n%s", got, tc.want, out.String())
			}
			if tc.want > 0 && !strings.Contains(out.String(), "net.core.rmem_max=7500000 net.core.wmem_max=7500000") {
				t.Errorf("warning does not name the sysctl to set:\n%s", out.String())
			}
		})
	}
}

// TestQUICSocketBuffersRaised checks that a real UDP socket gets asked for
// QUIC's buffers and that what the kernel granted is read back.
func TestQUICSocketBuffersRaised(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	rcv, snd, ok := setSocketBuffers(pc, quicSocketBuffer)
	if !ok {
		t.Skip("socket buffers cannot be inspected on this platform")
	}
	want := 1 // unprivileged: whatever net.core.rmem_max allows
	if os.Geteuid() == 0 {
		want = quicSocketBuffer // root lifts the sysctl cap (SO_RCVBUFFORCE)
	}
	if rcv < want || snd < want {
		t.Errorf("granted receive %d, send %d bytes; want at least %d", rcv, snd, want)
	}
	t.Logf("granted receive %d KiB, send %d KiB", rcv>>10, snd>>10)
}
