package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"paradigm/bench/benchkit"
)

// Ports of the device's services, inside the playnode's namespace (a fresh
// namespace: nothing else listens there).
const (
	devIperfPort = 5201
	devEchoPort  = 7007
)

// Configurations, in the order of the table.
const (
	cfgDirect   = "direct"
	cfgOpenSSH  = "OpenSSH -R"
	cfgParadigm = "paradigm over SSH"
	cfgQUIC     = "paradigm over QUIC"
)

// tunnel is one running configuration: where the server side's benchmark
// client connects, and the processes to stop.
type tunnel struct {
	name      string
	iperfAddr string
	echoAddr  string
	procs     []*exec.Cmd // stopped in reverse order
	cleanup   []func()    // run after procs are stopped
}

func (t *tunnel) stop() {
	for i := len(t.procs) - 1; i >= 0; i-- {
		stopProc(t.procs[i])
	}
	t.procs = nil
	for _, f := range t.cleanup {
		f()
	}
	t.cleanup = nil
}

// stopProc ends c with SIGTERM, then SIGKILL after 5 s, and reaps it.
func stopProc(c *exec.Cmd) {
	if c == nil || c.Process == nil {
		return
	}
	c.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { c.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		c.Process.Kill()
		<-done
	}
}

// env is what every configuration needs: the link, the binaries and the
// temporary folder.
type env struct {
	link     *link
	tmp      string
	relayBin string
	nodeBin  string
	self     string // this program, re-executed as the device's echo server
}

// inNS is a command run inside the playnode's namespace.
func (e *env) inNS(ctx context.Context, prog string, args ...string) *exec.Cmd {
	return benchkit.Command(ctx, "ip", append([]string{"netns", "exec", e.link.ns, prog}, args...)...)
}

// start starts c with its output in tmp/name.log.
func (e *env) start(c *exec.Cmd, name string) error {
	f, err := os.Create(filepath.Join(e.tmp, name+".log"))
	if err != nil {
		return err
	}
	defer f.Close() // the child holds its own copy
	c.Stdout, c.Stderr = f, f
	if err := c.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	return nil
}

func (e *env) logTail(name string) string {
	out, _ := os.ReadFile(filepath.Join(e.tmp, name+".log"))
	return benchkit.Tail(out, 600)
}

// startServices runs the device's iperf3 -s and echo server in the
// namespace; the returned tunnel is "direct": the server side reaches them
// over the shaped link, with no tunnel.
func (e *env) startServices(ctx context.Context) (*tunnel, error) {
	t := &tunnel{name: cfgDirect,
		iperfAddr: net.JoinHostPort(e.link.devIP, fmt.Sprint(devIperfPort)),
		echoAddr:  net.JoinHostPort(e.link.devIP, fmt.Sprint(devEchoPort))}
	iperf := e.inNS(ctx, "iperf3", "-s", "-p", fmt.Sprint(devIperfPort))
	if err := e.start(iperf, "iperf3-server"); err != nil {
		return nil, err
	}
	t.procs = append(t.procs, iperf)
	echo := e.inNS(ctx, e.self, "echo", fmt.Sprintf("0.0.0.0:%d", devEchoPort))
	if err := e.start(echo, "echo"); err != nil {
		t.stop()
		return nil, err
	}
	t.procs = append(t.procs, echo)
	for _, addr := range []string{t.iperfAddr, t.echoAddr} {
		if err := benchkit.WaitDial(ctx, addr, 10*time.Second); err != nil {
			t.stop()
			return nil, fmt.Errorf("device services: %w", err)
		}
	}
	return t, nil
}

// listenPort returns a port free a moment ago on host (external programs
// need a number up front).
func listenPort(host string) (int, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// startOpenSSH runs a private sshd on the server side's veth address and,
// in the namespace, `ssh -tt -R` to it forwarding two loopback ports of the
// server to the device's iperf3 and echo server: the classic script, in
// tunnelbench's fastest setup (a session, so that ssh sets TCP_NODELAY).
func (e *env) startOpenSSH(ctx context.Context) (*tunnel, error) {
	dir, err := os.MkdirTemp(e.tmp, "openssh-")
	if err != nil {
		return nil, err
	}
	os.MkdirAll("/run/sshd", 0o755) // sshd's privilege separation folder
	for _, key := range []string{"host_ed25519", "client_ed25519"} {
		if out, err := benchkit.Command(ctx, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, key)).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("ssh-keygen: %w: %s", err, out)
		}
	}
	pub, err := os.ReadFile(filepath.Join(dir, "client_ed25519.pub"))
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o600); err != nil {
		return nil, err
	}
	sshdPort, err := listenPort(e.link.srvIP)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "sshd_config"), benchkit.SSHDConfig(sshdPort, e.link.srvIP, dir), 0o600); err != nil {
		return nil, err
	}
	t := &tunnel{name: cfgOpenSSH}
	sshd := benchkit.Command(ctx, benchkit.SSHDPath, "-D", "-f", filepath.Join(dir, "sshd_config"), "-E", filepath.Join(dir, "sshd.log"))
	if err := e.start(sshd, "sshd"); err != nil {
		return nil, err
	}
	t.procs = append(t.procs, sshd)
	if err := benchkit.WaitDial(ctx, net.JoinHostPort(e.link.srvIP, fmt.Sprint(sshdPort)), 10*time.Second); err != nil {
		t.stop()
		return nil, err
	}
	iperfPort, err1 := listenPort("127.0.0.1")
	echoPort, err2 := listenPort("127.0.0.1")
	if err1 != nil || err2 != nil {
		t.stop()
		return nil, fmt.Errorf("pick forwarded ports: %v %v", err1, err2)
	}
	ssh := e.inNS(ctx, "ssh", "-F", "/dev/null", "-tt", "-p", fmt.Sprint(sshdPort), "-i", filepath.Join(dir, "client_ed25519"),
		"-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
		"-o", "UserKnownHostsFile=/dev/null", "-o", "ExitOnForwardFailure=yes", "-o", "LogLevel=ERROR",
		"-R", fmt.Sprintf("127.0.0.1:%d:127.0.0.1:%d", iperfPort, devIperfPort),
		"-R", fmt.Sprintf("127.0.0.1:%d:127.0.0.1:%d", echoPort, devEchoPort),
		"root@"+e.link.srvIP, "sleep", "3600")
	// stdin stays open (and empty) so that the remote sleep keeps the session.
	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		t.stop()
		return nil, err
	}
	ssh.Stdin = stdinR
	err = e.start(ssh, "ssh")
	stdinR.Close()
	if err != nil {
		stdinW.Close()
		t.stop()
		return nil, err
	}
	t.procs = append(t.procs, ssh)
	t.cleanup = append(t.cleanup, func() { stdinW.Close() })
	t.iperfAddr = fmt.Sprintf("127.0.0.1:%d", iperfPort)
	t.echoAddr = fmt.Sprintf("127.0.0.1:%d", echoPort)
	if err := waitReady(ctx, t); err != nil {
		t.stop()
		return nil, fmt.Errorf("%s: %w (ssh: %s)", t.name, err, e.logTail("ssh"))
	}
	return t, nil
}

// startParadigm sets paradigm up as an operator would: relay fingerprint,
// node keygen, relay authorize, relay serve on the server side's veth
// address (and QUIC on the same port number with quic), node run in the
// namespace dialling it.
func (e *env) startParadigm(ctx context.Context, quic bool) (*tunnel, error) {
	name, ports, transport := cfgParadigm, "23100-23149", "ssh"
	if quic {
		name, ports, transport = cfgQUIC, "23150-23199", "quic"
	}
	dir, err := os.MkdirTemp(e.tmp, "paradigm-")
	if err != nil {
		return nil, err
	}
	data := filepath.Join(dir, "relay")
	fp, err := benchkit.CLIOutput(ctx, e.relayBin, "fingerprint", "--data", data)
	if err != nil {
		return nil, err
	}
	key := filepath.Join(dir, "node.key")
	pub, err := benchkit.CLIOutput(ctx, e.nodeBin, "keygen", "--key", key)
	if err != nil {
		return nil, err
	}
	if _, err := benchkit.CLIOutput(ctx, e.relayBin, "authorize", "--data", data, "shaped", pub); err != nil {
		return nil, err
	}
	port, err := listenPort(e.link.srvIP)
	if err != nil {
		return nil, err
	}
	relayAddr := net.JoinHostPort(e.link.srvIP, fmt.Sprint(port))
	args := []string{"--log-level", "warn", "serve", "--data", data, "--listen", relayAddr, "--ports", ports}
	if quic {
		args = append(args, "--quic-listen", relayAddr)
	}
	t := &tunnel{name: name}
	relay := benchkit.Command(ctx, e.relayBin, args...)
	if err := e.start(relay, "relay-"+transport); err != nil {
		return nil, err
	}
	t.procs = append(t.procs, relay)
	if err := benchkit.WaitDial(ctx, relayAddr, 10*time.Second); err != nil {
		t.stop()
		return nil, err
	}
	node := e.inNS(ctx, e.nodeBin, "--log-level", "warn", "run", "--relay", relayAddr, "--transport", transport,
		"--fingerprint", fp, "--key", key, "--name", "shaped",
		"--service", fmt.Sprintf("iperf=%d", devIperfPort), "--service", fmt.Sprintf("echo=%d", devEchoPort),
		"--lock", filepath.Join(dir, "node.lock"))
	if err := e.start(node, "node-"+transport); err != nil {
		t.stop()
		return nil, err
	}
	t.procs = append(t.procs, node)
	if err := e.waitParadigm(ctx, data, t); err != nil {
		t.stop()
		return nil, fmt.Errorf("%s: %w\nrelay: %s\nnode: %s", name, err, e.logTail("relay-"+transport), e.logTail("node-"+transport))
	}
	return t, nil
}

// waitParadigm reads the portaliases from `paradigm-relay ls --json` once
// the node is online, then waits until they forward.
func (e *env) waitParadigm(ctx context.Context, data string, t *tunnel) error {
	end := time.Now().Add(20 * time.Second)
	for {
		out, err := benchkit.CLIOutput(ctx, e.relayBin, "ls", "--data", data, "--json")
		if err == nil {
			var rows []struct {
				Service   string `json:"service"`
				Portalias int    `json:"portalias"`
				Online    bool   `json:"online"`
			}
			if json.Unmarshal([]byte(out), &rows) == nil {
				for _, r := range rows {
					addr := fmt.Sprintf("127.0.0.1:%d", r.Portalias)
					switch {
					case r.Online && r.Service == "iperf":
						t.iperfAddr = addr
					case r.Online && r.Service == "echo":
						t.echoAddr = addr
					}
				}
			}
		}
		if t.iperfAddr != "" && t.echoAddr != "" {
			return waitReady(ctx, t)
		}
		if time.Now().After(end) || ctx.Err() != nil {
			return fmt.Errorf("node not online after 20s")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitReady waits until both forwarded ports pass an echo round trip.
func waitReady(ctx context.Context, t *tunnel) error {
	end := time.Now().Add(20 * time.Second)
	for {
		err := echoOnce(t.echoAddr)
		if err == nil {
			err = benchkit.WaitDial(ctx, t.iperfAddr, time.Second)
		}
		if err == nil {
			return nil
		}
		if time.Now().After(end) || ctx.Err() != nil {
			return fmt.Errorf("tunnel not ready: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
