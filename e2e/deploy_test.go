package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"paradigm/internal/testenv"
)

// deployment is one relay data folder set up with the CLI, as an operator
// does: fingerprint first, then a key per playnode, each authorized.
type deployment struct {
	dir         string // scratch space: node keys, locks, config files
	data        string // the relay's --data
	fingerprint string
	ports       string // the relay's --ports window
	low, high   int
	keepalive   string   // --keepalive of relay and nodes; the default when empty
	serveArgs   []string // more flags of the relay's serve
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
	addr      string // the resolved listen address, from its log
	transport string // what nodes dial it with: "ssh", or "quic" at the same port number
}

// serve starts the relay on listen (127.0.0.1:0 for any port) for nodes on
// transport and waits until it logs its listen address. For "quic" it also
// serves QUIC on the UDP port of the same number, as deployed.
func (d *deployment) serve(t *testing.T, transport, listen string) *relayProc {
	t.Helper()
	if transport != "quic" {
		return d.serveOn(t, transport, listen, "")
	}
	if listen != "127.0.0.1:0" {
		return d.serveOn(t, transport, listen, listen)
	}
	// A free TCP port, then both bound at its number; rarely another
	// program takes one in between, and then another port is tried.
	for range 5 {
		addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
		if r := d.serveOn(t, transport, addr, addr); r != nil {
			return r
		}
	}
	t.Fatal("relay found no port number free on both TCP and UDP in 5 tries")
	return nil
}

// serveOn starts the relay and waits until it logs its listen address. It
// returns nil if the relay exits because quicListen is in use.
func (d *deployment) serveOn(t *testing.T, transport, listen, quicListen string) *relayProc {
	t.Helper()
	args := []string{"--log-format", "json", "serve", "--data", d.data,
		"--listen", listen, "--ports", d.ports, "--reload-interval", "100ms", "--admin", "127.0.0.1:0"}
	if quicListen != "" {
		args = append(args, "--quic-listen", quicListen)
	}
	if d.keepalive != "" {
		args = append(args, "--keepalive", d.keepalive)
	}
	args = append(args, d.serveArgs...)
	p := start(t, "relay", relayBin, args...)
	var e logEntry
	waitUntil(t, "relay to log \"relay listening\"", func() bool {
		if found := p.matching("relay listening"); len(found) > 0 {
			e = found[0]
			return true
		}
		if p.exited() {
			if quicListen != "" && strings.Contains(p.stderr.String(), "address already in use") {
				return true
			}
			t.Fatalf("relay exited (%v) before logging \"relay listening\"", p.err)
		}
		return false
	})
	if e == nil {
		return nil
	}
	r := &relayProc{proc: p, addr: e.str("addr"), transport: transport}
	if fp := e.str("fingerprint"); fp != d.fingerprint {
		t.Fatalf("relay logs fingerprint %q, want %q as `fingerprint` printed", fp, d.fingerprint)
	}
	if quicListen != "" && e.str("quic_addr") != r.addr {
		t.Fatalf("relay logs quic_addr %q, want %q, the same as its TCP address", e.str("quic_addr"), r.addr)
	}
	return r
}

// nodeArgs are the flags of `paradigm-node run` for playnode name, dialling
// r with r's transport.
func (d *deployment) nodeArgs(r *relayProc, name, key string, services ...string) []string {
	args := []string{"--log-format", "json", "run", "--relay", r.addr, "--fingerprint", d.fingerprint,
		"--key", key, "--name", name, "--lock", filepath.Join(d.dir, name+".lock"), "--backoff-max", "1s", "--refused-retry", "1s"}
	if r.transport != "" {
		args = append(args, "--transport", r.transport)
	}
	if d.keepalive != "" {
		args = append(args, "--keepalive", d.keepalive)
	}
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
	Playnode  string    `json:"playnode"`
	Service   string    `json:"service"`
	Portalias uint16    `json:"portalias"`
	Online    bool      `json:"online"`
	State     string    `json:"state"`
	LastSeen  time.Time `json:"last_seen"`
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
	addr := testenv.Serve(t, waitTimeout, func(c *net.TCPConn) { io.Copy(c, c) })
	_, port, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(port)
	return n
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
