package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// readmeBlock returns the first indented block after intro in README,
// unindented.
func readmeBlock(t *testing.T, intro string) string {
	t.Helper()
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(readme), intro)
	if !ok {
		t.Fatalf("README has no %q", intro)
	}
	lines := strings.Split(after, "\n")
	for len(lines) > 0 && !strings.HasPrefix(lines[0], "    ") {
		lines = lines[1:]
	}
	var block []string
	for _, l := range lines {
		if !strings.HasPrefix(l, "    ") {
			break
		}
		block = append(block, strings.TrimPrefix(l, "    "))
	}
	return strings.Join(block, "\n") + "\n"
}

// TestREADMEPlaynodeExample follows README's "A playnode" section: the name
// its authorize line binds the key to, and its node.conf as written (only
// the relay's address, fingerprint and the key's path replaced by this
// test's), must connect, whatever this machine's hostname.
func TestREADMEPlaynodeExample(t *testing.T) {
	t.Parallel()
	authorize := readmeBlock(t, "On the server, authorize that key for the playnode's name")
	m := regexp.MustCompile(`paradigm-relay authorize --data \S+ (\S+) "ssh-ed25519 `).FindStringSubmatch(authorize)
	if m == nil {
		t.Fatalf("README's authorize block %q has no authorize NAME \"ssh-ed25519 ...\" line", authorize)
	}
	name := m[1]
	conf := readmeBlock(t, "On the device, `/etc/paradigm/node.conf`:")

	d := newDeployment(t)
	key := d.addPlaynode(t, name)
	r := d.serve(t, "ssh", "127.0.0.1:0")
	for old, new := range map[string]string{
		"relay.example.com:4422":               r.addr,
		"SHA256:...the relay's fingerprint...": d.fingerprint,
		"/etc/paradigm/node.key":               key,
	} {
		if !strings.Contains(conf, old) {
			t.Fatalf("README's node.conf %q lacks %q", conf, old)
		}
		conf = strings.ReplaceAll(conf, old, new)
	}
	path := filepath.Join(d.dir, "node.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	start(t, "node "+name, nodeBin, "run", "--config", path, "--lock", filepath.Join(d.dir, "readme.lock"))
	r.waitLog(t, 1, "playnode connected", "playnode", name)
}
