package node

import (
	"bytes"
	"errors"
	"io/fs"
	"net"
	"os"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"paradigm/internal/identity"
	"paradigm/internal/proto"
	"paradigm/internal/store"
)

// learnedHostsFile is where a node records the relay host keys the relay
// announced over an authenticated session (HostKeys): beside its own key,
// in OpenSSH known_hosts form.
func learnedHostsFile(cfg *Config) string { return cfg.KeyFile + ".known_hosts" }

// learnedHostKey reports whether key is one the relay announced as its
// next host key.
func learnedHostKey(cfg *Config, relay string, remote net.Addr, key ssh.PublicKey) bool {
	path := learnedHostsFile(cfg)
	if _, err := os.Stat(path); err != nil {
		return false
	}
	check, err := knownhosts.New(path)
	if err != nil {
		return false
	}
	return check(knownhosts.Normalize(relay), remote, key) == nil
}

// learnHostKeys records the next host keys that relay (HOST:PORT as
// configured) announced beside the node key, under its name.
// Only ed25519 keys, at most proto.MaxHostKeys, each once.
func (n *Node) learnHostKeys(m *proto.HostKeys, relay string) {
	if len(m.Next) > proto.MaxHostKeys {
		n.log.Warn("relay announced too many next host keys, ignored", "keys", len(m.Next), "limit", proto.MaxHostKeys)
		return
	}
	path := learnedHostsFile(&n.cfg)
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		n.log.Warn("read learned relay host keys", "err", err)
		return
	}
	data := old
	for _, line := range m.Next {
		key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
		if err != nil || identity.CheckEd25519(key) != nil {
			n.log.Warn("relay announced a next host key that is not an ed25519 key, ignored")
			continue
		}
		entry := knownhosts.Line([]string{knownhosts.Normalize(relay)}, key) + "\n"
		if bytes.Contains(data, []byte(entry)) {
			continue
		}
		data = append(data, entry...)
		n.log.Info("relay's next host key recorded", "fingerprint", identity.Fingerprint(key), "known_hosts", path)
	}
	if len(data) == len(old) {
		return
	}
	if err := store.WriteAtomic(path, data, 0o644); err != nil {
		n.log.Warn("record relay's next host key", "err", err)
	}
}
