package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"paradigm/internal/testenv"
)

// secondRelay sets up another relay data folder that shares d's host key
// (host_key copied before the first start, as README's "Node failover"
// says), so one --fingerprint verifies both.
func secondRelay(t *testing.T, d *deployment) *deployment {
	t.Helper()
	dir := t.TempDir()
	e := &deployment{dir: dir, data: filepath.Join(dir, "relay"), keepalive: d.keepalive}
	e.low, e.high = portWindow(20)
	e.ports = fmt.Sprintf("%d-%d", e.low, e.high)
	if err := os.Mkdir(e.data, 0o700); err != nil {
		t.Fatal(err)
	}
	key, err := os.ReadFile(filepath.Join(d.data, "host_key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.data, "host_key"), key, 0o600); err != nil {
		t.Fatal(err)
	}
	e.fingerprint = strings.TrimSpace(mustRun(t, relayBin, "fingerprint", "--data", e.data))
	if e.fingerprint != d.fingerprint {
		t.Fatalf("second relay's fingerprint %q, want the shared key's %q", e.fingerprint, d.fingerprint)
	}
	return e
}

// failoverPair starts relays A and B sharing one host key and a node given
// both in its config file (relay twice, or once with both, comma-separated,
// when oneLine), and waits until the node is online on A.
func failoverPair(t *testing.T, oneLine bool) (a, b *deployment, ra, rb *relayProc, n *proc) {
	t.Helper()
	a = newDeployment(t)
	a.keepalive = "1s"
	b = secondRelay(t, a)
	key := a.addPlaynode(t, playnode)
	b.authorize(t, playnode, key)
	ra = a.serve(t, "ssh", "127.0.0.1:0")
	rb = b.serve(t, "ssh", "127.0.0.1:0")
	conf := filepath.Join(a.dir, "node.conf")
	relays := fmt.Sprintf("relay = %s\nrelay = %s\n", ra.addr, rb.addr)
	if oneLine {
		relays = fmt.Sprintf("relay = %s, %s  # A preferred\n", ra.addr, rb.addr)
	}
	text := fmt.Sprintf("%sfingerprint = %s\nkey = %s\nname = %s\nservice = echo=%d\nprefer-first-after = 2s\n",
		relays, a.fingerprint, key, playnode, startEcho(t))
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	n = start(t, "node", nodeBin, "--log-format", "json", "run", "--config", conf, "--keepalive", "1s",
		"--backoff-max", "1s", "--lock", filepath.Join(a.dir, "node.lock"))
	a.waitLs(t, playnode, "echo", true)
	return a, b, ra, rb, n
}

// TestNodeFailover: kill -9 of relay A moves the node to relay B, where
// its service answers through B's portalias; A restarted, the node moves
// back to it after --prefer-first-after.
func TestNodeFailover(t *testing.T) {
	t.Parallel()
	a, b, ra, rb, n := failoverPair(t, false)
	if err := ra.stop(t, syscall.SIGKILL); err == nil {
		t.Fatal("relay A exited cleanly on SIGKILL")
	}
	killed := time.Now()
	row := b.waitLs(t, playnode, "echo", true)
	t.Logf("relay A kill -9: online on relay B after %v", time.Since(killed).Round(time.Millisecond))
	echoThrough(t, row.Portalias)
	n.waitLog(t, 1, "moved to another relay", "relay", rb.addr, "from", ra.addr)

	a.serveOn(t, "ssh", ra.addr, "")
	restarted := time.Now()
	a.waitLs(t, playnode, "echo", true)
	t.Logf("relay A restarted: back on relay A after %v (prefer-first-after 2s)", time.Since(restarted).Round(time.Millisecond))
	b.waitLs(t, playnode, "echo", false)
	n.waitLog(t, 1, "moved to another relay", "relay", ra.addr, "from", rb.addr)
}

// TestNodeFailoverHungRelay: relay A stopped (SIGSTOP: its kernel still
// acknowledges, nothing answers) is a dead link; the node moves to relay B
// within the dead-link bound for such a link (12 keepalive intervals)
// plus a backoff step.
func TestNodeFailoverHungRelay(t *testing.T) {
	t.Parallel()
	_, b, ra, _, _ := failoverPair(t, true)
	if err := ra.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ra.cmd.Process.Signal(syscall.SIGCONT) })
	stopped := time.Now()
	b.waitLs(t, playnode, "echo", true)
	t.Logf("relay A hung (SIGSTOP): online on relay B after %v (keepalive 1s)", time.Since(stopped).Round(time.Millisecond))
}

// TestNodeFailoverAllDown: with no relay up, `run` keeps trying both in
// turn and comes up on the second once it starts; the environment
// variable takes a comma-separated list.
func TestNodeFailoverAllDown(t *testing.T) {
	t.Parallel()
	a := newDeployment(t)
	b := secondRelay(t, a)
	key := a.addPlaynode(t, playnode)
	b.authorize(t, playnode, key)
	down := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	later := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	env := append(os.Environ(), "PARADIGM_NODE_RELAY="+down+","+later)
	n := startEnv(t, "node", env, nodeBin, "--log-format", "json", "run", "--fingerprint", a.fingerprint, "--key", key,
		"--name", playnode, "--service", fmt.Sprintf("echo=%d", startEcho(t)), "--backoff-max", "1s",
		"--lock", filepath.Join(a.dir, "node.lock"))
	n.waitLog(t, 1, "disconnected from relay", "relay", later)
	b.serveOn(t, "ssh", later, "")
	echoThrough(t, b.waitLs(t, playnode, "echo", true).Portalias)
}

// TestNodeFailoverEnrollment: a fleet image lists two relays and carries a
// token only relay B knows; a device with no key is refused by A (unknown
// token) and enrolls on B. Started again from cron while it runs, `run`
// exits 0 at once.
func TestNodeFailoverEnrollment(t *testing.T) {
	t.Parallel()
	a := newDeployment(t)
	b := secondRelay(t, a)
	b.serveArgs = []string{"--enroll-per-minute", "1000"}
	a.serveArgs = b.serveArgs
	ra := a.serve(t, "ssh", "127.0.0.1:0")
	rb := b.serve(t, "ssh", "127.0.0.1:0")
	out := mustRun(t, relayBin, "token", "create", "--data", b.data, "--uses", "1")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	tok := lines[len(lines)-1]
	args := []string{"--log-format", "json", "run", "--relay", ra.addr + "," + rb.addr, "--fingerprint", a.fingerprint,
		"--key", filepath.Join(a.dir, "new.key"), "--name", "signage-7", "--enroll-token", tok,
		"--service", fmt.Sprintf("echo=%d", startEcho(t)), "--backoff-max", "1s", "--refused-retry", "1s",
		"--lock", filepath.Join(a.dir, "node.lock")}
	n := start(t, "node", nodeBin, args...)
	echoThrough(t, b.waitLs(t, "signage-7", "echo", true).Portalias)
	if !refusedWith(n, "token") {
		t.Fatal("relay A, which does not know the token, did not refuse it")
	}
	if res := run(t, nodeBin, args...); res.code != 0 || res.stderr != "" {
		t.Fatalf("second run from cron: exit %d, stderr %q; want exit 0, silent", res.code, res.stderr)
	}
}
