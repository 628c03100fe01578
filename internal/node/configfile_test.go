package node

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// testKeys are the kinds of the keys of `paradigm-node run` that the tests
// use (cmd/node derives the real map from its flags).
var testKeys = map[string]Kind{
	"relay":              KindList,
	"fingerprint":        KindList,
	"name":               KindString,
	"key":                KindString,
	"log-level":          KindString,
	"log-format":         KindString,
	"service":            KindList,
	"keepalive":          KindDuration,
	"backoff-max":        KindDuration,
	"trust-on-first-use": KindBool,
	"procs":              KindInt,
}

func writeConf(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "node.conf")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParseConfigFile(t *testing.T) {
	const text = `# node config
relay = relay.example:4422   # the server
fingerprint = "SHA256:abc"	# pinned
name = "sign#042" # quoted keeps the hash
key = /etc/paradigm/node#1.key
service = ssh=22 # sshd
service = mpd=6600
keepalive = 5s
backoff-max = 1m30s
trust-on-first-use = false
procs = 2
log-level = debug
log-format = json # for the journal
`
	got, err := ParseConfigFile(writeConf(t, text), testKeys)
	if err != nil {
		t.Fatal(err)
	}
	want := []Setting{
		{"relay", "relay.example:4422", 2},
		{"fingerprint", "SHA256:abc", 3},
		{"name", "sign#042", 4},
		{"key", "/etc/paradigm/node#1.key", 5},
		{"service", "ssh=22", 6},
		{"service", "mpd=6600", 7},
		{"keepalive", "5s", 8},
		{"backoff-max", "1m30s", 9},
		{"trust-on-first-use", "false", 10},
		{"procs", "2", 11},
		{"log-level", "debug", 12},
		{"log-format", "json", 13},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v\nwant %v", got, want)
	}
}

func TestParseConfigFileErrors(t *testing.T) {
	for _, tt := range []struct {
		name, content, want string
	}{
		{"unknown key", "relay = x:1\n\nrelay-port = 4422\n", `:3: unknown setting "relay-port"`},
		{"twice", "name = a\nrelay = x:1\n# c\nname = b\n", ":4: name given twice, first on line 1; only fingerprint, relay, service may repeat"},
		{"twice with comment", "keepalive = 5s # a\nkeepalive = 6s\n", ":2: keepalive given twice, first on line 1"},
		{"bare number", "keepalive = 10\n", `:1: keepalive: "10" is not a duration, write 10s`},
		{"bare number commented", "backoff-max = 30   # seconds\n", `:1: backoff-max: "30" is not a duration, write 30s`},
		{"word duration", "keepalive = ten\n", `:1: keepalive: "ten" is not a duration, write a number and a unit, e.g. 10s`},
		{"bool", "trust-on-first-use = yes\n", `:1: trust-on-first-use: "yes" is not a boolean, write true or false`},
		{"int", "procs = two\n", `:1: procs: "two" is not a whole number`},
		{"open quote", "name = \"abc\n", `:1: name: value "abc has no closing double quote`},
		{"text after quote", "name = \"abc\" def\n", `:1: name: "def" after the quoted value`},
		{"no equals", "relay = x:1\n# c\njust words\n", ":3: want key = value"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := writeConf(t, tt.content)
			_, err := ParseConfigFile(p, testKeys)
			if err == nil || !strings.Contains(err.Error(), p+tt.want) {
				t.Fatalf("got %v, want an error containing %q", err, p+tt.want)
			}
		})
	}
}

func TestConfigValue(t *testing.T) {
	for _, tt := range []struct{ raw, want string }{
		{"", ""},
		{"  abc  ", "abc"},
		{"abc # c", "abc"},
		{"abc\t# c", "abc"},
		{"abc#c", "abc#c"},
		{"# only a comment", ""},
		{`"a # b"  # c`, "a # b"},
		{`""`, ""},
		{`"x"#c`, "x"},
		{"a = b # c", "a = b"},
	} {
		got, err := configValue(tt.raw)
		if err != nil || got != tt.want {
			t.Errorf("configValue(%q) = %q, %v; want %q", tt.raw, got, err, tt.want)
		}
	}
}
