package admin

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"paradigm/internal/relay"
)

// fakeReceiver is an in-memory webhook receiver: answer decides each
// request's fate (a status code, or block until the request is cancelled
// when it returns 0).
type fakeReceiver struct {
	mu     sync.Mutex
	got    []relay.Event
	at     []time.Time
	calls  int
	answer func(call int) int
}

func (f *fakeReceiver) RoundTrip(req *http.Request) (*http.Response, error) {
	body, _ := io.ReadAll(req.Body)
	f.mu.Lock()
	f.calls++
	code := 200
	if f.answer != nil {
		code = f.answer(f.calls)
	}
	if code == 200 {
		var e relay.Event
		json.Unmarshal(body, &e)
		f.got = append(f.got, e)
		f.at = append(f.at, time.Now())
	}
	f.mu.Unlock()
	if code == 0 {
		<-req.Context().Done()
		return nil, req.Context().Err()
	}
	return &http.Response{StatusCode: code, Body: http.NoBody, Header: http.Header{}, Request: req}, nil
}

func (f *fakeReceiver) events() []relay.Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]relay.Event(nil), f.got...)
}

func testHooks(t *testing.T, rt http.RoundTripper, edit func(*Config)) *webhooks {
	t.Helper()
	secret := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secret, []byte("0123456789abcdef0123\n"), 0o600)
	cfg := Config{Webhooks: []string{"http://receiver.invalid/hook"}, WebhookSecretFile: secret, WebhookGrace: 30 * time.Second,
		WebhookTransport: rt, Logger: slog.New(slog.DiscardHandler)}
	if edit != nil {
		edit(&cfg)
	}
	h, err := newWebhooks(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// run serves h on a channel of events in the bubble; stop ends it.
func runHooks(h *webhooks) (c chan relay.Event, stop func()) {
	return runHooksAs(h, "")
}

// runHooksAs is runHooks for a relay with id self in its cluster.
func runHooksAs(h *webhooks, self string) (c chan relay.Event, stop func()) {
	c = make(chan relay.Event, 64)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.serve(ctx, c, self)
	}()
	return c, func() {
		cancel()
		<-done
	}
}

func ev(seq uint64, kind relay.EventKind, playnode string) relay.Event {
	e := relay.Event{Seq: seq, Kind: kind, Playnode: playnode, Time: time.Now()}
	if kind == relay.EventDown {
		e.Reason = relay.ReasonLinkLost
	}
	return e
}

func kinds(evs []relay.Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, string(e.Kind)+" "+e.Playnode)
	}
	return out
}

// TestWebhookClusterOwnSessions: a relay of a cluster sends its own
// sessions' events only, so that one webhook configured on every relay
// hears each event once; a playnode that moves to another relay within
// the grace sends no down from the relay it left.
func TestWebhookClusterOwnSessions(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rcv := &fakeReceiver{}
		h := testHooks(t, rcv, nil)
		c, stop := runHooksAs(h, "relay-a")
		defer stop()
		at := func(e relay.Event, rl string) relay.Event { e.Relay = rl; return e }
		c <- at(ev(1, relay.EventUp, "mine"), "relay-a")
		c <- at(ev(2, relay.EventUp, "theirs"), "relay-b")
		c <- at(ev(3, relay.EventDown, "mine"), "relay-a") // it moves to relay-b:
		c <- at(ev(4, relay.EventUp, "mine"), "relay-b")   // relay-b reports that
		c <- at(ev(5, relay.EventDown, "theirs"), "relay-b")
		c <- ev(6, relay.EventPortaliasAssigned, "new") // not a session's: every relay
		time.Sleep(time.Minute)
		synctest.Wait()
		got := kinds(rcv.events())
		if want := []string{"up mine", "portalias-assigned new"}; !slices.Equal(got, want) {
			t.Fatalf("got %v, want %v", got, want)
		}
	})
}

func TestWebhookGrace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rcv := &fakeReceiver{}
		h := testHooks(t, rcv, nil)
		c, stop := runHooks(h)
		defer stop()

		c <- ev(1, relay.EventUp, "a")
		c <- ev(2, relay.EventUp, "b")
		// a flaps: down and up again within the grace: nothing is sent.
		c <- ev(3, relay.EventDown, "a")
		time.Sleep(10 * time.Second)
		c <- ev(4, relay.EventUp, "a")
		// b goes down and stays down: one down, after the grace.
		c <- ev(5, relay.EventDown, "b")
		start := time.Now()
		c <- ev(6, relay.EventPortaliasRemoved, "b") // waits behind b's down
		synctest.Wait()
		if got := kinds(rcv.events()); len(got) != 2 {
			t.Fatalf("before the grace: got %v, want the two ups only", got)
		}
		time.Sleep(31 * time.Second)
		synctest.Wait()
		got := rcv.events()
		want := []string{"up a", "up b", "down b", "portalias-removed b"}
		if g := kinds(got); len(g) != len(want) || g[2] != want[2] || g[3] != want[3] {
			t.Fatalf("got %v, want %v", g, want)
		}
		rcv.mu.Lock()
		if d := rcv.at[2].Sub(start); d != 30*time.Second {
			t.Errorf("down sent %v after it happened, want the grace, 30s", d)
		}
		rcv.mu.Unlock()
		// A shutdown is not the device's doing: no down.
		c <- relay.Event{Seq: 7, Kind: relay.EventDown, Playnode: "a", Reason: relay.ReasonShutdown}
		time.Sleep(time.Minute)
		synctest.Wait()
		if n := len(rcv.events()); n != 4 {
			t.Errorf("after a shutdown down: got %d deliveries, want 4", n)
		}
	})
}

func TestWebhookRetry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rcv := &fakeReceiver{answer: func(call int) int {
			if call <= 2 {
				return 500
			}
			return 200
		}}
		h := testHooks(t, rcv, func(c *Config) { c.WebhookGrace = 0 })
		c, stop := runHooks(h)
		defer stop()
		start := time.Now()
		c <- ev(1, relay.EventDown, "a")
		c <- ev(2, relay.EventUp, "a")
		time.Sleep(time.Minute)
		synctest.Wait()
		got := rcv.events()
		if g := kinds(got); len(g) != 2 || g[0] != "down a" || g[1] != "up a" {
			t.Fatalf("got %v, want down a then up a", g)
		}
		// 500, wait 1s, 500, wait 2s, 200.
		rcv.mu.Lock()
		if d := rcv.at[0].Sub(start); d != 3*time.Second {
			t.Errorf("delivered after %v, want 3s (backoff 1s then 2s)", d)
		}
		rcv.mu.Unlock()
	})
}

func TestWebhookRetriesBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rcv := &fakeReceiver{answer: func(int) int { return 500 }}
		h := testHooks(t, rcv, func(c *Config) { c.WebhookGrace = 0 })
		c, stop := runHooks(h)
		defer stop()
		c <- ev(1, relay.EventUp, "a")
		time.Sleep(time.Hour)
		synctest.Wait()
		rcv.mu.Lock()
		calls := rcv.calls
		rcv.mu.Unlock()
		if calls != DefaultWebhookAttempts {
			t.Errorf("a receiver that always answers 500: got %d attempts, want %d", calls, DefaultWebhookAttempts)
		}
		// A 4xx other than 408 and 429 is final.
		rcv.mu.Lock()
		rcv.calls, rcv.answer = 0, func(int) int { return 400 }
		rcv.mu.Unlock()
		c <- ev(2, relay.EventUp, "b")
		time.Sleep(time.Hour)
		synctest.Wait()
		rcv.mu.Lock()
		calls = rcv.calls
		rcv.mu.Unlock()
		if calls != 1 {
			t.Errorf("a receiver that answers 400: got %d attempts, want 1", calls)
		}
	})
}

func TestWebhookHangingReceiver(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rcv := &fakeReceiver{answer: func(int) int { return 0 }} // hangs
		h := testHooks(t, rcv, func(c *Config) { c.WebhookGrace = 0; c.WebhookQueue = 8 })
		c, stop := runHooks(h)
		for i := range uint64(1000) {
			c <- ev(i+1, relay.EventUp, "a") // never blocks: the sender is stuck, the queue bounded
		}
		synctest.Wait()
		rc := h.receivers[0]
		rc.mu.Lock()
		queued, dropped := len(rc.queue), rc.dropped
		rc.mu.Unlock()
		if queued > 8 || dropped < 1000-8-1 {
			t.Errorf("hanging receiver: %d queued, %d dropped; want at most 8 queued, the rest dropped", queued, dropped)
		}
		stop() // ends despite the hanging request
	})
}

func TestSign(t *testing.T) {
	got := Sign([]byte("0123456789abcdef"), []byte(`{"kind":"up"}`), time.Unix(1700000000, 0))
	// echo -n '1700000000.{"kind":"up"}' | openssl dgst -sha256 -hmac 0123456789abcdef
	want := "t=1700000000,v1=06799a00a4e41e2964c8f2a169d2a285dc282a63dfa70afa8d63568b46cf4472"
	if got != want {
		t.Errorf("got %s, want %s (openssl)", got, want)
	}
}
