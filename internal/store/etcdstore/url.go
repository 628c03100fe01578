package etcdstore

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"

	"paradigm/internal/store"
)

// OpenURL opens the store that an operator names with --store:
// etcd://HOST:PORT[,HOST:PORT...]/PREFIX, with optional PEM files: ca
// (the CA that signed etcd's server certificate; the system's roots if
// empty) and cert and key (this relay's client certificate, for etcd's
// --client-cert-auth; both or neither). Any of the three turns TLS on.
// An empty storeURL returns a nil store.Store and no error: the relay then
// keeps its flat file. It returns the interface so that nil stays nil in
// relay.Config.Store.
func OpenURL(storeURL, ca, cert, key string) (store.Store, error) {
	if storeURL == "" {
		if ca != "" || cert != "" || key != "" {
			return nil, errors.New("--store-ca, --store-cert and --store-key need --store etcd://HOST:PORT/PREFIX")
		}
		return nil, nil
	}
	endpoints, prefix, err := parseURL(storeURL)
	if err != nil {
		return nil, err
	}
	tlsConfig, err := loadTLS(ca, cert, key)
	if err != nil {
		return nil, err
	}
	s, err := Open(endpoints, prefix, tlsConfig)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// parseURL splits etcd://HOST:PORT[,HOST:PORT...]/PREFIX.
func parseURL(s string) (endpoints []string, prefix string, err error) {
	bad := func(why string) error {
		return fmt.Errorf("store %q: %s (want etcd://HOST:PORT[,HOST:PORT...]/PREFIX)", s, why)
	}
	rest, ok := strings.CutPrefix(s, "etcd://")
	if !ok {
		return nil, "", bad("not an etcd:// URL")
	}
	hosts, path, _ := strings.Cut(rest, "/")
	if strings.ContainsAny(path, "?#") {
		return nil, "", bad("query or fragment not allowed")
	}
	prefix = strings.Trim(path, "/")
	if prefix == "" {
		return nil, "", bad("no key prefix")
	}
	if p, err := url.PathUnescape(prefix); err != nil || p != prefix {
		return nil, "", bad("the prefix must be plain text, no %-escapes")
	}
	for h := range strings.SplitSeq(hosts, ",") {
		host, port, err := net.SplitHostPort(h)
		if err != nil || host == "" || port == "" {
			return nil, "", bad(fmt.Sprintf("endpoint %q is not HOST:PORT", h))
		}
		endpoints = append(endpoints, h)
	}
	return endpoints, prefix, nil
}

// loadTLS builds the client TLS configuration from PEM files; nil when
// none is given.
func loadTLS(ca, cert, key string) (*tls.Config, error) {
	if ca == "" && cert == "" && key == "" {
		return nil, nil
	}
	if (cert == "") != (key == "") {
		return nil, errors.New("store TLS: --store-cert and --store-key go together")
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return nil, fmt.Errorf("store CA: %w", err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("store CA %s: no PEM certificate in it", ca)
		}
	}
	if cert != "" {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("store client certificate %s, key %s: %w", cert, key, err)
		}
		c.Certificates = []tls.Certificate{pair}
	}
	return c, nil
}
