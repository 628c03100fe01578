package node

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"paradigm/internal/proto"
)

func TestParseService(t *testing.T) {
	tests := []struct {
		in      string
		want    Service
		wantErr string
	}{
		{in: "ssh=22", want: Service{"ssh", "127.0.0.1:22"}},
		{in: "web=192.168.1.10:8080", want: Service{"web", "192.168.1.10:8080"}},
		{in: "cam=[::1]:554", want: Service{"cam", "[::1]:554"}},
		{in: "vnc=localhost:5900", want: Service{"vnc", "localhost:5900"}},
		{in: "a.b_c-d=65535", want: Service{"a.b_c-d", "127.0.0.1:65535"}},
		{in: "ssh", wantErr: "want NAME=[HOST:]PORT"},
		{in: "=22", wantErr: "service name is empty"},
		{in: "bad name=22", wantErr: "not allowed"},
		{in: "-x=22", wantErr: "not allowed"},
		{in: "ssh=0", wantErr: "not a port number"},
		{in: "ssh=65536", wantErr: "not a port number"},
		{in: "ssh=port", wantErr: "not a port number"},
		{in: "ssh=", wantErr: "not a port number"},
		{in: "ssh=:22", wantErr: "empty host"},
		{in: "ssh=host:", wantErr: "not a port number"},
		{in: "ssh=::1:22", wantErr: "too many colons"},
		{in: "ssh=host:22:33", wantErr: "too many colons"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseService(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %+v, %v; want an error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestReadConfigFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.conf", "# node config\n\nrelay = relay.example:4422\n  fingerprint=\"SHA256:abc\"  \nservice = ssh=22\nservice=web = 8080\nname = \n")
	got, err := ReadConfigFile(good)
	if err != nil {
		t.Fatal(err)
	}
	want := []Setting{
		{"relay", "relay.example:4422", 3},
		{"fingerprint", "SHA256:abc", 4},
		{"service", "ssh=22", 5},
		{"service", "web = 8080", 6},
		{"name", "", 7},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v, want %v", got, want)
	}

	bad := []struct {
		name, content, want string
	}{
		{"no equals", "relay = x:1\n# c\njust words\n", ":3: want key = value"},
		{"empty key", "\n = value\n", ":2: want key = value"},
		{"long line", "relay = x:1\nname = " + strings.Repeat("a", 70<<10) + "\n", "too long"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			p := write(strings.ReplaceAll(tt.name, " ", "_")+".conf", tt.content)
			_, err := ReadConfigFile(p)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), p) {
				t.Fatalf("got %v, want an error naming %s and containing %q", err, p, tt.want)
			}
		})
	}
	if _, err := ReadConfigFile(filepath.Join(dir, "missing.conf")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: got %v, want ErrNotExist", err)
	}
}

func TestConfigValidation(t *testing.T) {
	keyFile := newKey(t, "dev1")
	valid := func() Config {
		return Config{
			Relay:       "relay.example:4422",
			Fingerprint: "SHA256:abc",
			KeyFile:     keyFile,
			Name:        "dev1",
			Services:    []Service{{"ssh", "127.0.0.1:22"}},
		}
	}
	many := make([]Service, proto.MaxServices+1)
	for i := range many {
		many[i] = Service{fmt.Sprintf("s%d", i), "127.0.0.1:22"}
	}
	tests := []struct {
		name    string
		edit    func(*Config)
		wantErr string
	}{
		{"valid", func(*Config) {}, ""},
		{"known hosts only", func(c *Config) { c.Fingerprint, c.KnownHosts = "", "kh" }, ""},
		{"trust on first use", func(c *Config) { c.Fingerprint, c.KnownHosts, c.TrustOnFirstUse = "", "kh", true }, ""},
		{"64 services", func(c *Config) { c.Services = many[:proto.MaxServices] }, ""},
		{"no relay", func(c *Config) { c.Relay = "" }, "no relay address"},
		{"relay without port", func(c *Config) { c.Relay = "relay.example" }, "missing port"},
		{"relays only", func(c *Config) { c.Relay, c.Relays = "", []string{"a.example:1", "b.example:1"} }, ""},
		{"second relay without port", func(c *Config) { c.Relays = []string{"b.example"} }, `relay address "b.example"`},
		{"relay without host", func(c *Config) { c.Relays = []string{":4422"} }, "empty host"},
		{"relay and relays", func(c *Config) { c.Relays = []string{"relay.example:4422"}; c.Relay = "x.example:1" }, ""},
		{"relay twice in the list", func(c *Config) { c.Relays = []string{"b.example:1", "b.example:1"} }, `"b.example:1" given twice`},
		{"too many relays", func(c *Config) {
			for i := range MaxRelays {
				c.Relays = append(c.Relays, fmt.Sprintf("r%d.example:1", i))
			}
		}, "at most 16"},
		{"negative prefer-first-after", func(c *Config) { c.PreferFirstAfter = -time.Second }, "prefer-first-after"},
		{"no key", func(c *Config) { c.KeyFile = "" }, "no key file"},
		{"key missing", func(c *Config) { c.KeyFile = filepath.Join(t.TempDir(), "nokey") }, "no such file"},
		{"no name", func(c *Config) { c.Name = "" }, "playnode name is empty"},
		{"bad name", func(c *Config) { c.Name = "dev 1" }, "not allowed"},
		{"no services", func(c *Config) { c.Services = nil }, "no service given"},
		{"too many services", func(c *Config) { c.Services = many }, "at most 64"},
		{"service twice", func(c *Config) { c.Services = append(c.Services, Service{"ssh", "127.0.0.1:2222"}) }, `"ssh" given twice`},
		{"no host key check", func(c *Config) { c.Fingerprint = "" }, "no way to verify"},
		{"tofu without known hosts", func(c *Config) { c.TrustOnFirstUse = true }, "needs --known-hosts"},
		{"fingerprint not sha256", func(c *Config) { c.Fingerprint = "MD5:aa:bb" }, "SHA256:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := valid()
			tt.edit(&cfg)
			n, err := New(cfg)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				if n.cfg.Keepalive <= 0 || n.cfg.BackoffMax <= 0 || n.cfg.HandshakeTimeout <= 0 || n.cfg.DialTimeout <= 0 || n.cfg.Logger == nil {
					t.Fatalf("defaults not filled: %+v", n.cfg)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	b := backoff{max: 4 * time.Second}
	for i, d := range []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second} {
		got := b.next()
		if got < d/2 || got > d {
			t.Fatalf("wait %d: got %v, want within [%v, %v]", i, got, d/2, d)
		}
	}
	b.reset()
	if got := b.next(); got > 500*time.Millisecond {
		t.Fatalf("after reset: got %v, want at most 500ms", got)
	}
}
