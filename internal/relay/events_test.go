package relay_test

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"paradigm/internal/relay"
)

// nextEvent returns the next event of sub that match keeps, failing after
// waitTimeout.
func nextEvent(t *testing.T, sub *relay.Subscription, what string, match func(relay.Event) bool) relay.Event {
	t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		select {
		case e, ok := <-sub.C:
			if !ok {
				t.Fatalf("subscription closed while waiting for %s", what)
			}
			if match(e) {
				return e
			}
		case <-deadline.C:
			t.Fatalf("timed out after %v waiting for %s", waitTimeout, what)
		}
	}
}

func kind(k relay.EventKind, playnode string) func(relay.Event) bool {
	return func(e relay.Event) bool { return e.Kind == k && e.Playnode == playnode }
}

// TestEventsLifecycle follows one playnode through every kind of up and
// down, each published once with the reason that tells them apart.
func TestEventsLifecycle(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr string) {
		cfg := relayConfig(t)
		keyFile, _ := authorize(t, cfg, "dev1")
		r := startRelay(t, cfg, tr)
		snap, sub := r.Subscribe(256)
		defer sub.Close()
		if _, ok := snap.Playnode("dev1"); ok {
			t.Fatalf("dev1 in the snapshot before it ever connected")
		}
		svc := "svc=" + replyServer(t, "x")

		first := startNode(t, r.nodeConfig(t, "dev1", keyFile, svc))
		a := nextEvent(t, sub, "portalias assigned", kind(relay.EventPortaliasAssigned, "dev1"))
		if a.Service != "svc" || a.Portalias < cfg.PortLow || a.Portalias > cfg.PortHigh {
			t.Errorf("assigned %s %d, want svc in %d-%d", a.Service, a.Portalias, cfg.PortLow, cfg.PortHigh)
		}
		up := nextEvent(t, sub, "up", kind(relay.EventUp, "dev1"))
		if up.Transport != tr || !strings.HasPrefix(up.Remote, "127.0.0.1:") || up.Fingerprint == "" || up.Portaliases["svc"] != a.Portalias {
			t.Errorf("up event %+v: want transport %s, a loopback remote, a fingerprint and svc=%d", up, tr, a.Portalias)
		}
		if up.Seq <= a.Seq || a.Seq <= snap.Seq {
			t.Errorf("seqs snapshot %d, assigned %d, up %d: want increasing", snap.Seq, a.Seq, up.Seq)
		}

		// A clean stop of the node.
		first.stop(t)
		if d := nextEvent(t, sub, "down", kind(relay.EventDown, "dev1")); d.Reason != relay.ReasonStopped {
			t.Errorf("down after the node stopped: reason %q, want %q", d.Reason, relay.ReasonStopped)
		}

		// A second session replaces a first one.
		older := startNode(t, r.nodeConfig(t, "dev1", keyFile, svc))
		nextEvent(t, sub, "up of the older session", kind(relay.EventUp, "dev1"))
		newerCfg := r.nodeConfig(t, "dev1", keyFile, svc)
		newer := startNode(t, newerCfg)
		if d := nextEvent(t, sub, "down of the older session", kind(relay.EventDown, "dev1")); d.Reason != relay.ReasonReplaced {
			t.Errorf("down of a replaced session: reason %q, want %q", d.Reason, relay.ReasonReplaced)
		}
		nextEvent(t, sub, "up of the newer session", kind(relay.EventUp, "dev1"))
		older.stop(t)

		// Revocation: the authorized-nodes file loses the line.
		path := filepath.Join(cfg.DataDir, relay.AuthorizedFile)
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var kept []string
		for line := range strings.Lines(string(data)) {
			if !strings.Contains(line, `playnode="dev1"`) {
				kept = append(kept, line)
			}
		}
		if err := os.WriteFile(path, []byte(strings.Join(kept, "")), 0o644); err != nil {
			t.Fatal(err)
		}
		if d := nextEvent(t, sub, "down after revocation", kind(relay.EventDown, "dev1")); d.Reason != relay.ReasonRevoked {
			t.Errorf("down after revocation: reason %q, want %q", d.Reason, relay.ReasonRevoked)
		}
		newer.stop(t)
		p, _ := r.Snapshot().Playnode("dev1")
		if p.Online || p.LastSeen.IsZero() || p.Services[0].Portalias != a.Portalias || p.Services[0].State != relay.StateOffline {
			t.Errorf("dev1 after revocation: %+v, want offline, seen, its portalias kept", p)
		}
	})
}

// TestEventsShutdown: the relay's own stop is a down with its reason, and
// ends every subscription.
func TestEventsShutdown(t *testing.T) {
	cfg := relayConfig(t)
	keyFile, _ := authorize(t, cfg, "dev1")
	r := startRelay(t, cfg, "ssh")
	startNode(t, r.nodeConfig(t, "dev1", keyFile, "svc="+replyServer(t, "x")))
	waitOnline(t, r, "dev1", 1)
	_, sub := r.Subscribe(16)
	r.stop(t)
	if d := nextEvent(t, sub, "down at shutdown", kind(relay.EventDown, "dev1")); d.Reason != relay.ReasonShutdown {
		t.Errorf("down at shutdown: reason %q, want %q", d.Reason, relay.ReasonShutdown)
	}
	for range sub.C {
	}
}

// TestSlowSubscriberLosesEvents: a subscriber that never reads cannot
// hold up the relay; when it reads again it is told how many it missed.
func TestSlowSubscriberLosesEvents(t *testing.T) {
	cfg := relayConfig(t)
	keyFile, _ := authorize(t, cfg, "dev1")
	r := startRelay(t, cfg, "ssh")
	_, stalled := r.Subscribe(2)
	defer stalled.Close()
	var services []string
	for i := range 8 {
		services = append(services, "s"+string(rune('a'+i))+"="+replyServer(t, "x"))
	}
	n := startNode(t, r.nodeConfig(t, "dev1", keyFile, services...))
	waitOnline(t, r, "dev1", 8) // 8 assignments and an up: far more than 2
	n.stop(t)
	waitOffline(t, r, "dev1")

	// The stalled subscriber holds the first two; the next event that
	// fits after it reads them is preceded by the count of the lost.
	for range 2 {
		if e := <-stalled.C; e.Kind == relay.EventLost {
			t.Fatalf("a buffered event was replaced: %+v", e)
		}
	}
	startNode(t, r.nodeConfig(t, "dev1", keyFile, services...))
	if e := <-stalled.C; e.Kind != relay.EventLost || e.Missed < 8 {
		t.Errorf("after catching up: %+v, want EventLost with at least 8 missed", e)
	}
	if e := <-stalled.C; e.Kind != relay.EventUp {
		t.Errorf("after the loss: %+v, want the up that followed it", e)
	}
}

// TestSnapshotCountsTraffic: bytes each way and connections show in the
// snapshot while a connection is open, not only when it ends.
func TestSnapshotCountsTraffic(t *testing.T) {
	r, _, ports := startPair(t, "ssh", "echo="+echoServer(t))
	c := dialPortalias(t, ports["echo"])
	msg := strings.Repeat("x", 1000)
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, len(msg))); err != nil {
		t.Fatal(err)
	}
	snap := r.Snapshot()
	p, _ := snap.Playnode("dev1")
	s := p.Services[0]
	if s.OpenConns != 1 || s.TotalConns != 1 || s.BytesToPlaynode < 1000 || s.BytesFromPlaynode != 1000 {
		t.Errorf("service while open: %+v, want 1 open, 1 in all, 1000 bytes back and at least 1000 out (with the stream header)", s)
	}
	if snap.Counters.Forwarded != 1 || snap.Counters.BytesFromNodes != 1000 || snap.Counters.Handshakes < 1 {
		t.Errorf("counters %+v, want 1 forwarded, 1000 bytes from nodes, a handshake", snap.Counters)
	}
	c.Close()
	// Counters change without events: poll them.
	waitFor(t, "the connection to close", func() bool {
		p, _ := r.Snapshot().Playnode("dev1")
		return p.Services[0].OpenConns == 0
	})
}

// TestRevokeCutsAtOnce: `paradigm-relay revoke` cuts a connected playnode
// without waiting for the reload interval (a minute here).
func TestRevokeCutsAtOnce(t *testing.T) {
	cfg := relayConfig(t)
	cfg.ReloadInterval = time.Minute
	keyFile, _ := authorize(t, cfg, "dev1")
	r := startRelay(t, cfg, "ssh")
	startNode(t, r.nodeConfig(t, "dev1", keyFile, "svc="+replyServer(t, "x")))
	waitOnline(t, r, "dev1", 1)
	_, sub := r.Subscribe(64)
	defer sub.Close()
	if _, err := relay.Revoke(cfg.DataDir, "dev1"); err != nil {
		t.Fatal(err)
	}
	if d := nextEvent(t, sub, "down after revoke", kind(relay.EventDown, "dev1")); d.Reason != relay.ReasonRevoked {
		t.Errorf("down after revoke: reason %q, want %q", d.Reason, relay.ReasonRevoked)
	}
}
