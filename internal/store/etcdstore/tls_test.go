package etcdstore

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"paradigm/internal/store"
	"paradigm/internal/store/etcdstore/etcdtest"
)

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string // its certificate, PEM
}

func newCA(t *testing.T, dir, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &testCA{cert: cert, key: key, file: filepath.Join(dir, name+".pem")}
	writePEM(t, ca.file, "CERTIFICATE", der)
	return ca
}

// issue writes a certificate and key signed by ca and returns their files.
func (ca *testCA) issue(t *testing.T, dir, name string, usage x509.ExtKeyUsage) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "PRIVATE KEY", keyDER)
	return certFile, keyFile
}

func writePEM(t *testing.T, path, kind string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestTLS: with etcd requiring TLS client certificates, the store given
// --store-ca, --store-cert and --store-key works; without a client
// certificate, or trusting another CA, it fails with an error in time.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, dir, "ca")
	serverCert, serverKey := ca.issue(t, dir, "etcd", x509.ExtKeyUsageServerAuth)
	clientCert, clientKey := ca.issue(t, dir, "relay", x509.ExtKeyUsageClientAuth)
	health, err := loadTLS(ca.file, clientCert, clientKey)
	if err != nil {
		t.Fatal(err)
	}
	e := etcdtest.StartTLS(t, etcdtest.TLS{CertFile: serverCert, KeyFile: serverKey, ClientCAFile: ca.file, Client: health})
	url := "etcd://" + e.Client + "/tls"
	ctx := context.Background()

	s, err := OpenURL(url, ca.file, clientCert, clientKey)
	if err != nil {
		t.Fatal(err)
	}
	defer s.(*Store).Close()
	a := store.Assignment{Playnode: "pi", Service: "ssh", Portalias: 2201}
	if _, err := s.Update(ctx, func(t *store.Table) error { return t.Set(a) }); err != nil {
		t.Fatalf("Update over TLS: %v", err)
	}
	if tab, err := s.Load(ctx); err != nil || tab.Len() != 1 {
		t.Fatalf("Load over TLS: %v, %v; want 1 assignment", tab, err)
	}

	other := newCA(t, dir, "other")
	for _, tc := range []struct{ name, ca, cert, key string }{
		{"no client certificate", ca.file, "", ""},
		{"another CA", other.file, clientCert, clientKey},
	} {
		s, err := OpenURL(url, tc.ca, tc.cert, tc.key)
		if err != nil {
			t.Fatal(err)
		}
		s.(*Store).Timeout = 2 * time.Second
		if _, err := s.Load(ctx); err == nil {
			t.Errorf("%s: Load succeeded, want a TLS failure", tc.name)
		} else {
			t.Logf("%s: %v", tc.name, err)
		}
		s.(*Store).Close()
	}
}
