package e2e

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// TestSingleInstance: the legacy deployment starts the node from cron every
// minute, so a second run with the same --lock must exit 0 at once, silent
// (cron appends whatever it prints to a log every minute) unless --verbose.
func TestSingleInstance(t *testing.T) {
	t.Parallel()
	d := newDeployment(t)
	key := d.addPlaynode(t, playnode)
	r := d.serve(t, "ssh", "127.0.0.1:0")
	service := fmt.Sprintf("echo=%d", startEcho(t))
	first := d.runNode(t, r, playnode, key, service)
	first.waitLog(t, 1, "node starting") // logged once the lock is held

	res := run(t, nodeBin, d.nodeArgs(r, playnode, key, service)...)
	if res.code != 0 || res.stdout != "" || res.stderr != "" {
		t.Errorf("second node run: exit %d, stdout %q, stderr %q; want exit 0 and nothing printed", res.code, res.stdout, res.stderr)
	}
	res = run(t, nodeBin, append(d.nodeArgs(r, playnode, key, service), "--verbose")...)
	second := &proc{name: "second node"}
	second.stderr.Write([]byte(res.stderr))
	if res.code != 0 || second.count("instance already running") != 1 {
		t.Errorf("second node run --verbose: exit %d, stderr %q; want exit 0 and one \"instance already running\" line", res.code, res.stderr)
	} else if e := second.matching("instance already running")[0]; !strings.Contains(e.str("err"), fmt.Sprintf("(pid %d)", first.cmd.Process.Pid)) {
		t.Errorf("second node run --verbose logs %v, want it to name the first node's pid %d", e, first.cmd.Process.Pid)
	}
	r.waitLog(t, 1, "playnode connected", "playnode", playnode)
	if first.exited() {
		t.Fatalf("first node exited (%v), want it to keep running", first.err)
	}
	if n := r.count("playnode connected"); n != 1 {
		t.Errorf("relay logged %d connections, want 1", n)
	}
}

// TestNodeGlobalFlags: --log-format works after the command as before it, "node starting" names the node's own key key_fingerprint
// (the config's fingerprint is the relay's), and --version describes the
// build.
func TestNodeGlobalFlags(t *testing.T) {
	t.Parallel()
	d := newDeployment(t)
	r := d.serve(t, "ssh", "127.0.0.1:0")
	for i, order := range [][]string{
		{"--log-format", "json", "run"},
		{"run", "--log-format", "json"},
	} {
		name := fmt.Sprintf("flags-%d", i)
		key := d.addPlaynode(t, name)
		args := append(slices.Clone(order), "--relay", r.addr, "--fingerprint", d.fingerprint, "--key", key, "--name", name,
			"--lock", filepath.Join(d.dir, name+".lock"), "--service", "echo=1")
		p := start(t, "node "+name, nodeBin, args...)
		e := p.waitLog(t, 1, "node starting") // only parses if the log is JSON
		if got, want := e.str("key_fingerprint"), publicFingerprint(t, key); got != want {
			t.Errorf("%q: node starting has key_fingerprint %q, want the node key's %q", order, got, want)
		}
		if fp, ok := e["fingerprint"]; ok {
			t.Errorf("%q: node starting has fingerprint=%v, want only key_fingerprint", order, fp)
		}
		if e.str("level") != "INFO" {
			t.Errorf("%q: got %v, want a JSON INFO line", order, e)
		}
		r.waitLog(t, 1, "playnode connected", "playnode", name)
	}

	out := mustRun(t, nodeBin, "--version")
	if !strings.HasPrefix(out, "paradigm-node version ") || !strings.Contains(out, "commit ") || !strings.Contains(out, runtime.Version()) {
		t.Errorf("paradigm-node --version printed %q, want the version, commit and %s", out, runtime.Version())
	}
}

// publicFingerprint is the SHA256 fingerprint of key.pub.
func publicFingerprint(t *testing.T, key string) string {
	t.Helper()
	pub, err := os.ReadFile(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	parsed, _, _, _, err := ssh.ParseAuthorizedKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return ssh.FingerprintSHA256(parsed)
}

func TestDemo(t *testing.T) {
	t.Parallel()
	low, high := portWindow(20)
	out := mustRun(t, relayBin, "demo", "--once", "--ports", fmt.Sprintf("%d-%d", low, high))
	if !strings.Contains(out, "hello from playnode") {
		t.Errorf("demo --once printed %q, want a line containing \"hello from playnode\"", out)
	}
}

func TestMalformedPortaliases(t *testing.T) {
	t.Parallel()
	d := newDeployment(t)
	text := "# hand edited\nkiosk-01 ssh 2201\nkiosk-01 web not-a-port\n"
	if err := os.WriteFile(filepath.Join(d.data, "portaliases"), []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	res := run(t, relayBin, "serve", "--data", d.data, "--listen", "127.0.0.1:0", "--ports", d.ports)
	if res.code == 0 || !strings.Contains(res.stderr, "portaliases:3") {
		t.Errorf("serve with a bad portaliases line 3: exit %d, stderr %q; want non-zero naming portaliases:3", res.code, res.stderr)
	}
}

func TestAuthorizeGarbage(t *testing.T) {
	t.Parallel()
	d := newDeployment(t)
	for _, tc := range []struct{ key, want string }{
		{"ssh-ed25519 AAAAnotbase64!!", "parse public key"},
		{"garbage", "neither a key line nor a readable file"},
		{"ssh-ed25519", "parse public key"},
	} {
		res := run(t, relayBin, "authorize", "--data", d.data, playnode, tc.key)
		if res.code == 0 || !strings.Contains(res.stderr, tc.want) {
			t.Errorf("authorize %q: exit %d, stderr %q; want non-zero with %q", tc.key, res.code, res.stderr, tc.want)
		}
	}
	if rows := d.ls(t); len(rows) != 0 {
		t.Errorf("ls after failed authorizations: %+v, want nothing", rows)
	}
}

// TestUnknownKey: a node whose key was never authorized stays offline and
// the relay logs the key's fingerprint so the operator can authorize it.
func TestUnknownKey(t *testing.T) {
	t.Parallel()
	d := newDeployment(t)
	d.addPlaynode(t, playnode)
	key := d.keygen(t, "intruder")
	pub, err := os.ReadFile(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	parsed, _, _, _, err := ssh.ParseAuthorizedKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	fp := ssh.FingerprintSHA256(parsed)
	r := d.serve(t, "ssh", "127.0.0.1:0")
	n := d.runNode(t, r, "intruder", key, fmt.Sprintf("echo=%d", startEcho(t)))

	n.waitLog(t, 2, "disconnected from relay") // refused, retried, refused
	// The relay names the key once; repeats from the same address are
	// rate-limited into a summary.
	r.waitLog(t, 1, "unknown node key refused", "fingerprint", fp)
	if !strings.Contains(r.stderr.String(), fp) {
		t.Errorf("relay stderr lacks the unknown key's fingerprint %s", fp)
	}
	if got := r.count("playnode connected"); got != 0 {
		t.Errorf("relay logged %d connections, want none", got)
	}
	for _, row := range d.ls(t) {
		if row.Playnode == "intruder" {
			t.Errorf("ls lists %+v, want no row for an unauthorized node", row)
		}
	}
	if n.exited() {
		t.Errorf("refused node exited (%v), want it to keep retrying", n.err)
	}
}

func TestSecondServe(t *testing.T) {
	t.Parallel()
	d := newDeployment(t)
	d.serve(t, "ssh", "127.0.0.1:0")
	res := run(t, relayBin, "serve", "--data", d.data, "--listen", "127.0.0.1:0", "--ports", d.ports)
	if res.code == 0 || !strings.Contains(res.stderr, "lock") {
		t.Errorf("second serve on %s: exit %d, stderr %q; want non-zero mentioning the lock", d.data, res.code, res.stderr)
	}
}

// TestAliasSet moves the ssh portalias of a running relay: the new port
// serves ssh, the old one is closed.
func TestAliasSet(t *testing.T) {
	t.Parallel()
	f := newFleet(t, "ssh")
	old := f.portaliases["ssh"]
	moved := freePortIn(t, f.d.low, f.d.high, f.portaliases)
	out := mustRun(t, relayBin, "alias", "set", "--data", f.d.data, playnode, "ssh", fmt.Sprint(moved))
	if want := fmt.Sprintf("-> portalias %d", moved); !strings.Contains(out, want) {
		t.Errorf("alias set printed %q, want %q", out, want)
	}
	// The node logs the update the relay sends after rebinding.
	waitUntil(t, fmt.Sprintf("node to be told ssh moved to %d", moved), func() bool {
		for _, e := range f.node.matching("portaliases updated") {
			if e["ssh"] == float64(moved) {
				return true
			}
		}
		return false
	})
	f.sshd.hello(t, moved)
	if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", old), 5*time.Second); err == nil {
		c.Close()
		t.Errorf("old portalias %d still accepts connections", old)
	}
	if row := f.d.waitLs(t, playnode, "ssh", true); row.Portalias != moved {
		t.Errorf("ls shows ssh at %d, want %d", row.Portalias, moved)
	}
}

// freePortIn returns a port of low-high that no portalias uses and nothing
// listens on.
func freePortIn(t *testing.T, low, high int, used map[string]uint16) uint16 {
	t.Helper()
next:
	for p := low; p <= high; p++ {
		for _, u := range used {
			if int(u) == p {
				continue next
			}
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err == nil {
			ln.Close()
			return uint16(p)
		}
	}
	t.Fatalf("no free port in %d-%d", low, high)
	return 0
}

// TestNodeConfigFile runs the node from a config file alone, and checks a
// file with an unknown key is refused naming file:line.
func TestNodeConfigFile(t *testing.T) {
	t.Parallel()
	d := newDeployment(t)
	const name = "kiosk-conf"
	key := d.addPlaynode(t, name)
	r := d.serve(t, "ssh", "127.0.0.1:0")
	echo := startEcho(t)
	config := filepath.Join(d.dir, "node.conf")
	text := fmt.Sprintf(`# paradigm-node settings
relay = %s
fingerprint = %s
key = %s
name = %s
service = echo=%d   # the test's echo server
service = "again=127.0.0.1:%d"  # quoted, commented
lock = %s
backoff-max = 1s
keepalive = 10s # the default
log-format = json # global flags are keys too
`, r.addr, d.fingerprint, key, name, echo, echo, filepath.Join(d.dir, "conf.lock"))
	if err := os.WriteFile(config, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	n := start(t, "node "+name, nodeBin, "run", "--config", config)
	n.waitLog(t, 1, "node starting") // JSON, as the file says
	e := r.waitLog(t, 1, "playnode connected", "playnode", name)
	for _, service := range []string{"echo", "again"} {
		port := e.port(t, service)
		waitUntil(t, "echo through portalias of "+service, func() bool { return tryEcho(port) == nil })
	}

	bad := filepath.Join(d.dir, "bad.conf")
	text = fmt.Sprintf("relay = %s\n\nrelay-port = 4422\nkey = %s\n", r.addr, key)
	if err := os.WriteFile(bad, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	res := run(t, nodeBin, "run", "--config", bad)
	if want := bad + ":3"; res.code == 0 || !strings.Contains(res.stderr, want) || !strings.Contains(res.stderr, "relay-port") {
		t.Errorf("node run with unknown key at line 3: exit %d, stderr %q; want non-zero naming %s and the key", res.code, res.stderr, want)
	}

	for _, tc := range []struct{ text, want string }{
		{"relay = %s\nkey = %s\n# again\nkey = /nokey\n", ":4: key given twice, first on line 2"},
		{"relay = %s\nkey = %s\nkeepalive = 10  # seconds\n", `:3: keepalive: "10" is not a duration, write 10s`},
		{"relay = %s\nkey = %s\ntrust-on-first-use = yes\n", `:3: trust-on-first-use: "yes" is not a boolean, write true or false`},
	} {
		if err := os.WriteFile(bad, []byte(fmt.Sprintf(tc.text, r.addr, key)), 0o600); err != nil {
			t.Fatal(err)
		}
		res := run(t, nodeBin, "run", "--config", bad)
		if res.code == 0 || !strings.Contains(res.stderr, bad+tc.want) {
			t.Errorf("node run with %q: exit %d, stderr %q; want non-zero with %q", tc.text, res.code, res.stderr, bad+tc.want)
		}
	}
}

// TestProcs checks --procs: the node runs Go on one CPU unless told
// otherwise (flag over environment over default), the relay takes the flag,
// and a negative count is refused with the flag's name.
func TestProcs(t *testing.T) {
	t.Parallel()
	d := newDeployment(t)
	r := d.serve(t, "ssh", "127.0.0.1:0")
	var env []string // this test's environment without GOMAXPROCS
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GOMAXPROCS=") {
			env = append(env, kv)
		}
	}
	for i, tc := range []struct {
		env   string
		flags []string
		want  int
	}{
		{want: 1},
		{env: "GOMAXPROCS=2", want: 2},
		{env: "GOMAXPROCS=3", flags: []string{"--procs", "2"}, want: 2},
		{flags: []string{"--procs", "0"}, want: runtime.GOMAXPROCS(0)},
	} {
		name := fmt.Sprintf("procs-%d", i)
		key := d.addPlaynode(t, name)
		args := append(d.nodeArgs(r, name, key, "echo=1"), tc.flags...)
		penv := env
		if tc.env != "" {
			penv = append(slices.Clip(env), tc.env)
		}
		if tc.want == runtime.GOMAXPROCS(0) && os.Getenv("GOMAXPROCS") != "" {
			continue // this test's own count is not Go's default then
		}
		p := startEnv(t, "node "+name, penv, nodeBin, args...)
		if got := p.waitLog(t, 1, "node starting").num(t, "procs"); got != tc.want {
			t.Errorf("env %q, flags %q: node logs procs=%d, want %d", tc.env, tc.flags, got, tc.want)
		}
	}

	res := run(t, nodeBin, append(d.nodeArgs(r, "procs-bad", d.addPlaynode(t, "procs-bad"), "echo=1"), "--procs", "-1")...)
	if res.code == 0 || !strings.Contains(res.stderr, "--procs -1") {
		t.Errorf("node run --procs -1: exit %d, stderr %q; want non-zero naming --procs -1", res.code, res.stderr)
	}

	p := start(t, "relay procs", relayBin, "--log-format", "json", "serve", "--data", t.TempDir(),
		"--listen", "127.0.0.1:0", "--ports", d.ports, "--procs", "1", "--admin", "127.0.0.1:0")
	if got := p.waitLog(t, 1, "relay listening").num(t, "procs"); got != 1 {
		t.Errorf("relay serve --procs 1 logs procs=%d, want 1", got)
	}
}

// TestOnlyEd25519Keys: README promises ed25519 keys; RSA and ECDSA keys are
// refused with a message at each place an operator meets them: authorize,
// a hand-edited authorized_nodes line (serve stops naming file:line), and
// the node's --key.
func TestOnlyEd25519Keys(t *testing.T) {
	t.Parallel()
	d := newDeployment(t)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for typ, key := range map[string]crypto.Signer{"ssh-rsa": rsaKey, "ecdsa-sha2-nistp256": ecKey} {
		block, err := ssh.MarshalPrivateKey(key, "")
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(d.dir, typ)
		if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
		pub, err := ssh.NewPublicKey(key.Public())
		if err != nil {
			t.Fatal(err)
		}
		line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))

		res := run(t, relayBin, "authorize", "--data", d.data, "kiosk-"+typ[:3], line)
		if res.code == 0 || !strings.Contains(res.stderr, "ed25519 keys only") || !strings.Contains(res.stderr, typ) {
			t.Errorf("authorize %s key: exit %d, stderr %q; want non-zero saying ed25519 keys only", typ, res.code, res.stderr)
		}

		res = run(t, nodeBin, "run", "--relay", "127.0.0.1:1", "--fingerprint", d.fingerprint, "--key", path,
			"--name", "kiosk", "--lock", filepath.Join(d.dir, "k.lock"), "--service", "echo=1")
		if res.code == 0 || !strings.Contains(res.stderr, path) || !strings.Contains(res.stderr, "ed25519 keys only") {
			t.Errorf("node run --key %s key: exit %d, stderr %q; want non-zero naming the file and ed25519 keys only", typ, res.code, res.stderr)
		}

		data := t.TempDir()
		authorized := filepath.Join(data, "authorized_nodes")
		text := "# hand edited\nplaynode=\"kiosk\" " + line + "\n"
		if err := os.WriteFile(authorized, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		res = run(t, relayBin, "serve", "--data", data, "--listen", "127.0.0.1:0", "--ports", d.ports)
		if res.code == 0 || !strings.Contains(res.stderr, authorized+":2") || !strings.Contains(res.stderr, "ed25519 keys only") {
			t.Errorf("serve with a %s line 2 in authorized_nodes: exit %d, stderr %q; want non-zero naming %s:2", typ, res.code, res.stderr, authorized)
		}
	}
}
