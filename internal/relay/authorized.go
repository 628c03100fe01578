package relay

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"paradigm/internal/identity"
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

// Site is where a relay's authorization lives: the authorized playnodes
// (AuthorizedFile), the enrollment tokens (TokensFile) and the pending list
// (PendingFile). The operator's commands take one, whether or not a relay
// runs; a running relay has its own (Relay.Site).
//
// Without Docs they are the flat files in DataDir, as they have always
// been. With Docs from a shared store (etcdstore.Shared.Docs) they are the
// cluster's: every relay on that store authorizes, enrolls and revokes from
// the same documents, and a revocation written on any of them cuts the
// playnode wherever it is connected.
//
// An update that changes several documents lists them in one order, the
// order of the file locks: TokensFile, PendingFile, AuthorizedFile.
type Site struct {
	// DataDir is the relay's data folder: its status file (for Nodes) and,
	// without Docs, the documents.
	DataDir string
	// Docs holds the documents; nil means the flat files in DataDir.
	Docs store.Docs
}

// docs returns the documents of s.
func (s Site) docs() store.Docs {
	if s.Docs != nil {
		return s.Docs
	}
	return fileDocs(s.DataDir, 0)
}

// fileDocs are the flat files in dataDir, polled every poll by Watch. The
// token file holds hashes of secrets: it is created readable by its owner
// only.
func fileDocs(dataDir string, poll time.Duration) *store.FileDocs {
	return &store.FileDocs{Dir: dataDir, PollInterval: poll, Modes: map[string]fs.FileMode{TokensFile: 0o600}}
}

// docTimeout bounds one operator command's read or update of the
// documents beyond the store's own bounds (a file lock's wait, etcd's
// timeout).
const docTimeout = 30 * time.Second

// docCtx is the context of an operator command's document access.
func docCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), docTimeout)
}

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
	err := eachLine(data, name, func(lineNo int, text string) error {
		key, _, options, _, err := ssh.ParseAuthorizedKey([]byte(text))
		if err != nil {
			return err
		}
		if err := identity.CheckEd25519(key); err != nil {
			return err
		}
		playnode := ""
		for _, opt := range options {
			v, ok := strings.CutPrefix(opt, "playnode=")
			if !ok {
				return fmt.Errorf("option %q is not supported (only playnode=\"NAME\")", opt)
			}
			if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
				return fmt.Errorf("option %s: the name must be in double quotes", opt)
			}
			playnode = v[1 : len(v)-1]
		}
		if playnode == "" {
			return fmt.Errorf("no playnode=\"NAME\" option before the key")
		}
		if err := proto.ValidateName("playnode", playnode); err != nil {
			return err
		}
		n := authorizedNode{playnode: playnode, key: key, line: lineNo}
		if prev, ok := set.byKey[string(key.Marshal())]; ok {
			return fmt.Errorf("key %s is already authorized on line %d", identity.Fingerprint(key), prev.line)
		}
		if prev, ok := set.byName[playnode]; ok {
			return fmt.Errorf("playnode %q is already bound to another key on line %d", playnode, prev.line)
		}
		set.byKey[string(key.Marshal())] = n
		set.byName[playnode] = n
		return nil
	})
	if err != nil {
		return nil, err
	}
	return set, nil
}

// readAuthorized reads the authorized-nodes document of d; a missing one
// is an empty set (no playnode may connect yet). It returns the text too.
func readAuthorized(ctx context.Context, d store.Docs) (*authorizedSet, []byte, error) {
	data, err := d.Read(ctx, AuthorizedFile)
	if err != nil {
		return nil, nil, fmt.Errorf("read authorized nodes: %w", err)
	}
	set, err := parseAuthorized(data, d.Where(AuthorizedFile))
	return set, data, err
}

// ErrAlreadyAuthorized reports that Authorize found the same key already
// bound to the same playnode: nothing to do.
var ErrAlreadyAuthorized = errors.New("already authorized")

// Authorize binds key to playnode in the authorized-nodes file at path: the
// flat-file form of Site.Authorize, for a data folder without a shared
// store.
func Authorize(path, playnode string, key ssh.PublicKey, comment string) error {
	d := fileDocs(filepath.Dir(path), 0)
	return authorizeIn(d, filepath.Base(path), playnode, key, comment)
}

// Authorize binds key to playnode, refusing a malformed document, a key
// bound to another name and a name bound to another key. Concurrent calls,
// on this relay or another sharing the store, do not lose each other's
// lines.
func (s Site) Authorize(playnode string, key ssh.PublicKey, comment string) error {
	return authorizeIn(s.docs(), AuthorizedFile, playnode, key, comment)
}

// AuthorizeNode binds the public key given as a line or a .pub file (arg)
// to playnode, and returns what to tell the operator: the Site form of the
// operator's `authorize`.
func (s Site) AuthorizeNode(playnode, arg string) (string, error) {
	key, comment, err := identity.ParsePublic(arg)
	if err != nil {
		return "", err
	}
	err = s.Authorize(playnode, key, comment)
	if errors.Is(err, ErrAlreadyAuthorized) {
		return err.Error(), nil
	}
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("authorized playnode %s with key %s", playnode, identity.Fingerprint(key)), nil
}

func authorizeIn(d store.Docs, name, playnode string, key ssh.PublicKey, comment string) error {
	if err := proto.ValidateName("playnode", playnode); err != nil {
		return err
	}
	if err := identity.CheckEd25519(key); err != nil {
		return err
	}
	ctx, cancel := docCtx()
	defer cancel()
	return d.Update(ctx, []string{name}, func(cur map[string][]byte) (map[string][]byte, error) {
		data, err := addAuthorized(cur[name], d.Where(name), playnode, key, comment)
		if err != nil {
			return nil, err
		}
		return map[string][]byte{name: data}, nil
	})
}

// addAuthorized returns the authorized-nodes text data (at where) with a
// line binding key to playnode appended; the rest stays byte for byte.
func addAuthorized(data []byte, where, playnode string, key ssh.PublicKey, comment string) ([]byte, error) {
	set, err := parseAuthorized(data, where)
	if err != nil {
		return nil, err
	}
	if n, ok := set.byKey[string(key.Marshal())]; ok {
		if n.playnode == playnode {
			return nil, fmt.Errorf("key %s for playnode %q: %w (%s:%d)", identity.Fingerprint(key), playnode, ErrAlreadyAuthorized, where, n.line)
		}
		return nil, fmt.Errorf("key %s is already bound to playnode %q (%s:%d); one key per playnode", identity.Fingerprint(key), n.playnode, where, n.line)
	}
	if n, ok := set.byName[playnode]; ok {
		return nil, fmt.Errorf("playnode %q is already bound to key %s (%s:%d); remove that line first to re-key it", playnode, identity.Fingerprint(n.key), where, n.line)
	}
	out := slices.Clone(data)
	if len(out) == 0 {
		out = []byte(authorizedHeader)
	} else if out[len(out)-1] != '\n' {
		out = append(out, '\n')
	}
	if comment == "" {
		comment = playnode
	}
	return fmt.Appendf(out, "playnode=%q %s\n", playnode, identity.PublicLine(key, comment)), nil
}

// removeAuthorized returns data (at where) without playnode's line, and
// that line's binding; the rest stays byte for byte.
func removeAuthorized(data []byte, where, playnode string) ([]byte, authorizedNode, error) {
	set, err := parseAuthorized(data, where)
	if err != nil {
		return nil, authorizedNode{}, err
	}
	n, ok := set.byName[playnode]
	if !ok {
		return nil, authorizedNode{}, fmt.Errorf("playnode %q is not in %s (see paradigm-relay nodes)", playnode, where)
	}
	lines := bytes.SplitAfter(data, []byte("\n"))
	return slices.Concat(slices.Concat(lines[:n.line-1]...), slices.Concat(lines[n.line:]...)), n, nil
}

// eachLine calls fn with each line of one of the relay's documents
// (authorized nodes, tokens, pending list) that is neither blank nor a
// comment, trimmed, with its number; an error fn returns is prefixed with
// name:line, as every error about such a document is.
func eachLine(data []byte, name string, fn func(lineNo int, text string) error) error {
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	for lineNo := 1; sc.Scan(); lineNo++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || text[0] == '#' {
			continue
		}
		if err := fn(lineNo, text); err != nil {
			return fmt.Errorf("%s:%d: %w", name, lineNo, err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}
