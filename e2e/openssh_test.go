package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"paradigm/internal/testenv"
)

const sshdPath = "/usr/sbin/sshd"

// requireOpenSSH skips the test when sshd, ssh or ssh-keygen is missing or
// the test cannot run sshd as root, except under CI, which installs them:
// there the test fails instead.
func requireOpenSSH(t *testing.T) {
	t.Helper()
	var missing []string
	if _, err := os.Stat(sshdPath); err != nil {
		missing = append(missing, sshdPath)
	}
	for _, bin := range []string{"ssh", "ssh-keygen"} {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, bin)
		}
	}
	var why string
	switch {
	case len(missing) > 0:
		why = fmt.Sprintf("OpenSSH is not installed (missing %s; apt-get install openssh-server openssh-client)", strings.Join(missing, ", "))
	case os.Geteuid() != 0:
		why = "the test's sshd must run as root"
	default:
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s; under CI these tests must run", why)
	}
	t.Skip(why)
}

// sshd is a private OpenSSH server on loopback: the playnode's service.
type sshd struct {
	port      int
	clientKey string // private key whose .pub sshd accepts for root
}

// startSSHD runs /usr/sbin/sshd -D -e with its own host key, config and
// authorized keys in a temporary folder, on a free loopback port.
func startSSHD(t *testing.T) *sshd {
	t.Helper()
	requireOpenSSH(t)
	dir := t.TempDir()
	hostKey := filepath.Join(dir, "host_ed25519")
	clientKey := filepath.Join(dir, "client_ed25519")
	for _, key := range []string{hostKey, clientKey} {
		mustRun(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "paradigm-e2e", "-f", key)
	}
	pub, err := os.ReadFile(clientKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	authorized := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(authorized, pub, 0o600); err != nil {
		t.Fatal(err)
	}
	// sshd refuses to start without its privilege separation folder, which
	// only the init system creates.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatal(err)
	}
	// sshd needs a port number: take a free one and retry if another
	// process grabs it before sshd binds it.
	for range 5 {
		port := testenv.FreePort(t)
		config := filepath.Join(dir, "sshd_config")
		text := fmt.Sprintf(`ListenAddress 127.0.0.1:%d
HostKey %s
AuthorizedKeysFile %s
StrictModes no
UsePAM no
PidFile none
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
`, port, hostKey, authorized)
		if err := os.WriteFile(config, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		p := start(t, "sshd", sshdPath, "-D", "-e", "-f", config)
		listening := fmt.Sprintf("Server listening on 127.0.0.1 port %d", port)
		waitUntil(t, "sshd to listen", func() bool {
			return strings.Contains(p.stderr.String(), listening) || p.exited()
		})
		if !p.exited() {
			return &sshd{port: port, clientKey: clientKey}
		}
		if !strings.Contains(p.stderr.String(), "Address already in use") {
			t.Fatalf("sshd exited (%v):\n%s", p.err, p.stderr.String())
		}
	}
	t.Fatal("sshd found no free port in 5 tries")
	return nil
}

// sshCmd is the real ssh client reaching this sshd through a portalias.
func (s *sshd) sshCmd(ctx context.Context, portalias uint16, command string) *exec.Cmd {
	return exec.CommandContext(ctx, "ssh", "-F", "/dev/null", "-p", strconv.Itoa(int(portalias)),
		"-i", s.clientKey, "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
		"-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
		"-o", "ConnectTimeout=10", "root@127.0.0.1", command)
}

// ssh runs command through the portalias, with stdin and stdout as given.
func (s *sshd) ssh(t *testing.T, portalias uint16, stdin io.Reader, stdout io.Writer, command string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	cmd := s.sshCmd(ctx, portalias, command)
	var stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("ssh -p %d %q: %w: %s", portalias, command, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return nil
}

// hello runs echo through the portalias and checks the output.
func (s *sshd) hello(t *testing.T, portalias uint16) {
	t.Helper()
	var out bytes.Buffer
	if err := s.ssh(t, portalias, nil, &out, "echo hello-through-paradigm"); err != nil {
		t.Fatal(err)
	}
	if got, want := out.String(), "hello-through-paradigm\n"; got != want {
		t.Fatalf("ssh through portalias %d printed %q, want %q", portalias, got, want)
	}
}
