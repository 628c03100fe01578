package node

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"paradigm/internal/proto"
)

// FuzzReadConfigFile feeds the node config reader arbitrary files, every
// service value in them to ParseService, and the file to ParseConfigFile:
// none may panic, what they accept must be well formed, and their errors
// name the file (and the line, for ParseConfigFile).
func FuzzReadConfigFile(f *testing.F) {
	for _, s := range []string{
		"",
		"relay = relay.example.com:4422\nfingerprint = SHA256:abc\nkey = /etc/paradigm/node.key\nservice = ssh=22\nservice = mpd=127.0.0.1:6600\n",
		"# comment\n\n  name = \"signage 042\"  \n",
		"no equals sign\n",
		"= value\n",
		"service = web=[::1]:8080\n",
		"service = x=host:\n",
		strings.Repeat("k=v", 30000),
		"\x00=\xff\n",
		"keepalive = 10 # seconds\nkeepalive = 5s\n",
		"name = \"a # b\" # c\ntrust-on-first-use = yes\nprocs = 0x10\n",
		"backoff-max = 1m30s\nlog-format = json\nservice = a=1 #x\nservice = b=2\n",
		"name = \"open\n",
	} {
		f.Add([]byte(s))
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(dir, "node.conf")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		settings, err := ReadConfigFile(path)
		if err != nil {
			if !strings.Contains(err.Error(), path) {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		last := 0
		for _, s := range settings {
			if s.Key == "" || strings.Contains(s.Key, "=") || s.Line <= last {
				t.Fatalf("bad setting %+v after line %d", s, last)
			}
			last = s.Line
			checkService(t, s.Value)
		}
		checked, err := ParseConfigFile(path, testKeys)
		if err != nil {
			if !strings.Contains(err.Error(), path+":") {
				t.Fatalf("error does not name file:line: %v", err)
			}
			return
		}
		seen := map[string]bool{}
		for _, s := range checked {
			kind, ok := testKeys[s.Key]
			if !ok || (seen[s.Key] && kind != KindList) {
				t.Fatalf("accepted unknown or repeated key %+v", s)
			}
			seen[s.Key] = true
			if err := checkValue(kind, s.Value); err != nil {
				t.Fatalf("accepted %+v: %v", s, err)
			}
		}
	})
}

// FuzzParseService checks ParseService alone, on short inputs.
func FuzzParseService(f *testing.F) {
	for _, s := range []string{"ssh=22", "mpd=127.0.0.1:6600", "web=[::1]:8080", "x=0", "x=65536", "=22", "a=b=c", "x=:22", "x=host:"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) { checkService(t, s) })
}

// checkService: an accepted service has a valid name and a dialable
// HOST:PORT with a port in 1-65535.
func checkService(t *testing.T, s string) {
	t.Helper()
	svc, err := ParseService(s)
	if err != nil {
		return
	}
	if err := proto.ValidateName("service", svc.Name); err != nil {
		t.Fatalf("ParseService(%q) accepted name %q: %v", s, svc.Name, err)
	}
	host, port, err := net.SplitHostPort(svc.Addr)
	if err != nil || host == "" {
		t.Fatalf("ParseService(%q): address %q does not split: %v", s, svc.Addr, err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		t.Fatalf("ParseService(%q): port %q", s, port)
	}
}
