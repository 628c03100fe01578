package admin

import (
	"bytes"
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"paradigm/internal/relay"
)

// Webhook headers. A receiver verifies a delivery by computing
// HMAC-SHA256(secret, T + "." + body), hex encoded, and comparing it in
// constant time with v1 of SignatureHeader ("t=T,v1=HEX"); it should also
// refuse a T too far from its own clock, so that a captured delivery cannot
// be replayed later.
const (
	SignatureHeader = "Paradigm-Signature"
	EventHeader     = "Paradigm-Event"    // the event's kind
	DeliveryHeader  = "Paradigm-Delivery" // the event's seq: the same on every retry
)

// Webhook defaults.
const (
	DefaultWebhookAttempts   = 5
	DefaultWebhookBackoff    = time.Second
	DefaultWebhookBackoffMax = 30 * time.Second
	DefaultWebhookTimeout    = 10 * time.Second

	webhookSubBuffer   = 4096
	maxSecretFileBytes = 4096
	minSecretBytes     = 16
)

// Sign returns the SignatureHeader value of body sent at t under secret.
func Sign(secret, body []byte, t time.Time) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte("."))
	m.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(m.Sum(nil))
}

// webhooks sends the relay's events to every receiver: one dispatcher
// (debouncing downs by the grace) and one sender per receiver, each with a
// bounded queue. A receiver that hangs or fails costs at most its queue;
// when full, its oldest events are dropped and counted.
type webhooks struct {
	log       *slog.Logger
	secret    []byte
	client    *http.Client
	grace     time.Duration
	queue     int
	attempts  int
	backoff   time.Duration
	maxWait   time.Duration
	receivers []*receiver
}

// receiver is one webhook URL and its queue; mu guards queue and dropped.
type receiver struct {
	url     string
	mu      sync.Mutex
	queue   []relay.Event
	dropped uint64
	wake    chan struct{} // cap 1: something was queued
}

func newWebhooks(cfg Config) (*webhooks, error) {
	if cfg.WebhookSecretFile == "" {
		return nil, fmt.Errorf("--webhook needs --webhook-secret FILE: deliveries are signed")
	}
	f, err := os.Open(cfg.WebhookSecretFile)
	if err != nil {
		return nil, fmt.Errorf("--webhook-secret: %w", err)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFileBytes+1))
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("--webhook-secret: %w", err)
	}
	secret := bytes.TrimSpace(b)
	if len(b) > maxSecretFileBytes || len(secret) < minSecretBytes {
		return nil, fmt.Errorf("--webhook-secret %s: want a secret of %d to %d bytes", cfg.WebhookSecretFile, minSecretBytes, maxSecretFileBytes)
	}
	h := &webhooks{
		log: cfg.Logger, secret: secret, grace: cfg.WebhookGrace, queue: cfg.WebhookQueue,
		attempts: cfg.WebhookAttempts, backoff: cfg.WebhookBackoff, maxWait: cfg.WebhookBackoffMax,
		client: &http.Client{Timeout: cfg.WebhookTimeout, Transport: cfg.WebhookTransport,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
	}
	if h.grace < 0 {
		return nil, fmt.Errorf("--webhook-grace %v is negative", h.grace)
	}
	if h.queue <= 0 {
		h.queue = DefaultWebhookQueue
	}
	if h.attempts <= 0 {
		h.attempts = DefaultWebhookAttempts
	}
	if h.backoff <= 0 {
		h.backoff = DefaultWebhookBackoff
	}
	if h.maxWait <= 0 {
		h.maxWait = DefaultWebhookBackoffMax
	}
	if h.client.Timeout <= 0 {
		h.client.Timeout = DefaultWebhookTimeout
	}
	for _, u := range cfg.Webhooks {
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			return nil, fmt.Errorf("--webhook %q: want an http:// or https:// URL", u)
		}
		h.receivers = append(h.receivers, &receiver{url: u, wake: make(chan struct{}, 1)})
	}
	return h, nil
}

// run delivers the relay's events until ctx is cancelled or the relay stops.
func (h *webhooks) run(ctx context.Context, r *relay.Relay) {
	_, sub := r.Subscribe(webhookSubBuffer)
	defer sub.Close()
	h.serve(ctx, sub.C, r.ClusterID())
}

// serve dispatches the events of c to every receiver until ctx is cancelled
// or c is closed, and waits for its senders. self is the relay's id in its
// cluster, if any.
func (h *webhooks) serve(ctx context.Context, c <-chan relay.Event, self string) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, rc := range h.receivers {
		wg.Go(func() { h.send(ctx, rc) })
	}
	defer func() {
		cancel()
		wg.Wait()
	}()
	d := newDebouncer(h.grace)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		var out []relay.Event
		select {
		case <-ctx.Done():
			return
		case e, ok := <-c:
			if !ok {
				return
			}
			out = d.add(e, time.Now())
		case <-timer.C:
			out = d.expire(time.Now())
		}
		for _, e := range out {
			if e.Relay != "" && e.Relay != self {
				// In a cluster each relay reports its own sessions, so
				// that the same webhook on every relay hears each once.
				// Other relays' events still cancel a held down above.
				continue
			}
			for _, rc := range h.receivers {
				h.enqueue(rc, e)
			}
		}
		if next, ok := d.next(); ok {
			timer.Reset(time.Until(next))
		}
	}
}

func (h *webhooks) enqueue(rc *receiver, e relay.Event) {
	rc.mu.Lock()
	if len(rc.queue) >= h.queue {
		rc.queue = slices.Delete(rc.queue, 0, 1)
		rc.dropped++
		if rc.dropped == 1 || rc.dropped%1000 == 0 {
			h.log.Warn("webhook queue full, oldest events dropped", "url", rc.url, "dropped", rc.dropped)
		}
	}
	rc.queue = append(rc.queue, e)
	rc.mu.Unlock()
	select {
	case rc.wake <- struct{}{}:
	default:
	}
}

// send delivers rc's queue in order, one event at a time.
func (h *webhooks) send(ctx context.Context, rc *receiver) {
	for {
		rc.mu.Lock()
		if len(rc.queue) == 0 {
			rc.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-rc.wake:
				continue
			}
		}
		e := rc.queue[0]
		rc.queue = rc.queue[1:]
		rc.mu.Unlock()
		h.deliver(ctx, rc, e)
	}
}

// deliver POSTs e, retrying with doubling backoff up to h.attempts tries; a
// 4xx answer other than 408 and 429 is final.
func (h *webhooks) deliver(ctx context.Context, rc *receiver, e relay.Event) {
	body, _ := json.Marshal(e)
	wait := h.backoff
	for attempt := 1; ; attempt++ {
		code, err := h.post(ctx, rc.url, e, body)
		if err == nil && code >= 200 && code < 300 {
			return
		}
		if ctx.Err() != nil {
			return
		}
		final := err == nil && code >= 400 && code < 500 && code != 408 && code != 429
		if final || attempt >= h.attempts {
			h.log.Warn("webhook delivery failed, event dropped", "url", rc.url, "kind", e.Kind, "playnode", e.Playnode, "seq", e.Seq, "attempts", attempt, "status", code, "err", err)
			return
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = min(2*wait, h.maxWait)
	}
}

func (h *webhooks) post(ctx context.Context, u string, e relay.Event, body []byte) (int, error) {
	req, err := http.NewRequestWithContext(ctx, "POST", u, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "paradigm-relay")
	req.Header.Set(EventHeader, string(e.Kind))
	req.Header.Set(DeliveryHeader, strconv.FormatUint(e.Seq, 10))
	req.Header.Set(SignatureHeader, Sign(h.secret, body, time.Now()))
	resp, err := h.client.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	return resp.StatusCode, nil
}

// webhookKinds are the events sent to webhooks; refusals are not (a
// misconfigured device would send one per retry).
func webhookKind(k relay.EventKind) bool {
	return k != relay.EventRefused
}

// debouncer holds each playnode's down for the grace: an up within it
// cancels both, so a playnode that flaps or reconnects sends nothing. Events
// of a playnode whose down is held wait behind it, so that each playnode's
// events still go out in order.
type debouncer struct {
	grace time.Duration
	held  map[string]*heldDown
}

type heldDown struct {
	until  time.Time
	down   relay.Event
	behind []relay.Event
}

func newDebouncer(grace time.Duration) *debouncer {
	return &debouncer{grace: grace, held: map[string]*heldDown{}}
}

// add takes one event and returns what is to be sent now.
func (d *debouncer) add(e relay.Event, now time.Time) []relay.Event {
	if !webhookKind(e.Kind) {
		return nil
	}
	if e.Kind == relay.EventDown && e.Reason == relay.ReasonShutdown {
		return nil // the relay stops: not the device's doing
	}
	hd := d.held[e.Playnode]
	switch {
	case e.Playnode == "":
		return []relay.Event{e} // lost
	case hd != nil && e.Kind == relay.EventUp:
		delete(d.held, e.Playnode) // back within the grace: nothing happened
		return hd.behind
	case hd != nil:
		hd.behind = append(hd.behind, e)
		return nil
	case e.Kind == relay.EventDown && d.grace > 0:
		d.held[e.Playnode] = &heldDown{until: now.Add(d.grace), down: e}
		return nil
	}
	return []relay.Event{e}
}

// expire returns the held downs whose grace is over, with what waited
// behind each, in the order of their seq.
func (d *debouncer) expire(now time.Time) []relay.Event {
	var due []*heldDown
	for name, hd := range d.held {
		if !now.Before(hd.until) {
			due = append(due, hd)
			delete(d.held, name)
		}
	}
	slices.SortFunc(due, func(a, b *heldDown) int { return cmp.Compare(a.down.Seq, b.down.Seq) })
	var out []relay.Event
	for _, hd := range due {
		out = append(out, hd.down)
		out = append(out, hd.behind...)
	}
	return out
}

// next is when the earliest held down expires.
func (d *debouncer) next() (time.Time, bool) {
	var t time.Time
	for _, hd := range d.held {
		if t.IsZero() || hd.until.Before(t) {
			t = hd.until
		}
	}
	return t, !t.IsZero()
}
