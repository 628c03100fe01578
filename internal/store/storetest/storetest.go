// Package storetest is the conformance suite every store.Store passes: the
// flat File and the etcd store alike, so the relay can take either without
// its session code knowing which.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"paradigm/internal/store"
)

// Open returns a new Store value on one backing store (the same file, the
// same etcd prefix): two values from one Open are two relays sharing it.
// Whatever it opens is closed by the test's cleanup.
type Open func(t *testing.T) store.Store

// NewBacking makes a fresh, empty backing store for one subtest.
type NewBacking func(t *testing.T) Open

// watchWait bounds how long a test waits for Watch to report a commit; it
// is a failure deadline, never a synchronisation sleep.
const watchWait = 20 * time.Second

// Run runs the suite over the stores newBacking makes.
func Run(t *testing.T, newBacking NewBacking) {
	t.Run("EmptyLoad", func(t *testing.T) { testEmptyLoad(t, newBacking(t)) })
	t.Run("UpdateThenLoad", func(t *testing.T) { testUpdateThenLoad(t, newBacking(t)) })
	t.Run("UpdateErrorCommitsNothing", func(t *testing.T) { testUpdateError(t, newBacking(t)) })
	t.Run("ConcurrentWriters", func(t *testing.T) { testConcurrentWriters(t, newBacking(t)) })
	t.Run("WatchOtherWriter", func(t *testing.T) { testWatchOtherWriter(t, newBacking(t)) })
	t.Run("WatchInOrder", func(t *testing.T) { testWatchInOrder(t, newBacking(t)) })
}

func testEmptyLoad(t *testing.T, open Open) {
	tab, err := open(t).Load(context.Background())
	if err != nil {
		t.Fatalf("Load of an empty store: %v", err)
	}
	if tab.Len() != 0 {
		t.Errorf("empty store: got %d assignments, want 0", tab.Len())
	}
}

func set(a store.Assignment) func(*store.Table) error {
	return func(t *store.Table) error { return t.Set(a) }
}

func testUpdateThenLoad(t *testing.T, open Open) {
	ctx := context.Background()
	s := open(t)
	a := store.Assignment{Playnode: "kitchen-pi", Service: "ssh", Portalias: 2201}
	got, err := s.Update(ctx, set(a))
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	if p, ok := got.Lookup(a.Playnode, a.Service); !ok || p != a.Portalias {
		t.Errorf("Update returned kitchen-pi ssh = %d, %v; want %d", p, ok, a.Portalias)
	}
	for name, s := range map[string]store.Store{"same store": s, "other store": open(t)} {
		tab, err := s.Load(ctx)
		if err != nil {
			t.Fatalf("Load from the %s: %v", name, err)
		}
		if all := tab.All(); len(all) != 1 || all[0] != a {
			t.Errorf("Load from the %s: got %v, want [%v]", name, all, a)
		}
	}

	// A move and a removal are committed too.
	if _, err := s.Update(ctx, func(t *store.Table) error {
		if err := t.Set(store.Assignment{Playnode: "kitchen-pi", Service: "ssh", Portalias: 2202}); err != nil {
			return err
		}
		return t.Set(store.Assignment{Playnode: "hall-pi", Service: "http", Portalias: 2201})
	}); err != nil {
		t.Fatalf("Update moving kitchen-pi ssh: %v", err)
	}
	if _, err := s.Update(ctx, func(t *store.Table) error {
		if !t.Remove("hall-pi", "http") {
			return errors.New("hall-pi http is missing")
		}
		return nil
	}); err != nil {
		t.Fatalf("Update removing hall-pi http: %v", err)
	}
	tab, err := open(t).Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := store.Assignment{Playnode: "kitchen-pi", Service: "ssh", Portalias: 2202}
	if all := tab.All(); len(all) != 1 || all[0] != want {
		t.Errorf("after a move and a removal: got %v, want [%v]", all, want)
	}
}

func testUpdateError(t *testing.T, open Open) {
	ctx := context.Background()
	s := open(t)
	before := store.Assignment{Playnode: "pi", Service: "ssh", Portalias: 2201}
	if _, err := s.Update(ctx, set(before)); err != nil {
		t.Fatal(err)
	}
	errNo := errors.New("no, thanks")
	got, err := s.Update(ctx, func(t *store.Table) error {
		t.RemovePlaynode("pi")
		if err := t.Set(store.Assignment{Playnode: "other", Service: "http", Portalias: 8001}); err != nil {
			return err
		}
		return errNo
	})
	if !errors.Is(err, errNo) || got != nil {
		t.Fatalf("Update with a failing fn: got %v, %v; want nil, %v", got, err, errNo)
	}
	tab, err := open(t).Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if all := tab.All(); len(all) != 1 || all[0] != before {
		t.Errorf("after a failed Update: got %v, want [%v] (nothing committed)", all, before)
	}
}

// testConcurrentWriters: two Store values (two relays) each assign 50
// services at once, each picking the lowest free port inside fn. No change
// is lost and no port is given twice.
func testConcurrentWriters(t *testing.T, open Open) {
	const writers, each = 2, 50
	const lo, hi = 20000, 29999
	ctx := context.Background()
	stores := make([]store.Store, writers)
	for i := range stores {
		stores[i] = open(t)
	}
	got := make([][]uint16, writers)
	errs := make([]error, writers)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				playnode, service := fmt.Sprintf("writer%d", w), fmt.Sprintf("svc%d", i)
				tab, err := stores[w].Update(ctx, func(t *store.Table) error {
					port, ok := t.FirstFree(lo, hi)
					if !ok {
						return errors.New("no free port")
					}
					return t.Set(store.Assignment{Playnode: playnode, Service: service, Portalias: port})
				})
				if err != nil {
					errs[w] = fmt.Errorf("writer %d, service %d: %w", w, i, err)
					return
				}
				port, ok := tab.Lookup(playnode, service)
				if !ok {
					errs[w] = fmt.Errorf("writer %d: the committed table lacks %s %s", w, playnode, service)
					return
				}
				got[w] = append(got[w], port)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	owner := make(map[uint16]string)
	for w, ports := range got {
		for i, p := range ports {
			if o, dup := owner[p]; dup {
				t.Errorf("port %d given twice: to %s and to writer%d svc%d", p, o, w, i)
			}
			owner[p] = fmt.Sprintf("writer%d svc%d", w, i)
		}
	}
	tab, err := open(t).Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if tab.Len() != writers*each {
		t.Errorf("after %d concurrent Updates: got %d assignments, want %d", writers*each, tab.Len(), writers*each)
	}
	for w, ports := range got {
		for i, p := range ports {
			if q, ok := tab.Lookup(fmt.Sprintf("writer%d", w), fmt.Sprintf("svc%d", i)); !ok || q != p {
				t.Errorf("writer%d svc%d: stored %d, %v; Update returned %d", w, i, q, ok, p)
			}
		}
	}
}

// watch starts s.Watch on a fresh context and returns the tables it
// reports, a stop function that cancels it, and Watch's result.
func watch(t *testing.T, s store.Store) (<-chan *store.Table, func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	tables := make(chan *store.Table, 1000)
	done := make(chan error, 1)
	go func() {
		done <- s.Watch(ctx, func(tab *store.Table, err error) {
			if err != nil {
				t.Errorf("Watch reported %v", err)
				return
			}
			tables <- tab
		})
	}()
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(watchWait):
			return errors.New("watch did not return after its context was canceled")
		}
	}
	t.Cleanup(func() { stop() })
	return tables, stop
}

func testWatchOtherWriter(t *testing.T, open Open) {
	ctx := context.Background()
	s := open(t)
	if _, err := s.Load(ctx); err != nil {
		t.Fatal(err)
	}
	tables, stop := watch(t, s)
	a := store.Assignment{Playnode: "pi", Service: "ssh", Portalias: 2201}
	if _, err := open(t).Update(ctx, set(a)); err != nil {
		t.Fatal(err)
	}
	select {
	case tab := <-tables:
		if p, ok := tab.Lookup("pi", "ssh"); !ok || p != 2201 {
			t.Errorf("Watch reported pi ssh = %d, %v; want 2201", p, ok)
		}
	case <-time.After(watchWait):
		t.Fatalf("Watch did not report another writer's commit within %v", watchWait)
	}
	if err := stop(); err != nil {
		t.Errorf("Watch at cancel: got %v, want nil", err)
	}
}

// testWatchInOrder: a writer commits one more assignment per Update; Watch
// reports versions in commit order (each has more assignments than the
// last) and ends on the last one. A polling store may skip versions in
// between; a store that reports each one is checked by its own tests.
func testWatchInOrder(t *testing.T, open Open) {
	const n = 20
	ctx := context.Background()
	s := open(t)
	if _, err := s.Load(ctx); err != nil {
		t.Fatal(err)
	}
	tables, stop := watch(t, s)
	w := open(t)
	for i := range n {
		a := store.Assignment{Playnode: "pi", Service: fmt.Sprintf("svc%d", i), Portalias: uint16(3000 + i)}
		if _, err := w.Update(ctx, set(a)); err != nil {
			t.Fatal(err)
		}
	}
	last := 0
	deadline := time.After(watchWait)
	for last < n {
		select {
		case tab := <-tables:
			if tab.Len() <= last {
				t.Fatalf("Watch reported a version with %d assignments after one with %d: out of order", tab.Len(), last)
			}
			for i := range tab.Len() {
				if _, ok := tab.Lookup("pi", fmt.Sprintf("svc%d", i)); !ok {
					t.Fatalf("Watch reported %d assignments without svc%d: not a committed version", tab.Len(), i)
				}
			}
			last = tab.Len()
		case <-deadline:
			t.Fatalf("Watch reported up to %d assignments within %v, want %d", last, watchWait, n)
		}
	}
	if err := stop(); err != nil {
		t.Errorf("Watch at cancel: got %v, want nil", err)
	}
}
