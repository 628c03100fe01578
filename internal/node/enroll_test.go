package node

import (
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"paradigm/internal/identity"
	"paradigm/internal/proto"
)

func TestExpandName(t *testing.T) {
	mid := filepath.Join(t.TempDir(), "machine-id")
	os.WriteFile(mid, []byte("3f9a1c2e7b6d4e0f8a9b0c1d2e3f4a5b\n"), 0o644)
	empty := filepath.Join(t.TempDir(), "empty")
	os.WriteFile(empty, nil, 0o644)
	src := NameSources{Hostname: "raspberrypi.local", MachineIDFile: mid, MAC: "dc:a6:32:01:02:03"}
	for _, c := range []struct{ tmpl, want, err string }{
		{"kiosk-7", "kiosk-7", ""},
		{"signage-{machine-id:8}", "signage-3f9a1c2e", ""},
		{"{hostname}-{machine-id:4}", "raspberrypi-3f9a", ""},
		{"pi-{mac}", "pi-dca632010203", ""},
		{"{machine-id}", "3f9a1c2e7b6d4e0f8a9b0c1d2e3f4a5b", ""},
		{"{machine-id:999}", "3f9a1c2e7b6d4e0f8a9b0c1d2e3f4a5b", ""},
		{"x-{serial}", "", "unknown field {serial}"},
		{"x-{machine-id:0}", "", "N 1 or more"},
		{"x-{hostname:3}", "", "only {machine-id:N}"},
		{"x-{machine-id", "", "{ without }"},
		{"{machine-id:8} x", "", "not allowed"},
	} {
		got, err := ExpandName(c.tmpl, src)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%q: got %q, %v, want an error containing %q", c.tmpl, got, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%q: got %q, %v, want %q", c.tmpl, got, err, c.want)
		}
	}
	for _, f := range []string{empty, filepath.Join(t.TempDir(), "missing")} {
		if _, err := ExpandName("a-{machine-id:8}", NameSources{MachineIDFile: f}); err == nil {
			t.Errorf("machine id file %s: no error", f)
		}
	}
}

func TestEnrollKeyNeverOverwritten(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.key")
	if _, _, err := loadOrCreateKey(path, false, "x"); err == nil {
		t.Fatal("a missing key without a token: no error")
	}
	k1, created, err := loadOrCreateKey(path, true, "x")
	if err != nil || !created {
		t.Fatalf("create: %v, created %v", err, created)
	}
	k2, created, err := loadOrCreateKey(path, true, "x")
	if err != nil || created || string(k1.PublicKey().Marshal()) != string(k2.PublicKey().Marshal()) {
		t.Fatalf("second start: created %v, err %v, same key %v", created, err, err == nil && string(k1.PublicKey().Marshal()) == string(k2.PublicKey().Marshal()))
	}
}

// TestLearnHostKeys: the relay's next host key is recorded once beside the
// node key and trusted from then on; non-ed25519 or too many keys are not.
func TestLearnHostKeys(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Relay: "relay.example.com:4422", KeyFile: filepath.Join(dir, "node.key")}
	n := &Node{cfg: cfg, log: slog.New(slog.DiscardHandler)}
	next, err := identity.GenerateKey(filepath.Join(dir, "next"), "next")
	if err != nil {
		t.Fatal(err)
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(next.PublicKey())))
	remote := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 4422}
	if learnedHostKey(&n.cfg, cfg.Relay, remote, next.PublicKey()) {
		t.Fatal("trusted before it was announced")
	}
	n.learnHostKeys(&proto.HostKeys{Next: []string{line, "ssh-rsa AAAA garbage"}}, cfg.Relay)
	n.learnHostKeys(&proto.HostKeys{Next: []string{line}}, cfg.Relay)
	data, err := os.ReadFile(cfg.KeyFile + ".known_hosts")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(string(data), "ssh-ed25519"); got != 1 {
		t.Fatalf("recorded %d keys:\n%s\nwant 1", got, data)
	}
	if !learnedHostKey(&n.cfg, cfg.Relay, remote, next.PublicKey()) {
		t.Fatal("the announced key is not trusted")
	}
	other, _ := identity.GenerateKey(filepath.Join(dir, "other"), "other")
	if learnedHostKey(&n.cfg, cfg.Relay, remote, other.PublicKey()) {
		t.Fatal("a key never announced is trusted")
	}
	many := make([]string, proto.MaxHostKeys+1)
	for i := range many {
		k, _ := identity.GenerateKey(filepath.Join(dir, "k"+strconv.Itoa(i)), "k")
		many[i] = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k.PublicKey())))
	}
	n.learnHostKeys(&proto.HostKeys{Next: many}, cfg.Relay)
	if data2, _ := os.ReadFile(cfg.KeyFile + ".known_hosts"); string(data2) != string(data) {
		t.Fatal("more than MaxHostKeys keys were recorded")
	}
}
