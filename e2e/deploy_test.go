package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// deployment is one relay data folder set up with the CLI, as an operator
// does: fingerprint first, then a key per playnode, each authorized.
type deployment struct {
	dir         string // scratch space: node keys, locks, config files
	data        string // the relay's --data
	fingerprint string
	ports       string // the relay's --ports window
	low, high   int
}

func newDeployment(t *testing.T) *deployment {
	t.Helper()
	dir := t.TempDir()
	d := &deployment{dir: dir, data: filepath.Join(dir, "relay")}
	d.low, d.high = portWindow(20)
	d.ports = fmt.Sprintf("%d-%d", d.low, d.high)
	d.fingerprint = strings.TrimSpace(mustRun(t, relayBin, "fingerprint", "--data", d.data))
	if !strings.HasPrefix(d.fingerprint, "SHA256:") {
		t.Fatalf("fingerprint printed %q, want SHA256:...", d.fingerprint)
	}
	return d
}

// keygen creates a playnode key with paradigm-node keygen and returns its path.
func (d *deployment) keygen(t *testing.T, name string) string {
	t.Helper()
	key := filepath.Join(d.dir, name+".key")
	out := mustRun(t, nodeBin, "keygen", "--key", key)
	if !strings.HasPrefix(out, "ssh-ed25519 ") {
		t.Fatalf("keygen printed %q, want an ssh-ed25519 public key line", out)
	}
	return key
}

// authorize binds the key's .pub file to name.
func (d *deployment) authorize(t *testing.T, name, key string) {
	t.Helper()
	out := mustRun(t, relayBin, "authorize", "--data", d.data, name, key+".pub")
	if !strings.Contains(out, "authorized playnode "+name) {
		t.Fatalf("authorize printed %q, want it to confirm playnode %s", out, name)
	}
}

// addPlaynode is keygen plus authorize.
func (d *deployment) addPlaynode(t *testing.T, name string) string {
	t.Helper()
	key := d.keygen(t, name)
	d.authorize(t, name, key)
	return key
}

// relayProc is a running `paradigm-relay serve`.
type relayProc struct {
	*proc
	addr string // the resolved listen address, from its log
}

// serve starts the relay on listen (127.0.0.1:0 for any port) and waits until
// it logs its listen address.
func (d *deployment) serve(t *testing.T, listen string) *relayProc {
	t.Helper()
	p := start(t, "relay", relayBin, "--log-format", "json", "serve", "--data", d.data,
		"--listen", listen, "--ports", d.ports, "--reload-interval", "100ms")
	e := p.waitLog(t, 1, "relay listening")
	r := &relayProc{proc: p, addr: e.str("addr")}
	if fp := e.str("fingerprint"); fp != d.fingerprint {
		t.Fatalf("relay logs fingerprint %q, want %q as `fingerprint` printed", fp, d.fingerprint)
	}
	return r
}

// nodeArgs are the flags of `paradigm-node run` for playnode name.
func (d *deployment) nodeArgs(r *relayProc, name, key string, services ...string) []string {
	args := []string{"--log-format", "json", "run", "--relay", r.addr, "--fingerprint", d.fingerprint,
		"--key", key, "--name", name, "--lock", filepath.Join(d.dir, name+".lock"), "--backoff-max", "1s"}
	for _, s := range services {
		args = append(args, "--service", s)
	}
	return args
}

// runNode starts `paradigm-node run` for playnode name.
func (d *deployment) runNode(t *testing.T, r *relayProc, name, key string, services ...string) *proc {
	t.Helper()
	return start(t, "node "+name, nodeBin, d.nodeArgs(r, name, key, services...)...)
}

// lsRow is one element of `paradigm-relay ls --json`.
type lsRow struct {
	Playnode  string `json:"playnode"`
	Service   string `json:"service"`
	Portalias uint16 `json:"portalias"`
	Online    bool   `json:"online"`
}

func (d *deployment) ls(t *testing.T) []lsRow {
	t.Helper()
	out := mustRun(t, relayBin, "ls", "--data", d.data, "--json")
	var rows []lsRow
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("ls --json printed %q: %v", out, err)
	}
	return rows
}

// waitLs waits until ls shows playnode's service with the given online
// state, and returns its row.
func (d *deployment) waitLs(t *testing.T, playnode, service string, online bool) lsRow {
	t.Helper()
	var got lsRow
	waitUntil(t, fmt.Sprintf("ls to show %s %s online=%v", playnode, service, online), func() bool {
		for _, row := range d.ls(t) {
			if row.Playnode == playnode && row.Service == service && row.Online == online {
				got = row
				return true
			}
		}
		return false
	})
	return got
}

// startEcho runs a TCP echo service on loopback, a playnode service that
// needs no OpenSSH, and returns its port.
func startEcho(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(waitTimeout))
				io.Copy(c, c)
			})
		}
	})
	return ln.Addr().(*net.TCPAddr).Port
}

// echoThrough sends a line to an echo service through its portalias and
// checks it comes back.
func echoThrough(t *testing.T, portalias uint16) {
	t.Helper()
	if err := tryEcho(portalias); err != nil {
		t.Fatalf("echo through portalias %d: %v", portalias, err)
	}
}

func tryEcho(portalias uint16) error {
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", portalias), 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	const msg = "ping through paradigm\n"
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return err
	}
	got, err := io.ReadAll(c)
	if err != nil {
		return err
	}
	if string(got) != msg {
		return fmt.Errorf("got %q, want %q", got, msg)
	}
	return nil
}
