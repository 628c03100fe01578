// Package testenv holds what the tests of several packages share: a
// captured, concurrency-safe log that is printed when a test fails,
// waiting on a condition with a deadline (polling, never a sleep used as
// synchronisation), loopback services and port windows for portaliases.
// Only tests import it.
package testenv

import (
	"bytes"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// maxDump bounds how much of a log a failing test prints.
const maxDump = 200 << 10

// LogBuf collects one role's log lines for assertions.
type LogBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *LogBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *LogBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// Contains reports whether any line logged so far contains s.
func (l *LogBuf) Contains(s string) bool { return strings.Contains(l.String(), s) }

// Count is how many times s occurs in the log so far.
func (l *LogBuf) Count(s string) int { return strings.Count(l.String(), s) }

// Lines returns the lines that contain s.
func (l *LogBuf) Lines(s string) []string {
	var out []string
	for line := range strings.Lines(l.String()) {
		if strings.Contains(line, s) {
			out = append(out, line)
		}
	}
	return out
}

// NewLog returns a text logger at level writing into a fresh LogBuf, whose
// tail is printed to the test log if the test fails.
func NewLog(t testing.TB, role string, level slog.Level) (*slog.Logger, *LogBuf) {
	t.Helper()
	b := &LogBuf{}
	t.Cleanup(func() {
		if t.Failed() {
			s := b.String()
			if len(s) > maxDump {
				s = "...\n" + s[len(s)-maxDump:]
			}
			t.Logf("%s log:\n%s", role, s)
		}
	})
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: level})), b
}

// WaitFor polls cond every 5 ms until it holds, failing t after timeout.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond) // polling interval, not synchronisation
	}
}

// PortWindow picks a random range of size ports for portaliases outside
// the kernel's ephemeral port range (net.ipv4.ip_local_port_range), in the
// larger of the regions from 10000 below it and above it, so that tests
// running at once rarely share a window and no outgoing connection of any
// process can hold one of its ports (a restarted relay must bind its stored
// portaliases again).
func PortWindow(size int) (low, high int) {
	ephLow, ephHigh := 32768, 60999 // Linux's default
	if data, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		var l, h int
		if _, err := fmt.Sscan(string(data), &l, &h); err == nil && l > 0 && h >= l && h <= 65535 {
			ephLow, ephHigh = l, h
		}
	}
	start, end := 10000, ephLow-1 // below the ephemeral range
	if above := 65535 - ephHigh; above > end-start {
		start, end = ephHigh+1, 65535
	}
	if end-start+1 < size {
		start, end = 10000, 65535 // nowhere to hide: any window
	}
	low = start + rand.IntN(end-start+2-size)
	return low, low + size - 1
}

// Serve runs handle for every connection to a new loopback listener until
// the test ends, each connection under deadline (0: none) and closed when
// handle returns, and returns the listener's address. Cleanup closes the
// listener and waits for every handler.
func Serve(t testing.TB, deadline time.Duration, handle func(*net.TCPConn)) string {
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
				if deadline > 0 {
					c.SetDeadline(time.Now().Add(deadline))
				}
				handle(c.(*net.TCPConn))
			})
		}
	})
	return ln.Addr().String()
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago, for
// a program that must be told its port up front (sshd, a restarted relay);
// another program may take it in between, so callers retry on "in use".
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
