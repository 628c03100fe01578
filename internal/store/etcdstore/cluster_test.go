package etcdstore

import (
	"context"
	"sync"
	"testing"
	"time"

	"paradigm/internal/store"
	"paradigm/internal/store/etcdstore/etcdtest"
)

// view is what one relay learns from Join: members and homes, kept
// current by the changes, and the lease losses and rejoins it saw.
type view struct {
	mu      sync.Mutex
	changed chan struct{}
	members map[string]store.Member
	homes   map[string]store.Home
	lost    int
	joined  int
}

func newView() *view {
	return &view{changed: make(chan struct{}, 1), members: map[string]store.Member{}, homes: map[string]store.Home{}}
}

func (v *view) apply(c store.ClusterChange) {
	v.mu.Lock()
	switch {
	case c.Reset != nil:
		clear(v.members)
		clear(v.homes)
		for _, m := range c.Reset.Members {
			v.members[m.ID] = m
		}
		for name, h := range c.Reset.Homes {
			v.homes[name] = h
		}
	case c.LeaseLost:
		v.lost++
	case c.Joined:
		v.joined++
	case c.Member != nil:
		v.members[c.Member.ID] = *c.Member
	case c.MemberGone != "":
		delete(v.members, c.MemberGone)
	case c.Home != nil:
		v.homes[c.Playnode] = *c.Home
	default:
		delete(v.homes, c.Playnode)
	}
	v.mu.Unlock()
	select {
	case v.changed <- struct{}{}:
	default:
	}
}

// wait waits until cond holds of the view, failing the test after d.
func (v *view) wait(t *testing.T, d time.Duration, what string, cond func(v *view) bool) {
	t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		v.mu.Lock()
		ok := cond(v)
		v.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-v.changed:
		case <-deadline.C:
			t.Fatalf("after %v: %s never happened; members %v, homes %v", d, what, v.members, v.homes)
		}
	}
}

// join runs Join for id on its own Store until the returned stop is
// called, which waits for Join to return.
func join(t *testing.T, e *etcdtest.Server, prefix, id string, ttl time.Duration) (*Store, *view, func()) {
	t.Helper()
	s := open(t, e, prefix)
	v := newView()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- s.Join(ctx, store.Member{ID: id, Addr: id, HostKey: "ssh-ed25519 AAAA" + id}, ttl, v.apply)
	}()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Join %s: %v", id, err)
		}
	}
	t.Cleanup(stop)
	return s, v, stop
}

// claimWhenJoined retries Claim until Join has its lease.
func claimWhenJoined(t *testing.T, s *Store, playnode string, h store.Home) (store.Home, bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got, ok, err := s.Claim(context.Background(), playnode, h)
		if err == nil {
			return got, ok
		}
		if time.Now().After(deadline) {
			t.Fatalf("claim %s: %v", playnode, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestClusterPresence: two relays see each other; the newer session's
// claim wins wherever it is made, an older one is told who holds it, a
// release removes only the claim it names, and a relay that leaves takes
// its member key and homes with it.
func TestClusterPresence(t *testing.T) {
	e := etcdtest.Start(t)
	a, va, stopA := join(t, e, "presence", "relay-a", 5*time.Second)
	b, vb, _ := join(t, e, "presence", "relay-b", 5*time.Second)
	for _, v := range []*view{va, vb} {
		v.wait(t, 20*time.Second, "both members seen", func(v *view) bool { return len(v.members) == 2 })
	}

	t0 := time.Now()
	onA := store.Home{Relay: "relay-a", Session: "a1", Since: t0, Transport: "ssh", Services: []string{"ssh"}}
	if _, ok := claimWhenJoined(t, a, "pi", onA); !ok {
		t.Fatal("first claim refused")
	}
	vb.wait(t, 10*time.Second, "pi at home on relay-a", func(v *view) bool { return v.homes["pi"].Session == "a1" })

	onB := store.Home{Relay: "relay-b", Session: "b1", Since: t0.Add(time.Second)}
	if _, ok := claimWhenJoined(t, b, "pi", onB); !ok {
		t.Fatal("newer session's claim refused")
	}
	va.wait(t, 10*time.Second, "relay-a sees pi move to relay-b", func(v *view) bool { return v.homes["pi"].Session == "b1" })

	// relay-a retrying its older claim (after an etcd outage, say) must
	// not take the playnode back.
	got, ok := claimWhenJoined(t, a, "pi", onA)
	if ok || got.Session != "b1" {
		t.Fatalf("older claim: got %+v, %v; want refused, held by b1", got, ok)
	}
	if err := a.Release(context.Background(), "pi", onA); err != nil {
		t.Fatal(err)
	}
	if err := b.Release(context.Background(), "pi", onB); err != nil {
		t.Fatal(err)
	}
	va.wait(t, 10*time.Second, "pi offline after relay-b released it", func(v *view) bool { _, ok := v.homes["pi"]; return !ok })

	if _, ok := claimWhenJoined(t, a, "tv", store.Home{Relay: "relay-a", Session: "a2", Since: time.Now()}); !ok {
		t.Fatal("claim tv refused")
	}
	vb.wait(t, 10*time.Second, "tv at home on relay-a", func(v *view) bool { return v.homes["tv"].Session == "a2" })
	stopA()
	vb.wait(t, 10*time.Second, "relay-a and its playnode gone once it left", func(v *view) bool {
		_, home := v.homes["tv"]
		_, member := v.members["relay-a"]
		return !home && !member
	})
}

// TestClusterSurvivesEtcdOutage: etcd down for longer than the lease's
// TTL. The relay reports the lease lost and, once etcd is back, rejoins;
// its claims made before the outage are still there (etcd extends leases
// when it restarts), so no playnode looked offline to the others.
func TestClusterSurvivesEtcdOutage(t *testing.T) {
	e := etcdtest.Start(t)
	a, va, _ := join(t, e, "outage", "relay-a", 2*time.Second)
	h := store.Home{Relay: "relay-a", Session: "a1", Since: time.Now()}
	if _, ok := claimWhenJoined(t, a, "pi", h); !ok {
		t.Fatal("claim refused")
	}
	va.wait(t, 10*time.Second, "pi at home", func(v *view) bool { return v.homes["pi"].Session == "a1" })

	e.Kill()
	va.wait(t, 20*time.Second, "lease reported lost", func(v *view) bool { return v.lost == 1 })
	if _, _, err := a.Claim(context.Background(), "tv", h); err == nil {
		t.Error("Claim without a lease: no error")
	}
	e.Restart()
	va.wait(t, 30*time.Second, "joined again after etcd came back", func(v *view) bool { return v.joined == 2 })
	va.wait(t, 10*time.Second, "member and home back in view", func(v *view) bool {
		return v.homes["pi"].Session == "a1" && len(v.members) == 1
	})
	other := open(t, e, "outage")
	resp, err := other.cli.Get(context.Background(), other.homeKey("pi"))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 {
		t.Fatalf("pi's home after the outage: %d keys, want 1", len(resp.Kvs))
	}
}
