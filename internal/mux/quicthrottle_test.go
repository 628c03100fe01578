package mux_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"log/slog"
	"math/big"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"paradigm/internal/logthrottle"
	"paradigm/internal/mux"
	"paradigm/internal/mux/muxtest"
)

// warnRecorder is a slog.Handler that keeps the reason attribute of each
// record.
type warnRecorder struct {
	mu      sync.Mutex
	reasons []string
}

func (r *warnRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *warnRecorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *warnRecorder) WithGroup(string) slog.Handler            { return r }
func (r *warnRecorder) Handle(_ context.Context, rec slog.Record) error {
	reason := ""
	rec.Attrs(func(a slog.Attr) bool {
		if a.Key == "reason" {
			reason = a.Value.String()
		}
		return true
	})
	r.mu.Lock()
	r.reasons = append(r.reasons, reason)
	r.mu.Unlock()
	return nil
}

// ecdsaCert is a self-signed ECDSA certificate: well-formed, but not the
// ed25519 certificate a node presents.
func ecdsaCert(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "intruder"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestQUICBadCertificateThrottled: a peer that redials with a certificate
// the relay refuses gets one log line per interval through Throttle, and
// every attempt is counted.
func TestQUICBadCertificateThrottled(t *testing.T) {
	const attempts = 5
	var rec warnRecorder
	throttle := logthrottle.New(slog.New(&rec), logthrottle.Config{})
	e := newQUICEnv(t, func(e *quicEnv) { e.server.Throttle = throttle })
	cert := ecdsaCert(t)
	for range attempts {
		tr := &quic.Transport{Conn: listenUDP(t, "127.0.0.1:0")}
		ctx, cancel := context.WithTimeout(t.Context(), muxtest.Timeout)
		conn, err := tr.Dial(ctx, e.ln.Addr(), &tls.Config{
			InsecureSkipVerify: true,
			NextProtos:         []string{mux.ALPN},
			Certificates:       []tls.Certificate{cert},
		}, nil)
		if err == nil { // TLS 1.3: the client may finish before the relay refuses
			select {
			case <-conn.Context().Done():
			case <-ctx.Done():
				t.Fatal("connection with an ECDSA certificate still alive")
			}
		}
		cancel()
		tr.Close()
	}
	if got := throttle.Counts()[mux.ReasonBadCertificate]; got != attempts {
		t.Errorf("Counts[%q] = %d, want %d", mux.ReasonBadCertificate, got, attempts)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.reasons) != 1 || rec.reasons[0] != mux.ReasonBadCertificate {
		t.Errorf("logged %q, want one line with reason %q", rec.reasons, mux.ReasonBadCertificate)
	}
}
