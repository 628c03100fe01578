package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"paradigm/bench/benchkit"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// The shared pieces live in bench/benchkit.
var (
	command   = benchkit.Command
	waitDial  = benchkit.WaitDial
	cliOutput = benchkit.CLIOutput
	tail      = benchkit.Tail
	logf      = benchkit.Logf
)

const sshdPath = benchkit.SSHDPath

// ensurePackages installs openssh-server, openssh-client and iperf3 when missing.
func ensurePackages(ctx context.Context) error { return benchkit.EnsurePackages(ctx) }

// buildBinaries builds paradigm-relay and paradigm-node from this module.
// setUp is what a measuring run needs first: the packages, a temporary
// folder (s.tmp, named from prefix; removed by cleanup unless -keep), this
// tree's binaries, and the device-local echo and iperf3 servers (s.echoAddr,
// s.iperfAddr). cleanup stops and removes what setUp started, also after
// an error part way.
func setUp(ctx context.Context, s *settings, prefix string) (_ func(), err error) {
	var undo []func()
	cleanup := func() {
		for _, f := range slices.Backward(undo) {
			f()
		}
	}
	defer func() {
		if err != nil {
			cleanup()
		}
	}()
	if err := ensurePackages(ctx); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", prefix)
	if err != nil {
		return nil, err
	}
	s.tmp = tmp
	if !s.keep {
		undo = append(undo, func() { os.RemoveAll(tmp) })
	} else {
		logf("keeping %s", tmp)
	}
	if err := buildBinaries(ctx, s); err != nil {
		return nil, err
	}
	echo, err := startEcho()
	if err != nil {
		return nil, err
	}
	undo = append(undo, func() { echo.Close() })
	s.echoAddr = echo.Addr().String()
	iperfSrv, err := startIperfServer(ctx, s.tmp)
	if err != nil {
		return nil, err
	}
	undo = append(undo, iperfSrv.stop)
	s.iperfAddr = iperfSrv.addr
	return cleanup, nil
}

func buildBinaries(ctx context.Context, s *settings) (err error) {
	s.relayBin, s.nodeBin, err = benchkit.BuildBinaries(ctx, s.tmp)
	return err
}

// versions describes the machine and the tools measured.
func versions(ctx context.Context) map[string]string {
	v := map[string]string{}
	run := func(name string, args ...string) string {
		out, err := command(ctx, name, args...).CombinedOutput()
		if err != nil {
			return "unknown"
		}
		return strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
	}
	v["go"] = run("go", "version")
	v["openssh"] = run("ssh", "-V")
	v["iperf3"] = run("iperf3", "--version")
	v["kernel"] = run("uname", "-r")
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if k, val, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				v["cpu"] = strings.TrimSpace(val)
				break
			}
		}
	}
	v["nproc"] = run("nproc")
	v["commit"] = run("git", "rev-parse", "--short", "HEAD")
	return v
}

// raiseNofile lifts RLIMIT_NOFILE (soft and hard; we run as root) so that the
// relay and the node simulators, which inherit it, hold 10,000 sessions.
// syscall.Setrlimit also makes os/exec pass the new limit to children.
func raiseNofile() error {
	want := uint64(1 << 20)
	if data, err := os.ReadFile("/proc/sys/fs/nr_open"); err == nil {
		var n uint64
		if _, err := fmt.Sscan(string(data), &n); err == nil && n > 0 {
			want = n
		}
	}
	lim := syscall.Rlimit{Cur: want, Max: want}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		var cur syscall.Rlimit
		if err2 := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &cur); err2 == nil {
			cur.Cur = cur.Max
			return errors.Join(err, syscall.Setrlimit(syscall.RLIMIT_NOFILE, &cur))
		}
		return err
	}
	return nil
}

// nofileLimit is the RLIMIT_NOFILE soft limit children inherit.
func nofileLimit() uint64 {
	var cur syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &cur); err != nil {
		return 0
	}
	return cur.Cur
}

// freePort returns a loopback port that was free a moment ago. External
// programs (sshd, iperf3, ssh -R) need a number up front; callers retry
// their start when the port was taken meanwhile.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

type iperfServer struct {
	addr string
	cmd  *exec.Cmd
}

func (s *iperfServer) stop() {
	s.cmd.Process.Signal(syscall.SIGTERM)
	s.cmd.Wait()
}

// startIperfServer runs the device-local iperf3 -s.
func startIperfServer(ctx context.Context, tmp string) (*iperfServer, error) {
	var lastErr error
	for range 3 {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		log, err := os.Create(filepath.Join(tmp, "iperf3-server.log"))
		if err != nil {
			return nil, err
		}
		c := command(ctx, "iperf3", "-s", "-B", "127.0.0.1", "-p", fmt.Sprint(port))
		c.Stdout, c.Stderr = log, log
		if err := c.Start(); err != nil {
			return nil, fmt.Errorf("start iperf3 -s: %w", err)
		}
		if lastErr = waitDial(ctx, addr, 5*time.Second); lastErr == nil {
			return &iperfServer{addr: addr, cmd: c}, nil
		}
		c.Process.Kill()
		c.Wait()
	}
	return nil, fmt.Errorf("start iperf3 -s: %w", lastErr)
}

// startEcho runs the device-local echo server in this process.
func startEcho() (net.Listener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 4096)
				io.CopyBuffer(c, struct{ io.Reader }{c}, buf)
			}()
		}
	}()
	return ln, nil
}
