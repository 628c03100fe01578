// Package benchkit holds what the end-to-end benchmarks in bench/cmd share:
// running programs under a context, installing their Debian packages,
// building paradigm's binaries from the working tree, waiting for a port,
// iperf3 runs and 64-byte echo round trips with nearest-rank percentiles.
package benchkit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// SSHDPath is where Debian's openssh-server puts sshd.
const SSHDPath = "/usr/sbin/sshd"

const aptWait = 5 * time.Minute

// Logf writes one time-stamped progress line to stderr.
func Logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// Command is exec.CommandContext with the process killed (not just
// signalled) when ctx ends and a bounded wait for its output.
func Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	c := exec.CommandContext(ctx, name, args...)
	c.WaitDelay = 2 * time.Second
	return c
}

// EnsurePackages installs openssh-server, openssh-client and iperf3 from
// Debian packages when one of their programs is missing.
func EnsurePackages(ctx context.Context) error {
	var missing []string
	if _, err := os.Stat(SSHDPath); err != nil {
		missing = append(missing, "openssh-server")
	}
	for prog, pkg := range map[string]string{"ssh": "openssh-client", "ssh-keygen": "openssh-client", "iperf3": "iperf3"} {
		if _, err := exec.LookPath(prog); err != nil && !slices.Contains(missing, pkg) {
			missing = append(missing, pkg)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	Logf("installing %s with apt-get", strings.Join(missing, " "))
	ctx, cancel := context.WithTimeout(ctx, aptWait)
	defer cancel()
	for _, args := range [][]string{{"update"}, append([]string{"install", "-y", "--no-install-recommends"}, missing...)} {
		c := Command(ctx, "apt-get", args...)
		c.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := c.CombinedOutput(); err != nil {
			return fmt.Errorf("apt-get %s: %w\n%s", args[0], err, Tail(out, 2000))
		}
	}
	return nil
}

// BuildBinaries builds paradigm-relay and paradigm-node from this module
// into dir and returns their paths.
func BuildBinaries(ctx context.Context, dir string) (relayBin, nodeBin string, err error) {
	root, err := ModuleRoot(ctx)
	if err != nil {
		return "", "", err
	}
	relayBin = filepath.Join(dir, "paradigm-relay")
	nodeBin = filepath.Join(dir, "paradigm-node")
	for bin, pkg := range map[string]string{relayBin: "./cmd/relay", nodeBin: "./cmd/node"} {
		c := Command(ctx, "go", "build", "-o", bin, pkg)
		c.Dir = root
		if out, err := c.CombinedOutput(); err != nil {
			return "", "", fmt.Errorf("go build %s: %w\n%s", pkg, err, out)
		}
	}
	Logf("built paradigm-relay and paradigm-node")
	return relayBin, nodeBin, nil
}

// ReleaseBuildFlags are the `go build` flags of README's release build (with
// CGO_ENABLED=0): no build paths, no man-page generator, no symbol table or
// debug information.
var ReleaseBuildFlags = []string{"-trimpath", "-tags", "urfave_cli_no_docs", "-ldflags", "-s -w"}

// BuildRelease builds pkg (e.g. ./cmd/node) of this module as README's
// release build does, for this machine, into out.
func BuildRelease(ctx context.Context, pkg, out string) error {
	root, err := ModuleRoot(ctx)
	if err != nil {
		return err
	}
	c := Command(ctx, "go", append(append([]string{"build"}, ReleaseBuildFlags...), "-o", out, pkg)...)
	c.Dir = root
	c.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := c.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, out)
	}
	return nil
}

// ModuleRoot is the folder of the paradigm module the command runs in.
func ModuleRoot(ctx context.Context) (string, error) {
	out, err := Command(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("run the benchmark from inside the paradigm module")
	}
	return filepath.Dir(mod), nil
}

// WaitDial waits until addr accepts a connection, bounded by timeout.
func WaitDial(ctx context.Context, addr string, timeout time.Duration) error {
	end := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(end) || ctx.Err() != nil {
			return fmt.Errorf("%s not accepting after %v: %w", addr, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// CLIOutput runs a paradigm CLI command and returns its trimmed stdout.
func CLIOutput(ctx context.Context, bin string, args ...string) (string, error) {
	c := Command(ctx, bin, args...)
	var stderr strings.Builder
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		return "", fmt.Errorf("%s %s: %w: %s", filepath.Base(bin), strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(string(out)), nil
}

// Tail is the last n bytes of b, for error messages.
func Tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// IperfResult is what one iperf3 -J run measured at the receiver.
type IperfResult struct {
	BPS   float64
	Bytes int64
}

// RunIperf runs one iperf3 client test against addr: secs seconds,
// parallel streams, reverse (-R: the server side sends), omitting the first
// omit seconds.
func RunIperf(ctx context.Context, addr string, secs, parallel int, reverse bool, omit int) (IperfResult, error) {
	host, port, _ := net.SplitHostPort(addr)
	args := []string{"-c", host, "-p", port, "-t", strconv.Itoa(secs), "-J", "-P", strconv.Itoa(parallel)}
	if reverse {
		args = append(args, "-R")
	}
	if omit > 0 {
		args = append(args, "-O", strconv.Itoa(omit))
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(secs+omit+30)*time.Second)
	defer cancel()
	out, err := Command(ctx, "iperf3", args...).Output()
	var doc struct {
		End struct {
			SumReceived struct {
				Bytes         int64   `json:"bytes"`
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if jerr := json.Unmarshal(out, &doc); jerr != nil {
		return IperfResult{}, fmt.Errorf("iperf3 %v: %w (%v)", args, errors.Join(err, jerr), Tail(out, 300))
	}
	if doc.Error != "" {
		return IperfResult{}, fmt.Errorf("iperf3 %v: %s", args, doc.Error)
	}
	return IperfResult{BPS: doc.End.SumReceived.BitsPerSecond, Bytes: doc.End.SumReceived.Bytes}, nil
}

// MsgSize is the size of one echo request.
const MsgSize = 64

// RoundTrip writes msg and reads the same number of bytes back into buf.
func RoundTrip(c net.Conn, msg, buf []byte) error {
	if _, err := c.Write(msg); err != nil {
		return err
	}
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if !bytes.Equal(msg, buf) {
		return errors.New("echo returned different bytes")
	}
	return nil
}

// Median is the median of xs (not modified): the mean of the middle two
// of an even count, 0 for none.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(xs))
	if len(s)%2 == 0 {
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return s[len(s)/2]
}

// Percentile is the nearest-rank q-quantile of sorted d.
func Percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// SSHDConfig is the sshd_config of the OpenSSH server the benchmarks run
// as the -R baseline: port on listen, host key, pid file and authorized
// keys in dir, public-key login only, remote forwarding allowed and
// nothing else.
func SSHDConfig(port int, listen, dir string) []byte {
	return fmt.Appendf(nil, `Port %d
ListenAddress %s
HostKey %[3]s/host_ed25519
PidFile %[3]s/sshd.pid
AuthorizedKeysFile %[3]s/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowTcpForwarding remote
GatewayPorts no
X11Forwarding no
AllowAgentForwarding no
PrintMotd no
UseDNS no
LogLevel ERROR
`, port, listen, dir)
}

// RSSKiB is VmRSS of process pid from /proc, in KiB; 0 when it cannot be
// read (the process is gone).
func RSSKiB(pid int) float64 {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			if f := strings.Fields(v); len(f) > 0 {
				n, _ := strconv.ParseFloat(f[0], 64)
				return n
			}
		}
	}
	return 0
}
