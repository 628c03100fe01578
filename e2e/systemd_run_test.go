//go:build linux

package e2e

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestSystemdDeploy follows README's Deploying section, as written, on a
// real systemd booted for the test (bootSystemd): it installs the built
// binaries where README's Install puts them, runs the relay's commands, the
// playnode's keygen, authorize, node.conf (only the fingerprint filled in;
// relay.example.com is the machine's own address in its /etc/hosts) and the
// node unit's commands, then checks that both units run sandboxed, the
// node reaches the relay, the device's sshd answers through its portalias,
// and `systemctl stop` ends both cleanly.
func TestSystemdDeploy(t *testing.T) {
	requireSystemdBoot(t)
	requireDeviceSSHD(t)
	t.Parallel()
	m := bootSystemd(t, filepath.Dir(relayBin))
	m.sh(t, "install -m 0755 /run/paradigm-e2e/bin/paradigm-relay /run/paradigm-e2e/bin/paradigm-node /usr/local/bin/")
	fingerprint := m.deployRelay(t)
	playnode := m.deployPlaynode(t, fingerprint)

	ssh := m.waitLs(t, playnode, "ssh", true)
	t.Logf("%s ssh online through the relay, portalias %d", playnode, ssh.Portalias)
	m.adminReady(t)
	if scan, ok := m.sshdAnswers(t, ssh.Portalias); !ok {
		t.Fatalf("ssh-keyscan through portalias %d printed %q, want the device's host key", ssh.Portalias, scan)
	}
	m.checkSandboxes(t)

	// A restart finds the state folder as it left it, root's files too,
	// and the playnode back on its portalias.
	m.sh(t, "systemctl restart paradigm-relay")
	m.poll(t, "the device's sshd to answer on its portalias after the relay's restart", func() bool {
		_, ok := m.sshdAnswers(t, ssh.Portalias)
		return ok
	})

	m.sh(t, "systemctl stop paradigm-node")
	m.waitLs(t, playnode, "ssh", false)
	m.sh(t, "systemctl stop paradigm-relay")
	for _, unit := range []string{"paradigm-node", "paradigm-relay"} {
		// ExecMainCode 1 is CLD_EXITED: the process exited by itself on
		// SIGTERM, with status 0, and was not killed after a timeout.
		for prop, want := range map[string]string{"ActiveState": "inactive", "Result": "success", "ExecMainCode": "1", "ExecMainStatus": "0"} {
			if got := strings.TrimSpace(m.sh(t, "systemctl show -P "+prop+" "+unit)); got != want {
				t.Errorf("%s after systemctl stop: %s=%s, want %s", unit, prop, got, want)
			}
		}
	}
}

// deployRelay runs README's commands for the relay, on the server, and
// returns the fingerprint they print.
func (m *machine) deployRelay(t *testing.T) string {
	t.Helper()
	out := m.sh(t, readmeBlock(t, "The relay runs as a systemd service"))
	fields := strings.Fields(out)
	if len(fields) == 0 || !strings.HasPrefix(fields[len(fields)-1], "SHA256:") {
		t.Fatalf("README's relay commands printed %q, want the fingerprint last", out)
	}
	return fields[len(fields)-1]
}

// deployPlaynode runs README's commands for a playnode, whose device is the
// same machine, its sshd the service, and returns the playnode's name.
func (m *machine) deployPlaynode(t *testing.T, fingerprint string) string {
	t.Helper()
	m.sh(t, "echo '127.0.0.1 relay.example.com' >>/etc/hosts && systemctl start ssh")
	pub := strings.TrimSpace(m.sh(t, readmeBlock(t, "On the device (or when building its image):")))
	authorize := readmeBlock(t, "On the server, authorize that key for the playnode's name")
	line := regexp.MustCompile(`paradigm-relay authorize --data \S+ (\S+) ("ssh-ed25519 [^"]*")`)
	match := line.FindStringSubmatch(authorize)
	if match == nil {
		t.Fatalf("README's authorize block %q has no authorize NAME \"ssh-ed25519 ...\" line", authorize)
	}
	m.sh(t, strings.Replace(authorize, match[2], strconv.Quote(pub), 1))
	conf := readmeBlock(t, "On the device, `/etc/paradigm/node.conf`:")
	const placeholder = "SHA256:...the relay's fingerprint..."
	if !strings.Contains(conf, placeholder) {
		t.Fatalf("README's node.conf %q lacks %q", conf, placeholder)
	}
	conf = strings.ReplaceAll(conf, placeholder, fingerprint)
	m.sh(t, "cat >/etc/paradigm/node.conf <<'EOF'\n"+conf+"EOF\n")
	m.sh(t, readmeBlock(t, "The unit ships as `deploy/paradigm-node.service`"))
	return match[1]
}

// checkSandboxes checks what the kernel and systemd say of both running
// units: their processes (sandboxed), the relay's state folder, and
// `systemd-analyze security` on the live units, within the limits
// TestSystemdUnits sets for the files.
func (m *machine) checkSandboxes(t *testing.T) {
	t.Helper()
	relay := m.sandboxed(t, "paradigm-relay")
	m.sandboxed(t, "paradigm-node")
	if got := strings.TrimSpace(m.sh(t, "readlink /var/lib/paradigm-relay")); got != "private/paradigm-relay" {
		t.Errorf("/var/lib/paradigm-relay links to %q, want private/paradigm-relay (StateDirectory= with DynamicUser=)", got)
	}
	owner := strings.TrimSpace(m.sh(t, "stat -c %u /var/lib/private/paradigm-relay/host_key"))
	if owner != relay.uid {
		t.Errorf("the relay's host key belongs to uid %s, want the relay's, %s: the relay could not read it after a restart", owner, relay.uid)
	}
	for _, u := range units {
		out := m.sh(t, "systemd-analyze security --no-pager "+u.file)
		match := exposure.FindStringSubmatch(out)
		if match == nil {
			t.Fatalf("systemd-analyze security %s: no overall exposure level in\n%s", u.file, out)
		}
		score, err := strconv.ParseFloat(match[1], 64)
		if err != nil || score > u.maxScore {
			t.Errorf("%s running: exposure %s, want at most %.1f\n%s", u.file, match[1], u.maxScore, out)
		}
		t.Logf("%s running: exposure %s", u.file, match[1])
	}
}

// sshdAnswers reports whether the device's sshd answers on portalias with
// its host key, and what ssh-keyscan printed.
func (m *machine) sshdAnswers(t *testing.T, portalias uint16) (string, bool) {
	t.Helper()
	hostKey := strings.Fields(m.sh(t, "cat /etc/ssh/ssh_host_ed25519_key.pub"))
	scan := m.sh(t, fmt.Sprintf("ssh-keyscan -T 5 -t ed25519 -p %d 127.0.0.1 2>/dev/null || true", portalias))
	got := strings.Fields(scan)
	return scan, len(got) >= 3 && len(hostKey) >= 2 && got[1] == hostKey[0] && got[2] == hostKey[1]
}

// requireDeviceSSHD fails the test under CI, and skips it elsewhere,
// without the device's sshd (Debian's openssh-server, its ssh.service and
// host keys) and ssh-keyscan.
func requireDeviceSSHD(t *testing.T) {
	t.Helper()
	var missing []string
	for _, path := range []string{sshdPath, "/lib/systemd/system/ssh.service", "/etc/ssh/ssh_host_ed25519_key.pub"} {
		if _, err := os.Stat(path); err != nil {
			missing = append(missing, path)
		}
	}
	if _, err := exec.LookPath("ssh-keyscan"); err != nil {
		missing = append(missing, "ssh-keyscan")
	}
	if len(missing) == 0 {
		return
	}
	why := "the device's sshd needs " + strings.Join(missing, ", ") + " (Debian packages openssh-server, openssh-client)"
	if os.Getenv("CI") != "" {
		t.Fatal(why)
	}
	t.Skip(why)
}

// waitLs waits until `paradigm-relay ls` in the machine shows playnode's
// service with the given online state, and returns its row.
func (m *machine) waitLs(t *testing.T, playnode, service string, online bool) lsRow {
	t.Helper()
	var got lsRow
	m.poll(t, fmt.Sprintf("ls to show %s %s online=%v", playnode, service, online), func() bool {
		var rows []lsRow
		out := m.sh(t, "paradigm-relay ls --data /var/lib/paradigm-relay --json")
		if err := json.Unmarshal([]byte(out), &rows); err != nil {
			t.Fatalf("ls --json printed %q: %v", out, err)
		}
		for _, row := range rows {
			if row.Playnode == playnode && row.Service == service && row.Online == online {
				got = row
				return true
			}
		}
		return false
	})
	return got
}

// sandbox is what the kernel says of a unit's main process.
type sandbox struct {
	uid string
}

// sandboxed checks that unit runs, and that its main process has a user of
// its own (DynamicUser=), no capability, no new privileges and a system
// call filter, as the kernel reports them in /proc/PID/status.
func (m *machine) sandboxed(t *testing.T, unit string) sandbox {
	t.Helper()
	pid := strings.TrimSpace(m.sh(t, "systemctl show -P MainPID "+unit))
	if pid == "" || pid == "0" {
		t.Fatalf("%s has no main process:\n%s", unit, m.sh(t, "systemctl status --no-pager "+unit+" || true"))
	}
	status := map[string]string{}
	for _, line := range strings.Split(m.sh(t, "cat /proc/"+pid+"/status"), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			status[k] = strings.TrimSpace(v)
		}
	}
	uids := strings.Fields(status["Uid"])
	for key, want := range map[string]string{"CapEff": "0000000000000000", "CapPrm": "0000000000000000", "CapBnd": "0000000000000000", "NoNewPrivs": "1", "Seccomp": "2"} {
		if status[key] != want {
			t.Errorf("%s (pid %s): %s is %q, want %q", unit, pid, key, status[key], want)
		}
	}
	if len(uids) == 0 || slices.Contains(uids, "0") {
		t.Errorf("%s (pid %s) runs as uid %q, want a user of its own", unit, pid, status["Uid"])
		return sandbox{}
	}
	t.Logf("%s runs as uid %s", unit, uids[0])
	return sandbox{uid: uids[0]}
}

// adminReady checks that the relay's admin endpoint, at the address it
// wrote in its data folder's admin.json, answers /readyz with 200.
func (m *machine) adminReady(t *testing.T) {
	t.Helper()
	var doc struct {
		URL string `json:"url"`
	}
	text := m.sh(t, "cat /var/lib/paradigm-relay/admin.json")
	if err := json.Unmarshal([]byte(text), &doc); err != nil {
		t.Fatalf("admin.json %q: %v", text, err)
	}
	u, err := url.Parse(doc.URL)
	if err != nil || u.Scheme != "http" || u.Port() == "" {
		t.Fatalf("admin.json %q: want an http URL with a port (%v)", text, err)
	}
	// The machine has no HTTP client for sure; bash's /dev/tcp is one.
	status := m.sh(t, fmt.Sprintf(`exec 3<>/dev/tcp/%s/%s; printf 'GET /readyz HTTP/1.0\r\n\r\n' >&3; head -1 <&3`, u.Hostname(), u.Port()))
	if f := strings.Fields(status); len(f) < 2 || f[1] != "200" {
		t.Errorf("admin endpoint %s/readyz answered %q, want 200", doc.URL, status)
	}
}
