package identity

import (
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"time"

	"golang.org/x/crypto/ssh"
)

// The certificate's validity is fixed and unbounded (RFC 5280 4.1.2.5: 99991231235959Z
// means "no well-defined expiration date"): trust is in the pinned or
// authorized key, never in dates, so there is nothing to renew.
var (
	certNotBefore = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	certNotAfter  = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)
)

// TLSCertificate derives the QUIC identity of an ed25519 key: a self-signed
// X.509 certificate carrying the key, with commonName as subject (the
// playnode name for a node). Every field is derived from the key and the
// name, and ed25519 signatures are deterministic, so the same inputs give
// the same certificate: nothing to store, rotate or hand to a CA.
func TLSCertificate(key ed25519.PrivateKey, commonName string) (tls.Certificate, error) {
	if len(key) != ed25519.PrivateKeySize {
		return tls.Certificate{}, fmt.Errorf("derive certificate: ed25519 key of %d bytes, want %d", len(key), ed25519.PrivateKeySize)
	}
	pub := key.Public().(ed25519.PublicKey)
	sum := sha256.Sum256(pub)
	tmpl := &x509.Certificate{
		SerialNumber:          new(big.Int).SetBytes(sum[:16]),
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             certNotBefore,
		NotAfter:              certNotAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(nil, tmpl, tmpl, pub, key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("derive certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("derive certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// CertificateKey checks that cert is a self-signed ed25519 certificate, as
// TLSCertificate makes them, and returns its key in SSH form, ready for the
// same HostKeyCallback or Authorize that SSH uses.
//
// The self-signature proves little on its own (a certificate is public and
// can be replayed); it rejects malformed or tampered certificates early.
// Possession of the private key is proven by the TLS 1.3 handshake itself:
// the peer's CertificateVerify message is a signature, with the
// certificate's key, over the transcript of this very handshake (both
// randoms and key shares included), and crypto/tls checks it against the
// certificate's key before the handshake completes. So the certificate is
// only a container for the key, and the key is the identity, as in SSH.
// The signature is checked with CheckSignature rather than
// CheckSignatureFrom(cert), which would also demand CA basic constraints
// that a leaf should not carry; the cryptographic check is the same.
func CertificateKey(cert *x509.Certificate) (ssh.PublicKey, error) {
	pub, ok := cert.PublicKey.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("certificate key is %T, want ed25519", cert.PublicKey)
	}
	if err := cert.CheckSignature(cert.SignatureAlgorithm, cert.RawTBSCertificate, cert.Signature); err != nil {
		return nil, fmt.Errorf("certificate is not self-signed by its key: %w", err)
	}
	key, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("certificate key: %w", err)
	}
	return key, nil
}

// LoadEd25519 reads the raw ed25519 private key from an OpenSSH-format file
// (the same file LoadKey reads), for the QUIC transport, which signs with the
// key through crypto/tls rather than through an ssh.Signer.
func LoadEd25519(path string) (ed25519.PrivateKey, error) {
	raw, err := loadRawKey(path)
	if err != nil {
		return nil, err
	}
	switch k := raw.(type) {
	case *ed25519.PrivateKey: // what x/crypto/ssh returns for OpenSSH keys
		return *k, nil
	case ed25519.PrivateKey:
		return k, nil
	}
	return nil, fmt.Errorf("parse key %s: %T is not an ed25519 key", path, raw)
}
