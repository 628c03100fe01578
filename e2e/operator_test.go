package e2e

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

const playnode = "kiosk-01"

// transports are what the operator's flows run over, each as a subtest.
var transports = []string{"ssh", "quic"}

// fleet is a relay with one playnode online exposing sshd (ssh) and an echo
// service (echo), all set up through the CLI.
type fleet struct {
	d           *deployment
	sshd        *sshd
	relay       *relayProc
	node        *proc
	key         string
	services    []string
	portaliases map[string]uint16 // from the relay's "playnode connected" line
}

// newFleet sets the fleet up with its node on transport.
func newFleet(t *testing.T, transport string) *fleet {
	t.Helper()
	f := &fleet{sshd: startSSHD(t), d: newDeployment(t)}
	// A killed peer is noticed over TCP by its kernel's reset, over QUIC
	// only by silence (2.25 keepalives): keep that to seconds.
	f.d.keepalive = "2s"
	f.services = []string{fmt.Sprintf("ssh=%d", f.sshd.port), fmt.Sprintf("echo=127.0.0.1:%d", startEcho(t))}
	f.key = f.d.addPlaynode(t, playnode)
	f.relay = f.d.serve(t, transport, "127.0.0.1:0")
	f.node = f.d.runNode(t, f.relay, playnode, f.key, f.services...)
	f.portaliases = f.waitOnline(t, f.relay, 1)
	for service, port := range f.portaliases {
		if int(port) < f.d.low || int(port) > f.d.high {
			t.Errorf("portalias of %s is %d, want one within --ports %s", service, port, f.d.ports)
		}
	}
	return f
}

// waitOnline waits for relay's n-th "playnode connected" line, for the echo
// service to answer through its portalias and for ls to show every service
// online, and returns the portaliases the line gave. The line must name
// the relay's transport. The relay logs the line
// just before it registers the session, and ls may show a killed relay's
// stale status for a moment, so the echo is what proves the session is up.
func (f *fleet) waitOnline(t *testing.T, relay *relayProc, n int) map[string]uint16 {
	t.Helper()
	e := relay.waitLog(t, n, "playnode connected", "playnode", playnode)
	if got := e.str("transport"); got != relay.transport {
		t.Fatalf("relay logs playnode connected over %q, want %q", got, relay.transport)
	}
	got := map[string]uint16{"ssh": e.port(t, "ssh"), "echo": e.port(t, "echo")}
	waitUntil(t, "echo through its portalias", func() bool { return tryEcho(got["echo"]) == nil })
	for _, service := range []string{"ssh", "echo"} {
		if row := f.d.waitLs(t, playnode, service, true); row.Portalias != got[service] {
			t.Fatalf("ls shows %s at portalias %d, want %d as the relay logged", service, row.Portalias, got[service])
		}
	}
	return got
}

// works checks both services through their portaliases.
func (f *fleet) works(t *testing.T) {
	t.Helper()
	f.sshd.hello(t, f.portaliases["ssh"])
	echoThrough(t, f.portaliases["echo"])
}

// TestOperatorFlow is the README's setup, step by step: fingerprint, keygen,
// authorize the .pub, serve, run the node, ls, and ssh through the portalias.
func TestOperatorFlow(t *testing.T) {
	t.Parallel()
	for _, transport := range transports {
		t.Run(transport, func(t *testing.T) {
			t.Parallel()
			f := newFleet(t, transport)
			rows := f.d.ls(t)
			if len(rows) != 2 {
				t.Fatalf("ls --json lists %+v, want the 2 services of %s", rows, playnode)
			}
			for _, row := range rows {
				if row.Playnode != playnode || !row.Online || row.Portalias != f.portaliases[row.Service] {
					t.Errorf("ls --json row %+v, want playnode %s online at portalias %d", row, playnode, f.portaliases[row.Service])
				}
			}
			text := mustRun(t, relayBin, "ls", "--data", f.d.data)
			if want := fmt.Sprint(f.portaliases["ssh"]); !strings.Contains(text, playnode) || !strings.Contains(text, want) {
				t.Errorf("ls printed\n%s\nwant a line for %s with portalias %s", text, playnode, want)
			}
			f.works(t)
			t.Run("bulk", func(t *testing.T) { bulkTransfer(t, f.sshd, f.portaliases["ssh"]) })
		})
	}
}

// bulkTransfer sends 16 MiB each way through ssh and the portalias and
// compares SHA-256 sums: the tunnel is byte-exact.
func bulkTransfer(t *testing.T, s *sshd, portalias uint16) {
	data := make([]byte, 16<<20)
	rand.Read(data)
	sum := sha256.Sum256(data)
	want := hex.EncodeToString(sum[:])
	file := filepath.Join(t.TempDir(), "payload")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}

	var up bytes.Buffer
	if err := s.ssh(t, portalias, bytes.NewReader(data), &up, "sha256sum"); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := strings.Cut(up.String(), " "); got != want {
		t.Errorf("upload: remote sha256sum printed %q, want %s", up.String(), want)
	}

	h := sha256.New()
	n := &countWriter{w: h}
	if err := s.ssh(t, portalias, nil, n, "cat "+file); err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want || n.n != int64(len(data)) {
		t.Errorf("download: got %d bytes with sha256 %s, want %d bytes with %s", n.n, got, len(data), want)
	}
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// TestRelayRestart stops the relay (gracefully and by SIGKILL), starts it
// again on the same data folder and port: the node reconnects by itself and
// keeps every portalias.
func TestRelayRestart(t *testing.T) {
	t.Parallel()
	for _, transport := range transports {
		t.Run(transport, func(t *testing.T) {
			t.Parallel()
			for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
				t.Run(sig.String(), func(t *testing.T) {
					t.Parallel()
					f := newFleet(t, transport)
					f.works(t)
					err := f.relay.stop(t, sig)
					if sig == syscall.SIGTERM && err != nil {
						t.Errorf("relay on SIGTERM: %v, want exit 0", err)
					}
					var exit *exec.ExitError
					if sig == syscall.SIGKILL && !errors.As(err, &exit) {
						t.Errorf("relay on SIGKILL: %v, want killed", err)
					}
					if rows := f.d.ls(t); len(rows) == 0 || rows[0].Online {
						t.Errorf("ls with the relay stopped: %+v, want every playnode offline", rows)
					}

					f.relay = f.d.serve(t, transport, f.relay.addr)
					before := f.portaliases
					f.portaliases = f.waitOnline(t, f.relay, 1)
					if !maps.Equal(f.portaliases, before) {
						t.Fatalf("portaliases after relay restart: %v, want %v", f.portaliases, before)
					}
					if f.node.exited() {
						t.Fatalf("node exited (%v), want it to reconnect by itself", f.node.err)
					}
					f.works(t)
				})
			}
		})
	}
}

// TestNodeRestart kills the node with SIGKILL and starts it again: its
// portaliases do not change.
func TestNodeRestart(t *testing.T) {
	t.Parallel()
	for _, transport := range transports {
		t.Run(transport, func(t *testing.T) {
			t.Parallel()
			f := newFleet(t, transport)
			f.works(t)
			f.node.stop(t, syscall.SIGKILL)
			f.relay.waitLog(t, 1, "playnode disconnected", "playnode", playnode)
			f.d.waitLs(t, playnode, "ssh", false)

			f.node = f.d.runNode(t, f.relay, playnode, f.key, f.services...)
			before := f.portaliases
			f.portaliases = f.waitOnline(t, f.relay, 2)
			if !maps.Equal(f.portaliases, before) {
				t.Fatalf("portaliases after node restart: %v, want %v", f.portaliases, before)
			}
			f.works(t)
		})
	}
}
