package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestAdminEndpoint drives the admin endpoint of a running relay binary:
// its JSON API, ls reading it, and ssh-config used by the real ssh client
// to reach the playnode by name.
func TestAdminEndpoint(t *testing.T) {
	f := newFleet(t, "ssh")
	b, err := os.ReadFile(filepath.Join(f.d.data, "admin.json"))
	if err != nil {
		t.Fatalf("the running relay wrote no admin.json: %v", err)
	}
	var addr struct{ URL string }
	if err := json.Unmarshal(b, &addr); err != nil || !strings.HasPrefix(addr.URL, "http://127.0.0.1:") {
		t.Fatalf("admin.json %q: want a loopback URL (%v)", b, err)
	}
	resp, err := http.Get(addr.URL + "/api/v1/playnodes/" + playnode)
	if err != nil {
		t.Fatal(err)
	}
	var p struct {
		Online   bool
		Services []struct {
			Service   string
			Portalias uint16
		}
	}
	err = json.NewDecoder(resp.Body).Decode(&p)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || !p.Online || len(p.Services) != 2 {
		t.Fatalf("GET /api/v1/playnodes/%s: %d %+v %v", playnode, resp.StatusCode, p, err)
	}

	out := mustRun(t, relayBin, "ssh-config", "--data", f.d.data, "--proxy-jump", "ops@relay.example.com")
	want := "# BEGIN paradigm-relay ssh-config\nHost " + playnode + "\n    HostName 127.0.0.1\n    Port " +
		strconv.Itoa(int(f.portaliases["ssh"])) + "\n    HostKeyAlias " + playnode + "\n    ProxyJump ops@relay.example.com\n# END paradigm-relay ssh-config\n"
	if out != want {
		t.Fatalf("ssh-config printed\n%s\nwant\n%s", out, want)
	}

	// Without --proxy-jump the block is what this server's ssh needs.
	cfg := filepath.Join(t.TempDir(), "ssh_config")
	known := filepath.Join(t.TempDir(), "known_hosts")
	block := mustRun(t, relayBin, "ssh-config", "--data", f.d.data)
	if err := os.WriteFile(cfg, []byte(block), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "ssh", "-F", cfg, "-i", f.sshd.clientKey, "-o", "IdentitiesOnly=yes",
		"-o", "StrictHostKeyChecking=accept-new", "-o", "UserKnownHostsFile="+known, "-o", "BatchMode=yes",
		"-o", "LogLevel=ERROR", "-l", "root", playnode, "echo hello-by-name")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil || stdout.String() != "hello-by-name\n" {
		t.Fatalf("ssh %s through ssh-config: %v, printed %q, stderr %q", playnode, err, stdout.String(), stderr.String())
	}
	kh, _ := os.ReadFile(known)
	if !strings.HasPrefix(string(kh), playnode+" ") {
		t.Errorf("known_hosts %q: want the host key recorded under %s (HostKeyAlias), not a port", kh, playnode)
	}
}
