package node

import (
	"bufio"
	"fmt"
	"os"
	"strings"
)

// Setting is one "key = value" line of a node config file.
type Setting struct {
	Key, Value string
	Line       int
}

// ReadConfigFile reads a node config file: one "key = value" per line, the
// keys being the long names of `paradigm-node run` flags (a key may repeat
// where the flag does, e.g. service), '#' comments and blank lines allowed.
// Errors name file:line.
//
//	relay = relay.example.com:4422
//	fingerprint = SHA256:...
//	service = ssh=22
func ReadConfigFile(path string) ([]Setting, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	defer f.Close()
	var out []Setting
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	for n := 1; sc.Scan(); n++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || text[0] == '#' {
			continue
		}
		key, value, ok := strings.Cut(text, "=")
		key, value = strings.TrimSpace(key), strings.TrimSpace(value)
		if !ok || key == "" {
			return nil, fmt.Errorf("%s:%d: want key = value, got %q", path, n, text)
		}
		if len(value) >= 2 && value[0] == '"' && value[len(value)-1] == '"' {
			value = value[1 : len(value)-1]
		}
		out = append(out, Setting{Key: key, Value: value, Line: n})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return out, nil
}
