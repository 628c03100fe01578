package node

import (
	"bufio"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Setting is one "key = value" line of a node config file.
type Setting struct {
	Key, Value string
	Line       int
}

// ReadConfigFile reads the lines of a node config file: one "key = value"
// per line, blank lines and comments allowed. A comment starts with '#' at
// the start of a line or, after a value, with a '#' that follows a space or
// tab ("service = ssh=22  # the device's sshd"); a value in double quotes
// keeps what is inside them as it is, '#' included. It checks the syntax
// only; ParseConfigFile checks keys and values too. Errors name file:line.
//
//	relay = relay.example.com:4422
//	fingerprint = SHA256:...
//	service = ssh=22    # repeatable
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
		key = strings.TrimSpace(key)
		if !ok || key == "" {
			return nil, fmt.Errorf("%s:%d: want key = value, got %q", path, n, text)
		}
		if value, err = configValue(value); err != nil {
			return nil, fmt.Errorf("%s:%d: %s: %v", path, n, key, err)
		}
		out = append(out, Setting{Key: key, Value: value, Line: n})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return out, nil
}

// configValue returns the value in raw, the text after a line's '=', without
// its comment, surrounding blanks and double quotes.
func configValue(raw string) (string, error) {
	raw = strings.TrimSpace(raw)
	if strings.HasPrefix(raw, `"`) {
		end := strings.IndexByte(raw[1:], '"')
		if end < 0 {
			return "", fmt.Errorf("value %s has no closing double quote", raw)
		}
		value, rest := raw[1:1+end], strings.TrimSpace(raw[2+end:])
		if rest != "" && rest[0] != '#' {
			return "", fmt.Errorf("%q after the quoted value: want nothing or a # comment", rest)
		}
		return value, nil
	}
	if strings.HasPrefix(raw, "#") {
		return "", nil
	}
	for i := 1; i < len(raw); i++ {
		if raw[i] == '#' && (raw[i-1] == ' ' || raw[i-1] == '\t') {
			return strings.TrimSpace(raw[:i]), nil
		}
	}
	return raw, nil
}

// Kind is what a config file key holds, so ParseConfigFile can check values
// before they reach the flags.
type Kind uint8

const (
	KindString   Kind = iota // any text, one line per key
	KindList                 // any text, the key may repeat (service, relay, fingerprint)
	KindDuration             // a Go duration: 10s, 1m30s
	KindBool                 // true or false
	KindInt                  // a whole number
)

// ParseConfigFile reads a node config file as ReadConfigFile does and checks
// each setting against keys, the keys the file may hold (the long names of
// `paradigm-node run` flags) and their kinds: an unknown key, a key given
// twice (unless it is a KindList: each line adds to the list, and a value
// may hold several, comma-separated, as the flag does), and a value its kind does not take are
// errors naming file:line and the form wanted.
func ParseConfigFile(path string, keys map[string]Kind) ([]Setting, error) {
	settings, err := ReadConfigFile(path)
	if err != nil {
		return nil, err
	}
	first := map[string]int{}
	for _, s := range settings {
		kind, ok := keys[s.Key]
		if !ok {
			return nil, fmt.Errorf("%s:%d: unknown setting %q", path, s.Line, s.Key)
		}
		if line, ok := first[s.Key]; ok && kind != KindList {
			return nil, fmt.Errorf("%s:%d: %s given twice, first on line %d; only %s may repeat", path, s.Line, s.Key, line, listKeys(keys))
		}
		first[s.Key] = s.Line
		if err := checkValue(kind, s.Value); err != nil {
			return nil, fmt.Errorf("%s:%d: %s: %v", path, s.Line, s.Key, err)
		}
	}
	return settings, nil
}

// listKeys names the keys that may repeat, for an error message.
func listKeys(keys map[string]Kind) string {
	var names []string
	for k, kind := range keys {
		if kind == KindList {
			names = append(names, k)
		}
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

// checkValue reports whether v is a value of kind, saying the form wanted
// when it is not.
func checkValue(kind Kind, v string) error {
	switch kind {
	case KindDuration:
		if _, err := time.ParseDuration(v); err == nil {
			return nil
		}
		if _, err := strconv.ParseUint(v, 10, 32); err == nil {
			return fmt.Errorf("%q is not a duration, write %ss", v, v)
		}
		return fmt.Errorf("%q is not a duration, write a number and a unit, e.g. 10s, 2m or 1m30s", v)
	case KindBool:
		if _, err := strconv.ParseBool(v); err != nil {
			return fmt.Errorf("%q is not a boolean, write true or false", v)
		}
	case KindInt:
		if _, err := strconv.ParseInt(v, 0, 64); err != nil {
			return fmt.Errorf("%q is not a whole number", v)
		}
	}
	return nil
}
