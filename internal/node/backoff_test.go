package node

import (
	"context"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"paradigm/internal/identity"
)

// countHandler counts the records with one message.
type countHandler struct {
	msg string
	n   *atomic.Int64
}

func (h countHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h countHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.n.Add(1)
	}
	return nil
}
func (h countHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h countHandler) WithGroup(string) slog.Handler      { return h }

// TestBackoffPacesReconnects: against a relay that refuses every
// connection, the node's waits double from 0.5 s up to BackoffMax, with
// jitter in [d/2, d]; virtual time, so the ten minutes take none.
func TestBackoffPacesReconnects(t *testing.T) {
	// A port with nothing listening: each dial is refused at once.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	keyFile := newKey(t, "dev1")
	synctest.Test(t, func(t *testing.T) {
		var attempts atomic.Int64
		n, err := New(Config{Relay: addr, Fingerprint: identity.Fingerprint(hostKey(t).PublicKey()), KeyFile: keyFile,
			Name: "dev1", Services: []Service{{"ssh", "127.0.0.1:22"}}, BackoffMax: 30 * time.Second,
			Logger: slog.New(countHandler{"disconnected from relay", &attempts})})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- n.Run(ctx) }()
		// Waits: [0.25,0.5] [0.5,1] [1,2] [2,4] [4,8] [8,16] [15,30] then [15,30] each.
		time.Sleep(10 * time.Minute)
		synctest.Wait()
		got := attempts.Load()
		// The first six take 31.5 s at most and 15.75 s at least; the rest
		// of the ten minutes holds between 19 and 39 capped waits.
		if got < 6+19 || got > 6+39+1 {
			t.Errorf("%d attempts in ten minutes, want between 25 and 46", got)
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}
