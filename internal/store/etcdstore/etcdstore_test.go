package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"paradigm/internal/store"
	"paradigm/internal/store/storetest"
)

// open opens a Store on e under prefix, closed at cleanup.
func open(t *testing.T, e *etcdServer, prefix string) *Store {
	t.Helper()
	s, err := Open([]string{e.client}, prefix, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestConformance runs the Store suite over etcd: one real etcd, a fresh
// prefix per subtest, each Store value its own client (its own relay).
func TestConformance(t *testing.T) {
	e := startEtcd(t)
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
	e := startEtcd(t)
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
	e := startEtcd(t)
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
	e := startEtcd(t)
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

var _ = errors.Is
