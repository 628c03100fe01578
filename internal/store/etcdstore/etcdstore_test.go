package etcdstore

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"paradigm/internal/store"
	"paradigm/internal/store/etcdstore/etcdtest"
	"paradigm/internal/store/storetest"
)

// open opens a Store on e under prefix, closed at cleanup.
func open(t *testing.T, e *etcdtest.Server, prefix string) *Store {
	t.Helper()
	s, err := Open([]string{e.Client}, prefix, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestConformance runs the Store suite over etcd: one real etcd, a fresh
// prefix per subtest, each Store value its own client (its own relay).
func TestConformance(t *testing.T) {
	e := etcdtest.Start(t)
	n := 0
	storetest.Run(t, func(t *testing.T) storetest.Open {
		n++
		prefix := fmt.Sprintf("conformance%d", n)
		return func(t *testing.T) store.Store { return open(t, e, prefix) }
	})
}

// TestWatchEveryVersion: etcd's Watch reports each committed version, not
// only the latest, and a Store's own commits too.
func TestWatchEveryVersion(t *testing.T) {
	e := etcdtest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := open(t, e, "every")
	if _, err := s.Load(ctx); err != nil {
		t.Fatal(err)
	}
	lens := make(chan int, 100)
	done := make(chan error)
	go func() {
		done <- s.Watch(ctx, func(tab *store.Table, err error) {
			if err != nil {
				t.Errorf("Watch reported %v", err)
				return
			}
			lens <- tab.Len()
		})
	}()
	const n = 10
	for i := range n {
		w := s
		if i%2 == 1 {
			w = open(t, e, "every")
		}
		if _, err := w.Update(ctx, func(t *store.Table) error {
			return t.Set(store.Assignment{Playnode: "pi", Service: fmt.Sprint("svc", i), Portalias: uint16(4000 + i)})
		}); err != nil {
			t.Fatal(err)
		}
	}
	for want := 1; want <= n; want++ {
		select {
		case got := <-lens:
			if got != want {
				t.Fatalf("Watch reported a version with %d assignments, want %d", got, want)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("Watch stopped reporting at version %d of %d", want-1, n)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Watch at cancel: got %v, want nil", err)
	}
}

// TestBadValue: a hand edit with etcdctl that is not "PLAYNODE SERVICE"
// is an error naming the key, never a panic or a silent drop.
func TestBadValue(t *testing.T) {
	e := etcdtest.Start(t)
	ctx := context.Background()
	s := open(t, e, "bad")
	if _, err := s.cli.Put(ctx, s.ports+"2201", "just-one-field"); err != nil {
		t.Fatal(err)
	}
	_, err := s.Load(ctx)
	if err == nil {
		t.Fatal("Load of a malformed value: no error")
	}
	want := `etcd key /bad/portaliases/ports/2201: value "just-one-field" is not "PLAYNODE SERVICE"`
	if err.Error() != want {
		t.Errorf("got error %q, want %q", err, want)
	}
	if _, err := s.Update(ctx, func(*store.Table) error { return nil }); err == nil {
		t.Error("Update over a malformed value: no error")
	}
}

// TestPortKeyCreatedOnlyIfAbsent: a port whose key appeared behind the
// version key's back (an etcdctl put) is not taken over by an Update that
// did not see it: the transaction creates a port's key only if absent.
func TestPortKeyCreatedOnlyIfAbsent(t *testing.T) {
	e := etcdtest.Start(t)
	ctx := context.Background()
	s := open(t, e, "absent")
	calls := 0
	_, err := s.Update(ctx, func(tab *store.Table) error {
		calls++
		if calls == 1 { // another writer that ignores the version key
			if _, err := s.cli.Put(ctx, s.ports+"2201", "other ssh"); err != nil {
				return err
			}
		}
		port, _ := tab.FirstFree(2201, 2299)
		return tab.Set(store.Assignment{Playnode: "pi", Service: "ssh", Portalias: port})
	})
	if err != nil {
		t.Fatal(err)
	}
	tab, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := tab.Owner(2201); o.Playnode != "other" {
		t.Errorf("port 2201 belongs to %v, want other ssh (taken first)", o)
	}
	if p, _ := tab.Lookup("pi", "ssh"); p != 2202 || calls != 2 {
		t.Errorf("pi ssh got %d after %d runs of fn, want 2202 after 2", p, calls)
	}
}

// TestOpenErrors: bad arguments are refused with what is wrong.
func TestOpenErrors(t *testing.T) {
	if _, err := Open(nil, "p", nil); err == nil {
		t.Error("Open with no endpoint: no error")
	}
	if _, err := Open([]string{"127.0.0.1:2379"}, "/", nil); err == nil {
		t.Error("Open with an empty prefix: no error")
	}
}

// TestEtcdKilled: etcd is killed (SIGKILL) and restarted on the same data
// folder. While it is down an Update fails, within its context, with an
// error naming etcd; after it is back no committed assignment is lost,
// Updates work again and a Watch started before the kill goes on.
func TestEtcdKilled(t *testing.T) {
	e := etcdtest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := open(t, e, "killed")
	const before = 20
	for i := range before {
		if _, err := s.Update(ctx, func(t *store.Table) error {
			return t.Set(store.Assignment{Playnode: "pi", Service: fmt.Sprint("svc", i), Portalias: uint16(5000 + i)})
		}); err != nil {
			t.Fatal(err)
		}
	}
	tables := make(chan *store.Table, 100)
	done := make(chan error)
	go func() {
		done <- s.Watch(ctx, func(tab *store.Table, err error) {
			if err == nil { // errors while etcd is down are expected
				tables <- tab
			}
		})
	}()

	e.Kill()
	down, stop := context.WithTimeout(ctx, 2*time.Second)
	_, err := s.Update(down, func(t *store.Table) error {
		return t.Set(store.Assignment{Playnode: "late", Service: "ssh", Portalias: 6000})
	})
	stop()
	if err == nil {
		t.Fatal("Update while etcd is down: no error")
	}
	t.Logf("Update while etcd is down: %v", err)
	// A deadline when the client waited for a connection; Unavailable
	// when the kill broke a request already on the wire. Either way the
	// error names etcd.
	if !strings.Contains(err.Error(), e.Client) {
		t.Errorf("Update while etcd is down: got %q, want an error naming etcd %s", err, e.Client)
	}

	e.Restart()
	tab, err := open(t, e, "killed").Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if tab.Len() != before {
		t.Errorf("after the restart: %d assignments, want the %d committed", tab.Len(), before)
	}
	for i := range before {
		if p, ok := tab.Lookup("pi", fmt.Sprint("svc", i)); !ok || p != uint16(5000+i) {
			t.Errorf("after the restart pi svc%d = %d, %v; want %d", i, p, ok, 5000+i)
		}
	}
	if _, ok := tab.Lookup("late", "ssh"); ok {
		t.Error("the Update that failed while etcd was down was committed")
	}
	if _, err := s.Update(ctx, func(t *store.Table) error {
		return t.Set(store.Assignment{Playnode: "late", Service: "ssh", Portalias: 6000})
	}); err != nil {
		t.Fatalf("Update after the restart: %v", err)
	}
	select {
	case tab := <-tables:
		if p, ok := tab.Lookup("late", "ssh"); !ok || p != 6000 || tab.Len() != before+1 {
			t.Errorf("Watch after the restart: late ssh = %d, %v with %d assignments; want 6000 with %d", p, ok, tab.Len(), before+1)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a Watch started before the kill did not report a commit after the restart")
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Watch at cancel: got %v, want nil", err)
	}
}

// TestWatchAfterCompaction: the revisions between a Load and Watch were
// compacted away; Watch reports the current table once instead, then
// every later version, removals included.
func TestWatchAfterCompaction(t *testing.T) {
	e := etcdtest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, w := open(t, e, "compact"), open(t, e, "compact")
	if _, err := s.Load(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := w.Update(ctx, func(t *store.Table) error {
			return t.Set(store.Assignment{Playnode: "pi", Service: fmt.Sprint("svc", i), Portalias: uint16(7000 + i)})
		}); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := w.cli.Get(ctx, "any")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.cli.Compact(ctx, resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	lens := make(chan int, 100)
	done := make(chan error)
	go func() {
		done <- s.Watch(ctx, func(tab *store.Table, err error) {
			if err != nil {
				t.Errorf("Watch reported %v", err)
				return
			}
			lens <- tab.Len()
		})
	}()
	next := func(want int) {
		t.Helper()
		select {
		case got := <-lens:
			if got != want {
				t.Fatalf("Watch reported a version with %d assignments, want %d", got, want)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("Watch reported no version with %d assignments", want)
		}
	}
	next(3) // the current table, instead of the compacted versions
	if _, err := w.Update(ctx, func(t *store.Table) error {
		t.RemovePlaynode("pi")
		return t.Set(store.Assignment{Playnode: "hall", Service: "ssh", Portalias: 7000})
	}); err != nil {
		t.Fatal(err)
	}
	next(1) // one version for one commit of three changes
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Watch at cancel: got %v, want nil", err)
	}
	if len(lens) != 0 {
		t.Errorf("%d more versions reported than committed", len(lens))
	}
}

// TestUpdateFromRememberedTable: an Update starts from the table its Store
// last saw; when another relay committed since, it still builds on the
// current table, and one that changes nothing returns the current table.
func TestUpdateFromRememberedTable(t *testing.T) {
	e := etcdtest.Start(t)
	ctx := context.Background()
	a, b := open(t, e, "remembered"), open(t, e, "remembered")
	set := func(s *Store, as store.Assignment) *store.Table {
		t.Helper()
		tab, err := s.Update(ctx, func(t *store.Table) error { return t.Set(as) })
		if err != nil {
			t.Fatal(err)
		}
		return tab
	}
	set(a, store.Assignment{Playnode: "pi", Service: "ssh", Portalias: 2201})
	set(b, store.Assignment{Playnode: "hall", Service: "ssh", Portalias: 2202})
	if tab := set(a, store.Assignment{Playnode: "pi", Service: "http", Portalias: 2203}); tab.Len() != 3 {
		t.Errorf("Update after another relay's: got %v, want 3 assignments", tab.All())
	}
	set(b, store.Assignment{Playnode: "door", Service: "ssh", Portalias: 2204})
	tab, err := a.Update(ctx, func(*store.Table) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := tab.Lookup("door", "ssh"); !ok || tab.Len() != 4 {
		t.Errorf("Update changing nothing returned %v, want the 4 assignments committed", tab.All())
	}
}
