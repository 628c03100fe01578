package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"paradigm/bench/benchkit"
)

// Column names of the table, one per configuration.
const (
	colDirect     = "direct"
	colSSHDefault = "ssh default"
	colSSHAES     = "ssh aes128-gcm"
	colParadigm   = "paradigm"
	colQUIC       = "paradigm quic"
)

// isParadigm reports whether col is one of paradigm's transports.
func isParadigm(col string) bool { return col == colParadigm || col == colQUIC }

// tunnel is one running configuration: where the benchmark client connects
// and which processes make up its server side (sshd, relay) and device side
// (ssh, node).
type tunnel struct {
	name      string
	iperfAddr string // forwarded to the device's iperf3 -s
	echoAddr  string // forwarded to the device's echo server
	server    *exec.Cmd
	client    *exec.Cmd
	cleanup   []func()
}

func (t *tunnel) stop() {
	for _, c := range []*exec.Cmd{t.client, t.server} {
		if c != nil && c.Process != nil {
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
	}
	for i := len(t.cleanup) - 1; i >= 0; i-- {
		t.cleanup[i]()
	}
}

func (t *tunnel) serverPID() int { return pidOf(t.server) }
func (t *tunnel) clientPID() int { return pidOf(t.client) }

func pidOf(c *exec.Cmd) int {
	if c == nil || c.Process == nil {
		return 0
	}
	return c.Process.Pid
}

// startLogged starts c with its output in tmp/name.log.
func startLogged(c *exec.Cmd, tmp, name string) error {
	f, err := os.Create(filepath.Join(tmp, name+".log"))
	if err != nil {
		return err
	}
	c.Stdout, c.Stderr = f, f
	if err := c.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", name, err)
	}
	return nil
}

// startOpenSSH runs a private sshd on loopback (own host key and config) and
// `ssh -R` from the device side to it, forwarding two ports to the device's
// iperf3 and echo server. The ssh client runs a session (-tt and a remote
// sleep): only a session makes OpenSSH set TCP_NODELAY on its transport,
// without which every new forwarded connection waits on delayed ACKs
// (43 ms p50, see research/baselines.md). With delay > 0 ssh reaches sshd
// through the delay proxy.
func startOpenSSH(ctx context.Context, s *settings, name, cipher string, delay time.Duration) (*tunnel, error) {
	dir, err := os.MkdirTemp(s.tmp, "openssh-")
	if err != nil {
		return nil, err
	}
	t := &tunnel{name: name}
	if _, err := os.Stat("/run/sshd"); os.IsNotExist(err) {
		os.MkdirAll("/run/sshd", 0o755)
		t.cleanup = append(t.cleanup, func() { os.Remove("/run/sshd") })
	}
	for _, key := range []string{"host_ed25519", "client_ed25519"} {
		if out, err := command(ctx, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, key)).CombinedOutput(); err != nil {
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
	sshdPort, err := freePort()
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "sshd_config"), benchkit.SSHDConfig(sshdPort, "127.0.0.1", dir), 0o600); err != nil {
		return nil, err
	}
	t.server = command(ctx, sshdPath, "-D", "-f", filepath.Join(dir, "sshd_config"), "-E", filepath.Join(dir, "sshd.log"))
	if err := startLogged(t.server, dir, "sshd-stdout"); err != nil {
		return nil, err
	}
	sshdAddr := fmt.Sprintf("127.0.0.1:%d", sshdPort)
	if err := waitDial(ctx, sshdAddr, 10*time.Second); err != nil {
		t.stop()
		return nil, err
	}
	dialPort := sshdPort
	if delay > 0 {
		p, err := startDelayProxy(sshdAddr, delay)
		if err != nil {
			t.stop()
			return nil, err
		}
		t.cleanup = append(t.cleanup, func() { p.Close() })
		dialPort = p.Addr().(*net.TCPAddr).Port
	}
	iperfPort, err1 := freePort()
	echoPort, err2 := freePort()
	if err1 != nil || err2 != nil {
		t.stop()
		return nil, fmt.Errorf("pick forwarded ports: %v %v", err1, err2)
	}
	args := []string{"-F", "/dev/null", "-tt", "-p", fmt.Sprint(dialPort), "-i", filepath.Join(dir, "client_ed25519"),
		"-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
		"-o", "UserKnownHostsFile=/dev/null", "-o", "ExitOnForwardFailure=yes", "-o", "LogLevel=ERROR",
		"-R", fmt.Sprintf("127.0.0.1:%d:%s", iperfPort, s.iperfAddr),
		"-R", fmt.Sprintf("127.0.0.1:%d:%s", echoPort, s.echoAddr)}
	if cipher != "" {
		args = append(args, "-c", cipher)
	}
	args = append(args, "root@127.0.0.1", "sleep", "3600")
	t.client = command(ctx, "ssh", args...)
	// stdin stays open (and empty) so that the remote sleep keeps the session.
	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		t.stop()
		return nil, err
	}
	t.client.Stdin = stdinR
	t.cleanup = append(t.cleanup, func() { stdinW.Close(); stdinR.Close() })
	if err := startLogged(t.client, dir, "ssh"); err != nil {
		t.stop()
		return nil, err
	}
	t.iperfAddr = fmt.Sprintf("127.0.0.1:%d", iperfPort)
	t.echoAddr = fmt.Sprintf("127.0.0.1:%d", echoPort)
	if err := waitReady(ctx, t); err != nil {
		out, _ := os.ReadFile(filepath.Join(dir, "ssh.log"))
		t.stop()
		return nil, fmt.Errorf("%s: %w (ssh: %s)", name, err, tail(out, 500))
	}
	logf("%s up (sshd pid %d, ssh pid %d, delay %v)", name, t.serverPID(), t.clientPID(), delay)
	return t, nil
}

// waitReady waits until both forwarded ports pass an echo round trip.
func waitReady(ctx context.Context, t *tunnel) error {
	end := time.Now().Add(20 * time.Second)
	for {
		err := echoOnce(t.echoAddr)
		if err == nil {
			err = waitDial(ctx, t.iperfAddr, time.Second)
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

// paradigmRanges gives each paradigm instance of a run its own portalias
// range (below the ephemeral range 32768-60999 of Linux defaults).
var paradigmRanges = map[paradigmKey]string{
	{0, false}: "20000-20099", {25 * time.Millisecond, false}: "20100-20199",
	{0, true}: "20300-20399", {25 * time.Millisecond, true}: "20400-20499",
}

type paradigmKey struct {
	delay time.Duration
	quic  bool
}

// startParadigm sets paradigm up as an operator would, with the CLIs:
// relay fingerprint, node keygen, relay authorize, relay serve, node run
// --fingerprint. With delay > 0 the node dials the relay through the delay
// proxy. With quic the relay also serves QUIC on the same port number (UDP)
// and the node dials it with --transport quic (through the UDP delay proxy
// when delay > 0).
func startParadigm(ctx context.Context, s *settings, name string, delay time.Duration, quic bool) (*tunnel, error) {
	return startParadigmWith(ctx, s, paradigmRun{name: name, delay: delay, quic: quic})
}

// paradigmRun is one paradigm configuration to start.
type paradigmRun struct {
	name  string
	delay time.Duration
	quic  bool
	// idle starts both ends with their defaults, as an operator would for
	// the idle memory figure: no lifted stream limits, admin endpoint off
	// (several relays run at once).
	idle     bool
	nodeBin  string // the node executable; "" is s.nodeBin
	relayBin string // the relay executable; "" is s.relayBin
	ports    string // the portalias range; "" picks one by delay and quic
}

func startParadigmWith(ctx context.Context, s *settings, pr paradigmRun) (*tunnel, error) {
	name, delay, quic := pr.name, pr.delay, pr.quic
	nodeBin, relayBin := cmp.Or(pr.nodeBin, s.nodeBin), cmp.Or(pr.relayBin, s.relayBin)
	dir, err := os.MkdirTemp(s.tmp, "paradigm-")
	if err != nil {
		return nil, err
	}
	data := filepath.Join(dir, "relay")
	fp, err := cliOutput(ctx, relayBin, "fingerprint", "--data", data)
	if err != nil {
		return nil, err
	}
	key := filepath.Join(dir, "node.key")
	pub, err := cliOutput(ctx, nodeBin, "keygen", "--key", key)
	if err != nil {
		return nil, err
	}
	if _, err := cliOutput(ctx, relayBin, "authorize", "--data", data, "bench", pub); err != nil {
		return nil, err
	}
	t := &tunnel{name: name}
	var relayAddr string
	for attempt := 0; ; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		relayAddr = fmt.Sprintf("127.0.0.1:%d", port)
		ports := pr.ports
		if ports == "" {
			ports = paradigmRanges[paradigmKey{delay, quic}]
		}
		if ports == "" {
			ports = "20200-20299"
		}
		// The 1,000 idle forwarded connections all go through one
		// portalias: lift the relay's per-portalias and per-node limits.
		args := []string{"--log-level", "warn", "serve", "--data", data, "--listen", relayAddr, "--ports", ports,
			"--max-streams-per-portalias", "4096", "--max-streams-per-node", "4096"}
		if pr.idle {
			args = []string{"--log-level", "warn", "serve", "--data", data, "--listen", relayAddr, "--ports", ports, "--admin", ""}
		}
		if quic {
			args = append(args, "--quic-listen", relayAddr)
		}
		t.server = command(ctx, relayBin, args...)
		if err := startLogged(t.server, dir, "relay"); err != nil {
			return nil, err
		}
		if err = waitDial(ctx, relayAddr, 10*time.Second); err == nil {
			break
		}
		t.stop()
		if attempt == 2 {
			return nil, fmt.Errorf("paradigm-relay: %w", err)
		}
	}
	dialAddr := relayAddr
	if delay > 0 && quic {
		p, err := startUDPDelayProxy(relayAddr, delay)
		if err != nil {
			t.stop()
			return nil, err
		}
		t.cleanup = append(t.cleanup, func() { p.Close() })
		dialAddr = p.Addr().String()
	} else if delay > 0 {
		p, err := startDelayProxy(relayAddr, delay)
		if err != nil {
			t.stop()
			return nil, err
		}
		t.cleanup = append(t.cleanup, func() { p.Close() })
		dialAddr = p.Addr().String()
	}
	transport := "ssh"
	if quic {
		transport = "quic"
	}
	nodeArgs := []string{"--log-level", "warn", "run", "--relay", dialAddr, "--transport", transport, "--fingerprint", fp, "--key", key,
		"--name", "bench", "--service", "iperf=" + s.iperfAddr, "--service", "echo=" + s.echoAddr, "--lock", filepath.Join(dir, "node.lock")}
	if !pr.idle && nodeHasFlag(ctx, nodeBin, "--max-buffer") {
		// The idle-connections row holds 1,000 at once; 4 MiB windows as
		// in the earlier runs, so the figures stay comparable (a node
		// from before these flags, -ab's other build, had 4 MiB windows
		// by default).
		nodeArgs = append(nodeArgs, "--max-streams", "1100", "--max-buffer", "8800MiB")
	}
	t.client = command(ctx, nodeBin, nodeArgs...)
	if err := startLogged(t.client, dir, "node"); err != nil {
		t.stop()
		return nil, err
	}
	if err := waitParadigm(ctx, relayBin, data, t); err != nil {
		out, _ := os.ReadFile(filepath.Join(dir, "relay.log"))
		out2, _ := os.ReadFile(filepath.Join(dir, "node.log"))
		t.stop()
		return nil, fmt.Errorf("%s: %w\nrelay: %s\nnode: %s", name, err, tail(out, 800), tail(out2, 800))
	}
	logf("%s up (relay pid %d, node pid %d, delay %v)", name, t.serverPID(), t.clientPID(), delay)
	return t, nil
}

// waitParadigm reads the portaliases from `paradigm-relay ls --json` once
// the node is online, then waits until they forward.
func waitParadigm(ctx context.Context, relayBin, data string, t *tunnel) error {
	end := time.Now().Add(20 * time.Second)
	for {
		out, err := cliOutput(ctx, relayBin, "ls", "--data", data, "--json")
		if err == nil {
			var rows []struct {
				Service   string `json:"service"`
				Portalias int    `json:"portalias"`
				Online    bool   `json:"online"`
			}
			if err := json.Unmarshal([]byte(out), &rows); err == nil {
				for _, r := range rows {
					if r.Online && r.Service == "iperf" {
						t.iperfAddr = fmt.Sprintf("127.0.0.1:%d", r.Portalias)
					}
					if r.Online && r.Service == "echo" {
						t.echoAddr = fmt.Sprintf("127.0.0.1:%d", r.Portalias)
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

// nodeHasFlag reports whether paradigm-node at bin knows flag of its run
// command.
func nodeHasFlag(ctx context.Context, bin, flag string) bool {
	out, err := cliOutput(ctx, bin, "run", "--help")
	return err == nil && strings.Contains(out, flag)
}
