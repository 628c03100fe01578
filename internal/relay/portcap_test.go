package relay_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"paradigm/internal/proto"
	"paradigm/internal/relay"
	"paradigm/internal/store"
)

// helloWith is a hello of playnode registering services prefix0..prefixN-1.
func helloWith(playnode, prefix string, n int) *proto.Hello {
	h := &proto.Hello{Version: proto.Version, Playnode: playnode}
	for i := range n {
		h.Services = append(h.Services, proto.Service{Name: fmt.Sprintf("%s%d", prefix, i), Port: uint16(1000 + i)})
	}
	return h
}

// TestPortaliasCapPerPlaynode attacks the port range with one key that
// reconnects with new service names every time: it holds at most its
// limit, the rest of the range stays for other playnodes, the relay says
// why, and pruning what its last hello did not register frees its share.
func TestPortaliasCapPerPlaynode(t *testing.T) {
	cfg := relayConfig(t)
	cfg.MaxPortaliasesPerNode = 8
	thief, _ := authorize(t, cfg, "thief")
	honest, _ := authorize(t, cfg, "honest")
	r := startRelay(t, cfg, "ssh")
	_, sub := r.Subscribe(1024)
	defer sub.Close()

	for round := range 10 {
		m := rawHello(t, r, thief, helloWith("thief", fmt.Sprintf("r%d-", round), 8))
		switch {
		case round == 0:
			if w, ok := m.(*proto.Welcome); !ok || len(w.Portaliases) != 8 {
				t.Fatalf("first hello: %#v, want a welcome with 8 portaliases", m)
			}
		default:
			r, ok := m.(*proto.Refuse)
			if !ok || r.Code != proto.RefusePorts || !strings.Contains(r.Reason, "limit of 8") {
				t.Fatalf("hello %d with 8 new services: %#v, want a refusal naming the limit", round, m)
			}
		}
	}
	tab, err := (&store.File{Path: portaliasFile(r).Path}).Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	held := 0
	for _, a := range tab.All() {
		if a.Playnode == "thief" {
			held++
		}
	}
	if held != 8 {
		t.Errorf("the thief holds %d portaliases after 10 rounds, want 8", held)
	}
	nextEvent(t, sub, "the limit event", kind(relay.EventPortaliasLimit, "thief"))
	if m := rawHello(t, r, honest, helloWith("honest", "svc", 4)); m.(*proto.Welcome) == nil {
		t.Fatalf("another playnode: %#v, want a welcome", m)
	}

	// The thief's first services are stale once its hello registers others.
	rawHello(t, r, thief, helloWith("thief", "r0-", 2))
	waitFor(t, "status.json to record the last hello", func() bool {
		rows, _, _ := relay.List(cfg.DataDir)
		stale := 0
		for _, row := range rows {
			if row.Playnode == "thief" && row.Stale {
				stale++
			}
		}
		return stale == 6
	})
	removed, err := relay.AliasPrune(context.Background(), cfg.DataDir, nil, []string{"thief"})
	if err != nil || len(removed) != 6 {
		t.Fatalf("prune: removed %v, %v; want the 6 services the last hello did not register", removed, err)
	}
}

// TestOnePendingHelloPerKey attacks with one authorized key that opens
// connection after connection and never says hello: only the newest
// stays open, and the handshake slots stay free for other playnodes.
func TestOnePendingHelloPerKey(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr string) {
		cfg := relayConfig(t)
		cfg.MaxHandshakes = 4
		thief, _ := authorize(t, cfg, "thief")
		honest, _ := authorize(t, cfg, "honest")
		r := startRelay(t, cfg, tr)
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		var sessions []interface{ Done() <-chan struct{} }
		for range 12 {
			s := rawDial(ctx, t, r, thief, "thief")
			defer s.Close()
			sessions = append(sessions, s)
		}
		waitFor(t, "all but the newest silent connection to be closed", func() bool {
			open := 0
			for _, s := range sessions {
				select {
				case <-s.Done():
				default:
					open++
				}
			}
			return open == 1
		})
		if m := rawHello(t, r, honest, helloWith("honest", "svc", 1)); m.(*proto.Welcome) == nil {
			t.Fatalf("another playnode during the attack: %#v, want a welcome", m)
		}
	})
}
