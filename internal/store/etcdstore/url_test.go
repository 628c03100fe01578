package etcdstore

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		in        string
		endpoints []string
		prefix    string
		err       string
	}{
		{in: "etcd://127.0.0.1:2379/paradigm", endpoints: []string{"127.0.0.1:2379"}, prefix: "paradigm"},
		{in: "etcd://a:2379,b:2379,[::1]:2379/fleet/prod/", endpoints: []string{"a:2379", "b:2379", "[::1]:2379"}, prefix: "fleet/prod"},
		{in: "http://127.0.0.1:2379/p", err: "not an etcd:// URL"},
		{in: "etcd://127.0.0.1:2379", err: "no key prefix"},
		{in: "etcd://127.0.0.1:2379/", err: "no key prefix"},
		{in: "etcd://127.0.0.1/p", err: `endpoint "127.0.0.1" is not HOST:PORT`},
		{in: "etcd://a:1,,b:2/p", err: `endpoint "" is not HOST:PORT`},
		{in: "etcd://a:1/p?x=1", err: "query or fragment"},
		{in: "etcd://a:1/p%2Fq", err: "no %-escapes"},
	} {
		endpoints, prefix, err := parseURL(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("parseURL(%q): got error %v, want one saying %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || !slices.Equal(endpoints, tc.endpoints) || prefix != tc.prefix {
			t.Errorf("parseURL(%q) = %q, %q, %v; want %q, %q", tc.in, endpoints, prefix, err, tc.endpoints, tc.prefix)
		}
	}
}

func TestLoadTLSErrors(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ca, cert, key, err string
	}{
		{cert: "c.pem", err: "go together"},
		{key: "k.pem", err: "go together"},
		{ca: filepath.Join(dir, "missing.pem"), err: "missing.pem"},
		{ca: notPEM, err: "no PEM certificate"},
		{cert: filepath.Join(dir, "c.pem"), key: filepath.Join(dir, "k.pem"), err: "store client certificate"},
	} {
		if _, err := loadTLS(tc.ca, tc.cert, tc.key); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("loadTLS(%q, %q, %q): got %v, want an error saying %q", tc.ca, tc.cert, tc.key, err, tc.err)
		}
	}
	if _, err := OpenURL("", "ca.pem", "", ""); err == nil || !strings.Contains(err.Error(), "need --store") {
		t.Errorf("OpenURL with TLS files but no store: got %v, want an error saying they need --store", err)
	}
	if s, err := OpenURL("", "", "", ""); s != nil || err != nil {
		t.Errorf("OpenURL without a store: got %v, %v; want nil, nil (the flat file)", s, err)
	}
	if c, err := loadTLS("", "", ""); c != nil || err != nil {
		t.Errorf("loadTLS with no file: got %v, %v; want plain TCP (nil, nil)", c, err)
	}
}
