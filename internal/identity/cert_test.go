package identity

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"path/filepath"
	"testing"

	"golang.org/x/crypto/ssh"
)

func TestTLSCertificate(t *testing.T) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	a, err := TLSCertificate(priv, "player-1")
	if err != nil {
		t.Fatal(err)
	}
	b, err := TLSCertificate(priv, "player-1")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Certificate[0], b.Certificate[0]) {
		t.Error("two derivations from the same key differ, want identical certificates")
	}
	if cn := a.Leaf.Subject.CommonName; cn != "player-1" {
		t.Errorf("CommonName = %q, want player-1", cn)
	}
	key, err := CertificateKey(a.Leaf)
	if err != nil {
		t.Fatalf("CertificateKey: %v", err)
	}
	want, _ := ssh.NewPublicKey(priv.Public())
	if Fingerprint(key) != Fingerprint(want) {
		t.Errorf("CertificateKey = %s, want %s", Fingerprint(key), Fingerprint(want))
	}
}

func TestCertificateKeyRejectsBrokenSignature(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	good, err := TLSCertificate(priv, "relay")
	if err != nil {
		t.Fatal(err)
	}
	tampered := bytes.Clone(good.Certificate[0])
	tampered[len(tampered)-1] ^= 1 // last byte of the signature
	cert, err := x509.ParseCertificate(tampered)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := CertificateKey(cert); err == nil {
		t.Error("CertificateKey accepted a broken self-signature")
	}
}

func TestLoadEd25519(t *testing.T) {
	path := filepath.Join(t.TempDir(), "key")
	signer, err := GenerateKey(path, "test")
	if err != nil {
		t.Fatal(err)
	}
	priv, err := LoadEd25519(path)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := ssh.NewPublicKey(priv.Public())
	if Fingerprint(pub) != Fingerprint(signer.PublicKey()) {
		t.Errorf("LoadEd25519 key %s, want %s", Fingerprint(pub), Fingerprint(signer.PublicKey()))
	}
}
