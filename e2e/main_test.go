// Package e2e drives the built paradigm-relay and paradigm-node binaries as an
// operator would, with real OpenSSH (sshd as the playnode's service, ssh as
// the client reaching it through its portalias) where the use case has them.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"paradigm/internal/testenv"
)

// The binaries under test, built once by TestMain.
var relayBin, nodeBin string

// waitTimeout bounds every wait for a condition; generous because the race
// detector and two cores make everything slow, never reached when all is well.
const waitTimeout = 30 * time.Second

func TestMain(m *testing.M) {
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	dir, err := os.MkdirTemp("", "paradigm-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := build(dir); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	return m.Run()
}

// build compiles both commands (without -race: the binaries are the product
// as shipped) into dir.
func build(dir string) error {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return errors.New("go env GOMOD: not inside the paradigm module")
	}
	relayBin = filepath.Join(dir, "paradigm-relay")
	nodeBin = filepath.Join(dir, "paradigm-node")
	for bin, pkg := range map[string]string{relayBin: "./cmd/relay", nodeBin: "./cmd/node"} {
		cmd := exec.Command("go", "build", "-o", bin, pkg)
		cmd.Dir = filepath.Dir(gomod)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %w\n%s", pkg, err, out)
		}
	}
	return nil
}

// syncBuffer is a buffer a process writes while the test reads it.
type syncBuffer = testenv.LogBuf

// proc is a long-running process of the test: killed and waited for when
// the test ends, its stderr printed if the test failed.
type proc struct {
	name   string
	cmd    *exec.Cmd
	stdout syncBuffer
	stderr syncBuffer
	done   chan struct{} // closed when the process has exited
	err    error         // Wait's result, set before done closes
}

func start(t *testing.T, name, path string, args ...string) *proc {
	t.Helper()
	return startEnv(t, name, nil, path, args...)
}

// startEnv is start with env as the process's environment (nil: this
// test's).
func startEnv(t *testing.T, name string, env []string, path string, args ...string) *proc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &proc{name: name, done: make(chan struct{})}
	p.cmd = exec.CommandContext(ctx, path, args...)
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	p.cmd.WaitDelay = 5 * time.Second
	if err := p.cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		cancel()
		<-p.done
		if t.Failed() {
			t.Logf("--- %s: %s %s (%v)\n%s", name, filepath.Base(path), strings.Join(args, " "), p.err, p.stderr.String())
		}
	})
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends sig and waits for the process to exit, returning Wait's error.
func (p *proc) stop(t *testing.T, sig os.Signal) error {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %s: %v", p.name, err)
	}
	return p.wait(t)
}

// wait waits for the process to exit by itself.
func (p *proc) wait(t *testing.T) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(waitTimeout):
		t.Fatalf("%s did not exit within %v", p.name, waitTimeout)
		return nil
	}
}

// logEntry is one JSON log line (--log-format json).
type logEntry map[string]any

func (e logEntry) str(key string) string {
	s, _ := e[key].(string)
	return s
}

// port reads a numeric attribute, such as the portalias a "playnode
// connected" line gives under the service's name.
func (e logEntry) port(t *testing.T, key string) uint16 {
	t.Helper()
	f, ok := e[key].(float64)
	if !ok || f < 1 || f > 65535 {
		t.Fatalf("log line %v: attribute %q is %v, want a port number", e, key, e[key])
	}
	return uint16(f)
}

// num reads a numeric attribute.
func (e logEntry) num(t *testing.T, key string) int {
	t.Helper()
	f, ok := e[key].(float64)
	if !ok {
		t.Fatalf("log line %v: attribute %q is %v, want a number", e, key, e[key])
	}
	return int(f)
}

// logs parses the JSON lines of the process's stderr, skipping anything else.
func (p *proc) logs() []logEntry {
	var out []logEntry
	sc := bufio.NewScanner(strings.NewReader(p.stderr.String()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var e logEntry
		if json.Unmarshal(sc.Bytes(), &e) == nil {
			out = append(out, e)
		}
	}
	return out
}

// count returns how many log lines have message msg and every attribute in
// attrs (key, value pairs).
func (p *proc) count(msg string, attrs ...string) int {
	return len(p.matching(msg, attrs...))
}

func (p *proc) matching(msg string, attrs ...string) []logEntry {
	var out []logEntry
next:
	for _, e := range p.logs() {
		if e.str("msg") != msg {
			continue
		}
		for i := 0; i+1 < len(attrs); i += 2 {
			if e.str(attrs[i]) != attrs[i+1] {
				continue next
			}
		}
		out = append(out, e)
	}
	return out
}

// waitLog waits for the n-th log line (counting from 1) with message msg and
// attrs, failing early if the process exits first.
func (p *proc) waitLog(t *testing.T, n int, msg string, attrs ...string) logEntry {
	t.Helper()
	var found []logEntry
	waitUntil(t, fmt.Sprintf("%s to log %q %v (#%d)", p.name, msg, attrs, n), func() bool {
		found = p.matching(msg, attrs...)
		if len(found) < n && p.exited() {
			t.Fatalf("%s exited (%v) before logging %q %v (#%d)", p.name, p.err, msg, attrs, n)
		}
		return len(found) >= n
	})
	return found[n-1]
}

// waitUntil polls cond until it holds, failing the test after waitTimeout.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testenv.WaitFor(t, waitTimeout, what, cond)
}

// result is a finished short command.
type result struct {
	stdout, stderr string
	code           int
}

// run runs a command to completion (bounded by waitTimeout).
func run(t *testing.T, path string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := result{stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit) && ctx.Err() == nil:
		res.code = exit.ExitCode()
	case err != nil:
		t.Fatalf("%s %s: %v\nstderr:\n%s", filepath.Base(path), strings.Join(args, " "), err, res.stderr)
	}
	return res
}

// mustRun runs a command that must succeed and returns its stdout.
func mustRun(t *testing.T, path string, args ...string) string {
	t.Helper()
	res := run(t, path, args...)
	if res.code != 0 {
		t.Fatalf("%s %s: exit %d\nstdout:\n%s\nstderr:\n%s", filepath.Base(path), strings.Join(args, " "), res.code, res.stdout, res.stderr)
	}
	return res.stdout
}

// portWindow picks a random range of size ports outside the ephemeral
// range, so tests running at once (here or in other packages) rarely share
// portaliases and no client socket holds one.
func portWindow(size int) (low, high int) { return testenv.PortWindow(size) }
