package admin_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"paradigm/internal/admin"
)

// selfSigned writes a certificate for 127.0.0.1 and its key, PEM.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "relay"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

func TestTLS(t *testing.T) {
	certFile, keyFile, pool := selfSigned(t)
	f := newFixture(t, nil, func(c *admin.Config) { c.TLSCert, c.TLSKey = certFile, keyFile })
	if !strings.HasPrefix(f.url, "https://") {
		t.Fatalf("URL %s: want https", f.url)
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := client.Get(f.url + "/api/v1/playnodes")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET over TLS: got %d", resp.StatusCode)
	}
	plain := "http://" + strings.TrimPrefix(f.url, "https://")
	if resp, err := http.Get(plain + "/api/v1/playnodes"); err == nil && resp.StatusCode == 200 {
		resp.Body.Close()
		t.Fatalf("plain HTTP on the TLS endpoint: got 200")
	}
}

func TestTLSConfigErrors(t *testing.T) {
	certFile, _, _ := selfSigned(t)
	for _, tt := range []struct {
		name string
		edit func(*admin.Config)
		want string
	}{
		{"cert without key", func(c *admin.Config) { c.TLSCert = certFile }, "go together"},
		{"missing files", func(c *admin.Config) { c.TLSCert, c.TLSKey = "/nonexistent/c", "/nonexistent/k" }, "--admin-tls-cert"},
		{"empty token file", func(c *admin.Config) {
			p := filepath.Join(t.TempDir(), "tokens")
			os.WriteFile(p, []byte("# none\n\n"), 0o600)
			c.TokenFile = p
		}, "no token in it"},
		{"short token", func(c *admin.Config) {
			p := filepath.Join(t.TempDir(), "tokens")
			os.WriteFile(p, []byte("# ok\nshort\n"), 0o600)
			c.TokenFile = p
		}, "tokens:2"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := newRelayOnly(t)
			cfg := admin.Config{Relay: r, Listen: "127.0.0.1:0"}
			tt.edit(&cfg)
			_, err := admin.New(cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error with %q", err, tt.want)
			}
		})
	}
}
