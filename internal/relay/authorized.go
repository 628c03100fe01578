package relay

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"golang.org/x/crypto/ssh"

	"paradigm/internal/identity"
	"paradigm/internal/lockfile"
	"paradigm/internal/proto"
	"paradigm/internal/store"
)

// AuthorizedFile is the authorized-nodes file inside the data folder. It uses
// OpenSSH authorized_keys syntax with one option, playnode="NAME", which binds
// the key to exactly one playnode:
//
//	playnode="signage-042" ssh-ed25519 AAAAC3Nza... signage-042
//
// Deleting a line revokes that playnode, also while it is connected.
const AuthorizedFile = "authorized_nodes"

const authorizedHeader = `# paradigm-relay authorized nodes: one line per playnode, OpenSSH authorized_keys
# syntax with the option playnode="NAME" binding the key to that playnode's name.
# Delete a line to revoke a playnode; the running relay notices within seconds.
`

// authorizedNode is one line of the authorized-nodes file.
type authorizedNode struct {
	playnode string
	key      ssh.PublicKey
	line     int
}

// authorizedSet maps keys to the one playnode each may act as.
type authorizedSet struct {
	byKey  map[string]authorizedNode // by string(key.Marshal())
	byName map[string]authorizedNode
}

// lookup returns the playnode name bound to key.
func (a *authorizedSet) lookup(key ssh.PublicKey) (string, bool) {
	n, ok := a.byKey[string(key.Marshal())]
	return n.playnode, ok
}

// parseAuthorized reads an authorized-nodes file; errors name file:line.
func parseAuthorized(data []byte, name string) (*authorizedSet, error) {
	set := &authorizedSet{byKey: map[string]authorizedNode{}, byName: map[string]authorizedNode{}}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	for lineNo := 1; sc.Scan(); lineNo++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || text[0] == '#' {
			continue
		}
		key, _, options, _, err := ssh.ParseAuthorizedKey([]byte(text))
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %v", name, lineNo, err)
		}
		if err := identity.CheckEd25519(key); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, lineNo, err)
		}
		playnode := ""
		for _, opt := range options {
			v, ok := strings.CutPrefix(opt, "playnode=")
			if !ok {
				return nil, fmt.Errorf("%s:%d: option %q is not supported (only playnode=\"NAME\")", name, lineNo, opt)
			}
			if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
				return nil, fmt.Errorf("%s:%d: option %s: the name must be in double quotes", name, lineNo, opt)
			}
			playnode = v[1 : len(v)-1]
		}
		if playnode == "" {
			return nil, fmt.Errorf("%s:%d: no playnode=\"NAME\" option before the key", name, lineNo)
		}
		if err := proto.ValidateName("playnode", playnode); err != nil {
			return nil, fmt.Errorf("%s:%d: %v", name, lineNo, err)
		}
		n := authorizedNode{playnode: playnode, key: key, line: lineNo}
		if prev, ok := set.byKey[string(key.Marshal())]; ok {
			return nil, fmt.Errorf("%s:%d: key %s is already authorized on line %d", name, lineNo, identity.Fingerprint(key), prev.line)
		}
		if prev, ok := set.byName[playnode]; ok {
			return nil, fmt.Errorf("%s:%d: playnode %q is already bound to another key on line %d", name, lineNo, playnode, prev.line)
		}
		set.byKey[string(key.Marshal())] = n
		set.byName[playnode] = n
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return set, nil
}

// loadAuthorized reads the authorized-nodes file; a missing file is an
// empty set (no playnode may connect yet).
func loadAuthorized(path string) (*authorizedSet, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return parseAuthorized(nil, path)
	}
	if err != nil {
		return nil, fmt.Errorf("read authorized nodes: %w", err)
	}
	return parseAuthorized(data, path)
}

// ErrAlreadyAuthorized reports that Authorize found the same key already
// bound to the same playnode: nothing to do.
var ErrAlreadyAuthorized = errors.New("already authorized")

// Authorize binds key to playnode in the authorized-nodes file at path,
// refusing a malformed file, a key bound to another name and a name bound to
// another key. It holds path.lock while it reads and rewrites the file
// atomically, so concurrent calls do not lose each other's lines.
func Authorize(path, playnode string, key ssh.PublicKey, comment string) error {
	if err := proto.ValidateName("playnode", playnode); err != nil {
		return err
	}
	if err := identity.CheckEd25519(key); err != nil {
		return err
	}
	lock, err := lockfile.AcquireFor(path, "authorized nodes")
	if err != nil {
		return err
	}
	defer lock.Release()

	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("read authorized nodes: %w", err)
	}
	set, err := parseAuthorized(data, path)
	if err != nil {
		return err
	}
	if n, ok := set.byKey[string(key.Marshal())]; ok {
		if n.playnode == playnode {
			return fmt.Errorf("key %s for playnode %q: %w (%s:%d)", identity.Fingerprint(key), playnode, ErrAlreadyAuthorized, path, n.line)
		}
		return fmt.Errorf("key %s is already bound to playnode %q (%s:%d); one key per playnode", identity.Fingerprint(key), n.playnode, path, n.line)
	}
	if n, ok := set.byName[playnode]; ok {
		return fmt.Errorf("playnode %q is already bound to key %s (%s:%d); remove that line first to re-key it", playnode, identity.Fingerprint(n.key), path, n.line)
	}
	if len(data) == 0 {
		data = []byte(authorizedHeader)
	} else if data[len(data)-1] != '\n' {
		data = append(data, '\n')
	}
	if comment == "" {
		comment = playnode
	}
	data = fmt.Appendf(data, "playnode=%q %s\n", playnode, identity.PublicLine(key, comment))
	return store.WriteAtomic(path, data, 0o644)
}
