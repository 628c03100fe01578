package relay

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"

	"paradigm/internal/identity"
	"paradigm/internal/proto"
	"paradigm/internal/store"
)

// Host key rotation. The relay may hold a next host key beside its own
// (HostKeyNextFile, made by paradigm-relay hostkey next). Every node that
// asks for it (Hello.HostKeys) is told the next key over its session and
// records it, so that after hostkey promote (the next key becomes the host
// key, the old one is kept as HostKeyPreviousFile) and a restart every node
// still trusts the relay.
const (
	HostKeyNextFile     = "host_key.next"
	HostKeyPreviousFile = "host_key.previous"
)

// NextHostKey creates the next host key of dataDir, if there is none, and
// returns its fingerprint.
func NextHostKey(dataDir string) (string, error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", fmt.Errorf("create data folder: %w", err)
	}
	k, err := identity.LoadOrCreate(filepath.Join(dataDir, HostKeyNextFile), "paradigm-relay")
	if err != nil {
		return "", fmt.Errorf("next host key: %w", err)
	}
	return identity.Fingerprint(k.PublicKey()), nil
}

// PromoteHostKey makes the next host key the host key; the current one is
// kept as HostKeyPreviousFile. The relay serves with the new key from its
// next start.
func PromoteHostKey(dataDir string) (string, error) {
	next := filepath.Join(dataDir, HostKeyNextFile)
	k, err := identity.LoadKey(next)
	if errors.Is(err, fs.ErrNotExist) {
		return "", errors.New("no next host key: run paradigm-relay hostkey next first, and let the nodes learn it")
	}
	if err != nil {
		return "", err
	}
	cur := filepath.Join(dataDir, HostKeyFile)
	prev := filepath.Join(dataDir, HostKeyPreviousFile)
	for _, mv := range [][2]string{{cur, prev}, {cur + ".pub", prev + ".pub"}, {next, cur}, {next + ".pub", cur + ".pub"}} {
		if err := os.Rename(mv[0], mv[1]); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("promote host key: %w", err)
		}
	}
	return fmt.Sprintf("host key is now %s; restart the relay to serve with it (the previous key is kept in %s)", identity.Fingerprint(k.PublicKey()), prev), nil
}

// nextHostKeys caches the next host key's public line, re-read when its
// file changes. Its mutex is a leaf.
type nextHostKeys struct {
	mu     sync.Mutex
	stamp  store.Stamp
	read   bool
	lines  []string
	pushed []string // what pushHostKeys last told the sessions
}

// current returns the next host keys (none, or one).
func (n *nextHostKeys) current(dataDir string) []string {
	path := filepath.Join(dataDir, HostKeyNextFile+".pub")
	st := store.StampOf(path)
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.read && st == n.stamp {
		return n.lines
	}
	var lines []string
	if data, err := os.ReadFile(path); err == nil {
		if key, _, _, _, err := ssh.ParseAuthorizedKey(data); err == nil && identity.CheckEd25519(key) == nil {
			lines = []string{strings.TrimSpace(string(ssh.MarshalAuthorizedKey(key)))}
		}
	}
	n.read, n.stamp, n.lines = true, st, lines
	return lines
}

// changed returns the next host keys if they differ from what it last
// returned.
func (n *nextHostKeys) changed(dataDir string) ([]string, bool) {
	lines := n.current(dataDir)
	n.mu.Lock()
	defer n.mu.Unlock()
	if slices.Equal(lines, n.pushed) {
		return nil, false
	}
	n.pushed = lines
	return lines, true
}

// sendHostKeys queues the next host keys to s, if its hello asked for them.
func (r *Relay) sendHostKeys(s *nodeSession) {
	if lines := r.nextKeys.current(r.cfg.DataDir); len(lines) > 0 {
		s.queueHostKeys(lines)
	}
}

// pushHostKeys tells every session that takes them when the next host key
// changed (created, or gone after a promote). Called every reload interval.
func (r *Relay) pushHostKeys() {
	lines, changed := r.nextKeys.changed(r.cfg.DataDir)
	if !changed {
		return
	}
	r.log.Info("next host key changed, telling the playnodes", "keys", len(lines))
	for _, s := range r.reg.sessions() {
		s.queueHostKeys(lines)
	}
}

// queueHostKeys queues a HostKeys message unless the session ended or its
// node does not take them.
func (s *nodeSession) queueHostKeys(lines []string) {
	s.ctrlMu.Lock()
	defer s.ctrlMu.Unlock()
	if s.ended != nil || !s.hostKeys || !s.welcomed {
		return
	}
	s.queueLocked(&proto.HostKeys{Next: lines})
}
