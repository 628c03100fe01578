package node

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
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
