package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

func TestGenerateLoadRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.key")
	signer, err := GenerateKey(path, "signage-042")
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("key mode: got %o, want 600", got)
	}
	loaded, err := LoadKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := Fingerprint(loaded.PublicKey()), Fingerprint(signer.PublicKey()); got != want {
		t.Errorf("loaded key fingerprint: got %s, want %s", got, want)
	}
	pub, comment, err := ParsePublic(path + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := Fingerprint(pub), Fingerprint(signer.PublicKey()); got != want {
		t.Errorf(".pub fingerprint: got %s, want %s", got, want)
	}
	if comment != "signage-042" {
		t.Errorf(".pub comment: got %q, want %q", comment, "signage-042")
	}
	if _, err := GenerateKey(path, "again"); err == nil {
		t.Error("GenerateKey over an existing key: got nil error, want a refusal")
	}
}

func TestLoadOrCreateKeepsKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "host_key")
	first, err := LoadOrCreate(path, "relay")
	if err != nil {
		t.Fatal(err)
	}
	second, err := LoadOrCreate(path, "relay")
	if err != nil {
		t.Fatal(err)
	}
	if Fingerprint(first.PublicKey()) != Fingerprint(second.PublicKey()) {
		t.Error("LoadOrCreate made a new key although one existed")
	}
}

func TestLoadKeyErrors(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage")
	os.WriteFile(garbage, []byte("not a key\n"), 0o600)
	for _, path := range []string{filepath.Join(dir, "missing"), garbage} {
		if _, err := LoadKey(path); err == nil || !strings.Contains(err.Error(), filepath.Base(path)) {
			t.Errorf("LoadKey(%s): got %v, want an error naming the file", path, err)
		}
	}
}

func TestParsePublicErrors(t *testing.T) {
	for _, arg := range []string{
		"ssh-ed25519 AAAAnotbase64!!",
		"/nonexistent/key.pub",
		`command="sh" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEmS/vBoIQSxqG53US+uDwwADdR3oXyKSLZe0RrJTGj7`,
		"",
	} {
		if _, _, err := ParsePublic(arg); err == nil {
			t.Errorf("ParsePublic(%q): got nil error, want one", arg)
		}
	}
}

// TestSSHKeygenInterop checks both directions with OpenSSH's own tool: it
// reads our key files, and we read its keys.
func TestSSHKeygenInterop(t *testing.T) {
	keygen, err := exec.LookPath("ssh-keygen")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("ssh-keygen not installed")
		}
		t.Skip("ssh-keygen not installed")
	}
	dir := t.TempDir()
	ours := filepath.Join(dir, "ours")
	signer, err := GenerateKey(ours, "ours")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(keygen, "-l", "-f", ours).CombinedOutput()
	if err != nil {
		t.Fatalf("ssh-keygen -l -f our key: %v: %s", err, out)
	}
	if want := Fingerprint(signer.PublicKey()); !strings.Contains(string(out), want) {
		t.Errorf("ssh-keygen fingerprint: got %q, want it to contain %s", out, want)
	}
	theirs := filepath.Join(dir, "theirs")
	if out, err := exec.Command(keygen, "-q", "-t", "ed25519", "-N", "", "-f", theirs).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen -t ed25519: %v: %s", err, out)
	}
	if _, err := LoadKey(theirs); err != nil {
		t.Errorf("LoadKey(ssh-keygen key): %v", err)
	}
	if _, _, err := ParsePublic(theirs + ".pub"); err != nil {
		t.Errorf("ParsePublic(ssh-keygen .pub): %v", err)
	}
}

// writeOtherKeys writes an RSA and an ECDSA key in OpenSSH format, as
// ssh-keygen -t rsa and -t ecdsa would, and returns their paths.
func writeOtherKeys(t *testing.T) map[string]string {
	t.Helper()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	paths := map[string]string{}
	for typ, key := range map[string]crypto.PrivateKey{ssh.KeyAlgoRSA: rsaKey, ssh.KeyAlgoECDSA256: ecKey} {
		block, err := ssh.MarshalPrivateKey(key, typ)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "id")
		if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
		paths[typ] = path
	}
	return paths
}

// TestRefusesOtherKeyTypes: RSA and ECDSA keys are refused when loaded and
// when given as public lines, with ErrNotEd25519 and the key's type.
func TestRefusesOtherKeyTypes(t *testing.T) {
	for typ, path := range writeOtherKeys(t) {
		_, err := LoadKey(path)
		if !errors.Is(err, ErrNotEd25519) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), typ) {
			t.Errorf("LoadKey(%s key): got %v, want ErrNotEd25519 naming the file and %s", typ, err, typ)
		}
		raw, err := loadRawKey(path)
		if err != nil {
			t.Fatal(err)
		}
		signer, err := ssh.NewSignerFromKey(raw)
		if err != nil {
			t.Fatal(err)
		}
		line := PublicLine(signer.PublicKey(), "x")
		if _, _, err := ParsePublic(line); !errors.Is(err, ErrNotEd25519) {
			t.Errorf("ParsePublic(%s line): got %v, want ErrNotEd25519", typ, err)
		}
		if err := CheckEd25519(signer.PublicKey()); !errors.Is(err, ErrNotEd25519) || !strings.Contains(err.Error(), Fingerprint(signer.PublicKey())) {
			t.Errorf("CheckEd25519(%s): got %v, want ErrNotEd25519 naming the fingerprint", typ, err)
		}
	}
	signer, err := GenerateKey(filepath.Join(t.TempDir(), "ok"), "ok")
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckEd25519(signer.PublicKey()); err != nil {
		t.Errorf("CheckEd25519(ed25519): %v", err)
	}
}
