// Package identity holds the ed25519 keys that identify the relay and each
// playnode: generation and loading in OpenSSH format (so ssh-keygen keys work
// too) and the SHA256 fingerprints operators pin and authorize.
package identity

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"golang.org/x/crypto/ssh"
)

// LoadOrCreate reads the key at path, creating it (and path.pub) when
// there is none yet: the relay's host key on first start.
func LoadOrCreate(path, comment string) (ssh.Signer, error) {
	signer, err := LoadKey(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return signer, err
	}
	return GenerateKey(path, comment)
}

// ErrNotEd25519 is wrapped by the errors of LoadKey, ParsePublic and
// CheckEd25519 for an RSA, ECDSA or other non-ed25519 key. paradigm takes
// ed25519 keys only: one key type for the whole fleet, the one `keygen`
// writes and the QUIC transport signs with, so a key that works over SSH
// never fails over QUIC.
var ErrNotEd25519 = errors.New("paradigm takes ed25519 keys only")

// CheckEd25519 returns an error wrapping ErrNotEd25519 unless key is an
// ed25519 key.
func CheckEd25519(key ssh.PublicKey) error {
	if key.Type() == ssh.KeyAlgoED25519 {
		return nil
	}
	return fmt.Errorf("%s key %s: %w; create one with paradigm-node keygen (or ssh-keygen -t ed25519)", key.Type(), Fingerprint(key), ErrNotEd25519)
}

// Fingerprint is the key's SHA256 fingerprint as OpenSSH prints it
// ("SHA256:..."), the form operators pin with --fingerprint.
func Fingerprint(key ssh.PublicKey) string { return ssh.FingerprintSHA256(key) }

// ParsePublic reads a public key from an authorized_keys-style line
// ("ssh-ed25519 AAAA... comment") or, when arg names a file, from its first
// line, as `paradigm-relay authorize` accepts either.
func ParsePublic(arg string) (ssh.PublicKey, string, error) {
	text := arg
	if !strings.HasPrefix(strings.TrimSpace(arg), "ssh-") && !strings.HasPrefix(strings.TrimSpace(arg), "ecdsa-") {
		data, err := os.ReadFile(arg)
		if err != nil {
			return nil, "", fmt.Errorf("public key %q is neither a key line nor a readable file: %w", arg, err)
		}
		text = string(data)
	}
	key, comment, options, _, err := ssh.ParseAuthorizedKey([]byte(text))
	if err != nil {
		return nil, "", fmt.Errorf("parse public key %.40q: %w", arg, err)
	}
	if len(options) > 0 {
		return nil, "", fmt.Errorf("public key %.40q: give the bare key line, without options", arg)
	}
	if err := CheckEd25519(key); err != nil {
		return nil, "", fmt.Errorf("public key %.40q: %w", arg, err)
	}
	return key, comment, nil
}

// LoadKey reads an OpenSSH-format ed25519 private key (as written by
// GenerateKey or ssh-keygen -t ed25519, without a passphrase); other key
// types are refused with ErrNotEd25519.
func LoadKey(path string) (ssh.Signer, error) {
	raw, err := loadRawKey(path)
	if err != nil {
		return nil, err
	}
	signer, err := ssh.NewSignerFromKey(raw)
	if err != nil {
		return nil, fmt.Errorf("parse key %s: %w", path, err)
	}
	if err := CheckEd25519(signer.PublicKey()); err != nil {
		return nil, fmt.Errorf("key %s: %w", path, err)
	}
	return signer, nil
}

// loadRawKey reads and parses an OpenSSH-format private key file; LoadKey
// and LoadEd25519 differ only in what they make of the key.
func loadRawKey(path string) (any, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read key: %w", err)
	}
	raw, err := ssh.ParseRawPrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("parse key %s: %w", path, err)
	}
	return raw, nil
}

// GenerateKey creates a new ed25519 key at path (mode 0600, refusing to
// overwrite an existing file) and its public line at path.pub.
func GenerateKey(path, comment string) (ssh.Signer, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create key: %w", err)
	}
	if _, err := f.Write(pem.EncodeToMemory(block)); err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("write key %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("write key %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("write key %s: %w", path, err)
	}
	pub := PublicLine(signer.PublicKey(), comment)
	if err := os.WriteFile(path+".pub", []byte(pub+"\n"), 0o644); err != nil {
		return nil, fmt.Errorf("write public key: %w", err)
	}
	return signer, nil
}

// PublicLine formats key as an authorized_keys line without options.
func PublicLine(key ssh.PublicKey, comment string) string {
	line := string(ssh.MarshalAuthorizedKey(key))
	line = line[:len(line)-1] // MarshalAuthorizedKey ends with a newline
	if comment != "" {
		line += " " + comment
	}
	return line
}
