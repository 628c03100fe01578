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
// relay.Config.Store. OpenShared gives the relay's documents too.
func OpenURL(storeURL, ca, cert, key string) (store.Store, error) {
	sh, err := OpenShared(storeURL, ca, cert, key)
	return sh.Store(), err
}

// Shared is everything relays share in one etcd, over one connection:
// the portalias table and the documents (authorized playnodes, enrollment
// tokens, pending list). A nil *Shared is no etcd at all: its Store and
// Docs are nil, so that relay.Config keeps its flat files.
type Shared struct {
	s *Store
}

// OpenShared opens what --store names, as OpenURL does; an empty storeURL
// returns a nil *Shared and no error.
func OpenShared(storeURL, ca, cert, key string) (*Shared, error) {
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
	return &Shared{s: s}, nil
}

// Store is the portalias table, nil for a nil Shared.
func (sh *Shared) Store() store.Store {
	if sh == nil {
		return nil
	}
	return sh.s
}

// Docs are the relay's documents, nil for a nil Shared.
func (sh *Shared) Docs() store.Docs {
	if sh == nil {
		return nil
	}
	return sh.s.Docs()
}

// Close releases the connection; Watch calls in progress return.
func (sh *Shared) Close() error {
	if sh == nil {
		return nil
	}
	return sh.s.Close()
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
