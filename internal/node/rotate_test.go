package node

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"paradigm/internal/identity"
)

// TestHostKeyRotation is the README's procedure for a new relay host key:
// while a node's known_hosts carries both the old and the new key for the
// relay, it accepts either, so the relay can switch keys with no node
// locked out; once the old line is removed, only the new key passes.
func TestHostKeyRotation(t *testing.T) {
	oldKey, newKey, stranger := hostKey(t), hostKey(t), hostKey(t)
	const relay = "relay.example:4422"
	kh := filepath.Join(t.TempDir(), "known_hosts")
	oldLine := knownhosts.Line([]string{knownhosts.Normalize(relay)}, oldKey.PublicKey()) + "\n"
	newLine := knownhosts.Line([]string{knownhosts.Normalize(relay)}, newKey.PublicKey()) + "\n"
	if err := os.WriteFile(kh, []byte(oldLine+newLine), 0o600); err != nil {
		t.Fatal(err)
	}
	log, _ := newLog(t, "node")
	check := hostKeyCallback(&Config{Relay: relay, KnownHosts: kh}, log)
	for name, k := range map[string]ssh.Signer{"old": oldKey, "new": newKey} {
		key := k.PublicKey()
		if err := check(relay, relayAddr, key); err != nil {
			t.Errorf("during the change, the %s key (%s): %v", name, identity.Fingerprint(key), err)
		}
	}
	if err := check(relay, relayAddr, stranger.PublicKey()); !errors.Is(err, ErrHostKey) {
		t.Errorf("during the change, another key: got %v, want ErrHostKey", err)
	}

	if err := os.WriteFile(kh, []byte(newLine), 0o600); err != nil {
		t.Fatal(err)
	}
	check = hostKeyCallback(&Config{Relay: relay, KnownHosts: kh}, log)
	if err := check(relay, relayAddr, newKey.PublicKey()); err != nil {
		t.Errorf("after the change, the new key: %v", err)
	}
	if err := check(relay, relayAddr, oldKey.PublicKey()); !errors.Is(err, ErrHostKey) {
		t.Errorf("after the change, the old key: got %v, want ErrHostKey", err)
	}
}
