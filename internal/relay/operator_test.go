package relay_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"paradigm/internal/relay"
	"paradigm/internal/store"
)

func portaliasFile(r *testRelay) *store.File {
	return &store.File{Path: filepath.Join(r.cfg.DataDir, relay.PortaliasFile)}
}

// freeInRange returns a port of r's range that nothing holds, from the top.
func freeInRange(t *testing.T, r *testRelay, not ...uint16) uint16 {
	t.Helper()
next:
	for p := r.cfg.PortHigh; p > r.cfg.PortLow; p-- {
		for _, n := range not {
			if p == n {
				continue next
			}
		}
		if !isBound(p) {
			return p
		}
	}
	t.Fatal("no free port in the range")
	return 0
}

// TestAliasSetMovesLivePortalias is `paradigm-relay alias set` on an online
// playnode: the old port closes, the new one serves, the node is told.
func TestAliasSetMovesLivePortalias(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr string) {
		r, n, ports := startPair(t, tr, "svc="+replyServer(t, "hi"))
		old := ports["svc"]
		moved := freeInRange(t, r, old)
		if _, err := portaliasFile(r).Update(context.Background(), func(tab *store.Table) error {
			return tab.Set(store.Assignment{Playnode: "dev1", Service: "svc", Portalias: moved})
		}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the relay to report the moved portalias", func() bool {
			ps, ok := r.Online("dev1")
			return ok && len(ps) == 1 && ps[0].Portalias == moved
		})
		waitFor(t, "the node to receive the update", func() bool {
			return n.log.Contains("portaliases updated") && n.log.Contains("svc="+strconv.Itoa(int(moved)))
		})
		waitFor(t, "the old portalias to be released", func() bool { return !isBound(old) })
		if got, err := fetch(t, moved); err != nil || got != "hi" {
			t.Fatalf("fetch through the moved portalias %d: got %q, %v, want %q", moved, got, err, "hi")
		}
		if c, err := net.Dial("tcp", portAddr(old)); err == nil {
			c.Close()
			t.Fatalf("old portalias %d still accepts connections", old)
		}
	})
}

// TestAliasRmClosesListener is `paradigm-relay alias rm`.
func TestAliasRmClosesListener(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr string) {
		r, _, ports := startPair(t, tr, "svc="+replyServer(t, "hi"))
		port := ports["svc"]
		if _, err := portaliasFile(r).Update(context.Background(), func(tab *store.Table) error {
			if !tab.Remove("dev1", "svc") {
				t.Error("Remove found nothing")
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the removed portalias to be released", func() bool { return !isBound(port) })
		if ps, ok := r.Online("dev1"); !ok || len(ps) != 0 {
			t.Fatalf("Online after rm: %v, %v; want online without portaliases", ps, ok)
		}
	})
}

// TestMalformedEditKept checks that a typo in either file while the relay
// runs is logged and changes nothing: no revocation, no lost portalias.
func TestMalformedEditKept(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr string) {
		r, _, ports := startPair(t, tr, "svc="+replyServer(t, "hi"))
		for _, f := range []string{relay.AuthorizedFile, relay.PortaliasFile} {
			if err := os.WriteFile(filepath.Join(r.cfg.DataDir, f), []byte("garbage line\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		waitFor(t, "both files to be reported unreadable", func() bool {
			return r.log.Contains("authorized nodes file not reloaded") && r.log.Contains("portalias file not reloaded")
		})
		if ps, ok := r.Online("dev1"); !ok || len(ps) != 1 || ps[0].Portalias != ports["svc"] {
			t.Fatalf("Online after bad edits: %v, %v; want still online on %d", ps, ok, ports["svc"])
		}
		if got, err := fetch(t, ports["svc"]); err != nil || got != "hi" {
			t.Fatalf("fetch after bad edits: got %q, %v, want %q", got, err, "hi")
		}
	})
}

func TestList(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr string) {
		svc := replyServer(t, "hi")
		r, n, ports := startPair(t, tr, "svc="+svc)
		_, svcPort, _ := net.SplitHostPort(svc)
		row := func() (relay.Row, bool) {
			rows, running, err := relay.List(r.cfg.DataDir)
			if err != nil {
				t.Fatalf("List: %v", err)
			}
			if len(rows) != 1 {
				t.Fatalf("List: got %d rows %+v, want 1", len(rows), rows)
			}
			return rows[0], running
		}
		waitFor(t, "List to show dev1 online", func() bool { got, _ := row(); return got.Online })
		got, running := row()
		want := relay.Row{Playnode: "dev1", Service: "svc", Portalias: ports["svc"], Online: true}
		if !running || got.Playnode != want.Playnode || got.Service != want.Service || got.Portalias != want.Portalias ||
			strconv.Itoa(int(got.ServicePort)) != svcPort || got.Remote == "" {
			t.Fatalf("online: got %+v running=%v, want %+v with service port %s, a remote, running", got, running, want, svcPort)
		}

		n.stop(t)
		waitFor(t, "List to show dev1 offline", func() bool { got, _ := row(); return !got.Online })
		if got, _ := row(); got.LastSeen.IsZero() || got.Remote != "" {
			t.Fatalf("offline: got %+v, want a last-seen time and no remote", got)
		}

		startNode(t, n.cfg)
		waitFor(t, "List to show dev1 online again", func() bool { got, _ := row(); return got.Online })
		r.stop(t)
		if got, running := row(); running || got.Online {
			t.Fatalf("after the relay stopped: got %+v running=%v, want offline and not running", got, running)
		}
	})
}

// TestAliasSetRefusesUnservablePorts is defect 1 of the operator's list:
// the relay's own port, a port outside --ports and a port another program
// holds are refused, and the old assignment stays; a good port is bound by
// the running relay before AliasSet returns.
func TestAliasSetRefusesUnservablePorts(t *testing.T) {
	r, _, ports := startPair(t, "ssh", "svc="+replyServer(t, "hi"))
	old := ports["svc"]
	ctx := context.Background()
	set := func(port uint16, force bool) error {
		return relay.AliasSet(ctx, r.cfg.DataDir, nil, store.Assignment{Playnode: "dev1", Service: "svc", Portalias: port}, force)
	}
	waitFor(t, "the relay to record its settings", func() bool {
		rows, running, _ := relay.List(r.cfg.DataDir)
		return running && len(rows) == 1 && rows[0].Online
	})
	own := uint16(r.Addr().(*net.TCPAddr).Port)
	busy, err := net.Listen("tcp", portAddr(freeInRange(t, r, old)))
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyPort := uint16(busy.Addr().(*net.TCPAddr).Port)
	for _, tc := range []struct {
		port  uint16
		force bool
		want  string
	}{
		{own, true, "relay's own port"},
		{r.cfg.PortHigh + 1, false, "outside the relay's --ports"},
		{busyPort, false, "in use on this server by another program"},
	} {
		if err := set(tc.port, tc.force); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("alias set %d (force %v): got %v, want an error saying %q", tc.port, tc.force, err, tc.want)
		}
		if ps, _ := r.Online("dev1"); len(ps) != 1 || ps[0].Portalias != old {
			t.Errorf("after refusing %d: portaliases %v, want svc still at %d", tc.port, ps, old)
		}
	}
	moved := freeInRange(t, r, old, busyPort)
	if err := set(moved, false); err != nil {
		t.Fatalf("alias set %d: %v", moved, err)
	}
	if !isBound(moved) { // returned only once the relay bound it
		t.Fatalf("alias set returned before the relay bound %d", moved)
	}
	if got, err := fetch(t, moved); err != nil || got != "hi" {
		t.Fatalf("fetch through %d: %q, %v", moved, got, err)
	}

	// The port is free when AliasSet checks it, and taken by another
	// program before the relay binds it: the relay cannot, so AliasSet
	// puts the old assignment back and says why.
	taken := freeInRange(t, r, old, busyPort, moved)
	var thief net.Listener
	var thiefErr error
	relay.SetAliasChecked(func(a store.Assignment) {
		thief, thiefErr = net.Listen("tcp", portAddr(a.Portalias))
	})
	defer relay.SetAliasChecked(nil)
	err = set(taken, false)
	if thief == nil {
		t.Fatalf("could not take port %d in the hook: %v", taken, thiefErr)
	}
	defer thief.Close()
	if err == nil || !strings.Contains(err.Error(), "could not bind") || !strings.Contains(err.Error(), "old assignment is kept") {
		t.Fatalf("alias set %d with the port taken meanwhile: got %v, want the relay's bind failure and the old assignment kept", taken, err)
	}
	waitFor(t, "svc back on its previous portalias", func() bool {
		ps, _ := r.Online("dev1")
		return len(ps) == 1 && ps[0].Portalias == moved
	})
	if got, err := fetch(t, moved); err != nil || got != "hi" {
		t.Fatalf("fetch through %d after the revert: %q, %v", moved, got, err)
	}
}

// TestListFiltersAndUnassigned: ls filters by name prefix and state, and
// an online service whose portalias was removed shows as unassigned
// rather than vanishing.
func TestListFiltersAndUnassigned(t *testing.T) {
	cfg := relayConfig(t)
	k1, _ := authorize(t, cfg, "shop-1")
	k2, _ := authorize(t, cfg, "kiosk-1")
	r := startRelay(t, cfg, "ssh")
	startNode(t, r.nodeConfig(t, "shop-1", k1, "a="+replyServer(t, "a"), "b="+replyServer(t, "b")))
	waitOnline(t, r, "shop-1", 2)
	n2 := startNode(t, r.nodeConfig(t, "kiosk-1", k2, "a="+replyServer(t, "a")))
	waitOnline(t, r, "kiosk-1", 1)
	n2.stop(t)
	waitOffline(t, r, "kiosk-1")
	if _, err := relay.AliasRemove(context.Background(), cfg.DataDir, nil, "shop-1", "b"); err != nil {
		t.Fatal(err)
	}
	var rows []relay.Row
	waitFor(t, "ls to show shop-1 b unassigned", func() bool {
		rows, _, _ = relay.List(cfg.DataDir)
		for _, row := range rows {
			if row.Playnode == "shop-1" && row.Service == "b" {
				return row.State == relay.StateUnassigned && row.Portalias == 0
			}
		}
		return false
	})
	count := func(f relay.Filter) int { return len(f.Apply(rows)) }
	if got := count(relay.Filter{Prefixes: []string{"shop"}}); got != 2 {
		t.Errorf("ls shop: %d rows, want 2", got)
	}
	if got := count(relay.Filter{Online: true}); got != 1 {
		t.Errorf("ls --online: %d rows, want 1 (shop-1 a)", got)
	}
	if got := count(relay.Filter{Offline: true, Prefixes: []string{"kiosk", "nothing"}}); got != 1 {
		t.Errorf("ls --offline kiosk nothing: %d rows, want 1", got)
	}
}
