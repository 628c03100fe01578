package admin_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"paradigm/internal/admin"
	"paradigm/internal/identity"
	"paradigm/internal/node"
	"paradigm/internal/relay"
	"paradigm/internal/testenv"
)

// TestPendingAPI: an enrollment held for approval is listed by GET
// /api/v1/pending and admitted by POST .../approve (token required); an
// unknown name is a JSON 404, a read without a token from loopback works.
func TestPendingAPI(t *testing.T) {
	f := newFixture(t, nil, nil)
	tok, _, err := relay.CreateToken(f.cfg.DataDir, relay.TokenOptions{Uses: 2, Approve: true}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	lg, _ := testenv.NewLog(t, "node kiosk-9", slog.LevelDebug)
	n, err := node.New(node.Config{
		Relay: f.relay.Addr().String(), Fingerprint: identity.Fingerprint(f.relay.HostKey()),
		KeyFile: filepath.Join(t.TempDir(), "kiosk-9.key"), EnrollToken: tok, Name: "kiosk-9",
		Services: []node.Service{{Name: "web", Addr: echoService(t)}}, BackoffMax: 200 * time.Millisecond,
		RefusedRetry: 200 * time.Millisecond, Logger: lg,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); n.Run(ctx) }()
	defer func() { cancel(); <-done }()

	var list admin.PendingList
	testenv.WaitFor(t, waitTimeout, "the enrollment in GET /api/v1/pending", func() bool {
		code, b := f.do("GET", "/api/v1/pending", "", "")
		return code == http.StatusOK && json.Unmarshal(b, &list) == nil && len(list.Pending) == 1
	})
	if p := list.Pending[0]; p.Playnode != "kiosk-9" || p.State != relay.StatePending {
		t.Fatalf("pending %+v, want kiosk-9 pending", p)
	}
	code, b := f.do("POST", "/api/v1/pending/kiosk-9/approve", "", "")
	wantError(t, "approve without a token", code, b, http.StatusUnauthorized, "")
	code, b = f.do("POST", "/api/v1/pending/nobody/approve", f.token, "")
	wantError(t, "approve an unknown name", code, b, http.StatusNotFound, "no pending enrollment")
	if code, b = f.do("POST", "/api/v1/pending/kiosk-9/approve", f.token, ""); code != http.StatusOK {
		t.Fatalf("approve: %d %s", code, b)
	}
	f.waitOnline("kiosk-9", true)
}
