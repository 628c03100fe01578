package admin_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"paradigm/internal/admin"
	"paradigm/internal/relay"
)

// verify is what a receiver does with a delivery (README shows the same).
func verify(secret []byte, r *http.Request, body []byte) bool {
	var ts, sig string
	for _, part := range strings.Split(r.Header.Get(admin.SignatureHeader), ",") {
		k, v, _ := strings.Cut(part, "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sig = v
		}
	}
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts + "." + string(body)))
	want := hex.EncodeToString(m.Sum(nil))
	return ts != "" && hmac.Equal([]byte(sig), []byte(want))
}

func TestWebhookDelivery(t *testing.T) {
	secret := []byte("s3cret-s3cret-s3cret")
	secretFile := filepath.Join(t.TempDir(), "webhook.secret")
	if err := os.WriteFile(secretFile, append(secret, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []relay.Event
	arrived := make(chan struct{}, 100)
	good := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if !verify(secret, r, body) {
			t.Errorf("delivery %s: signature %q does not verify", body, r.Header.Get(admin.SignatureHeader))
			w.WriteHeader(401)
			return
		}
		var e relay.Event
		json.Unmarshal(body, &e)
		if r.Header.Get(admin.EventHeader) != string(e.Kind) {
			t.Errorf("%s header %q, event kind %q", admin.EventHeader, r.Header.Get(admin.EventHeader), e.Kind)
		}
		mu.Lock()
		got = append(got, e)
		mu.Unlock()
		arrived <- struct{}{}
	}))
	defer good.Close()
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(500)
	}))
	defer failing.Close()

	f := newFixture(t, []string{"p1"}, func(c *admin.Config) {
		c.Webhooks = []string{failing.URL, good.URL}
		c.WebhookSecretFile = secretFile
		c.WebhookGrace = 0
	})
	echo := echoService(t)
	stop := f.startNode("p1", "web="+echo)
	f.waitOnline("p1", true)
	stop()
	f.waitOnline("p1", false)
	var kinds []string
	for len(kinds) < 3 {
		<-arrived
		mu.Lock()
		kinds = kinds[:0]
		for _, e := range got {
			kinds = append(kinds, string(e.Kind))
		}
		mu.Unlock()
	}
	// In order for p1, the failing receiver notwithstanding.
	want := "portalias-assigned,up,down"
	if strings.Join(kinds, ",") != want {
		t.Fatalf("deliveries: got %v, want %s", kinds, want)
	}
	// The relay keeps serving while a receiver fails.
	code, _ := f.do("GET", "/api/v1/playnodes", "", "")
	if code != 200 {
		t.Fatalf("API while a receiver fails: got %d", code)
	}
}

func TestWebhookConfig(t *testing.T) {
	r, err := relay.New(relay.Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	short := filepath.Join(t.TempDir(), "short")
	os.WriteFile(short, []byte("abc\n"), 0o600)
	for _, tt := range []struct {
		hooks  []string
		secret string
		want   string
	}{
		{[]string{"http://127.0.0.1:1/x"}, "", "--webhook-secret"},
		{[]string{"http://127.0.0.1:1/x"}, short, "want a secret of 16"},
		{[]string{"ftp://example/x"}, "", "--webhook-secret"},
	} {
		_, err := admin.New(admin.Config{Relay: r, Listen: "127.0.0.1:0", Webhooks: tt.hooks, WebhookSecretFile: tt.secret})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v %q: got %v, want an error with %q", tt.hooks, tt.secret, err, tt.want)
		}
	}
}

// TestWebhookHangingReceiverRealRelay: a receiver that never answers costs
// a bounded queue; the relay and its API keep serving and stop promptly.
func TestWebhookHangingReceiverRealRelay(t *testing.T) {
	secretFile := filepath.Join(t.TempDir(), "webhook.secret")
	os.WriteFile(secretFile, []byte("s3cret-s3cret-s3cret\n"), 0o600)
	release := make(chan struct{})
	hanging := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer hanging.Close()
	defer close(release)
	f := newFixture(t, []string{"p1"}, func(c *admin.Config) {
		c.Webhooks = []string{hanging.URL}
		c.WebhookSecretFile = secretFile
		c.WebhookGrace = 0
		c.WebhookQueue = 2
	})
	echo := echoService(t)
	for range 5 {
		stop := f.startNode("p1", "web="+echo)
		f.waitOnline("p1", true)
		stop()
		f.waitOnline("p1", false)
	}
	code, _ := f.do("GET", "/api/v1/playnodes/p1", "", "")
	if code != 200 {
		t.Fatalf("API with a hanging receiver: got %d", code)
	}
	f.stop() // returns despite the request in flight (the fixture fails the test otherwise)
}
