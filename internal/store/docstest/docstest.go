// Package docstest is the conformance suite every store.Docs passes: the
// flat files and etcd alike, so the relay's authorization code runs on
// either without knowing which.
package docstest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"paradigm/internal/store"
)

// Open returns a new Docs value on one backing store (the same folder, the
// same etcd prefix): two values from one Open are two relays sharing it.
// Whatever it opens is closed by the test's cleanup.
type Open func(t *testing.T) store.Docs

// NewBacking makes a fresh, empty backing store for one subtest.
type NewBacking func(t *testing.T) Open

// watchWait bounds how long a test waits for Watch to report a commit; it
// is a failure deadline, never a synchronisation sleep.
const watchWait = 20 * time.Second

// Run runs the suite over the stores newBacking makes.
func Run(t *testing.T, newBacking NewBacking) {
	t.Run("ReadMissing", func(t *testing.T) { testReadMissing(t, newBacking(t)) })
	t.Run("UpdateThenRead", func(t *testing.T) { testUpdateThenRead(t, newBacking(t)) })
	t.Run("UpdateErrorCommitsNothing", func(t *testing.T) { testUpdateError(t, newBacking(t)) })
	t.Run("BadNames", func(t *testing.T) { testBadNames(t, newBacking(t)) })
	t.Run("ConcurrentUpdaters", func(t *testing.T) { testConcurrentUpdaters(t, newBacking(t)) })
	t.Run("WatchOtherWriter", func(t *testing.T) { testWatchOtherWriter(t, newBacking(t)) })
	t.Run("WatchInOrder", func(t *testing.T) { testWatchInOrder(t, newBacking(t)) })
}

func testReadMissing(t *testing.T, open Open) {
	d := open(t)
	data, err := d.Read(context.Background(), "authorized_nodes")
	if data != nil || err != nil {
		t.Errorf("Read of a missing document: got %q, %v; want nil, nil", data, err)
	}
	if w := d.Where("authorized_nodes"); !strings.Contains(w, "authorized_nodes") {
		t.Errorf("Where(authorized_nodes) = %q, want it to contain the name", w)
	}
}

// put commits docs in one Update over their names.
func put(docs map[string]string) func(map[string][]byte) (map[string][]byte, error) {
	return func(map[string][]byte) (map[string][]byte, error) {
		next := map[string][]byte{}
		for n, v := range docs {
			next[n] = []byte(v)
		}
		return next, nil
	}
}

func read(t *testing.T, d store.Docs, name string) string {
	t.Helper()
	data, err := d.Read(context.Background(), name)
	if err != nil {
		t.Fatalf("Read %s: %v", name, err)
	}
	return string(data)
}

func testUpdateThenRead(t *testing.T, open Open) {
	ctx := context.Background()
	d := open(t)
	if err := d.Update(ctx, []string{"tokens", "authorized"}, put(map[string]string{"tokens": "t1\n", "authorized": "a1\n"})); err != nil {
		t.Fatalf("Update: %v", err)
	}
	other := open(t)
	for name, s := range map[string]store.Docs{"same": d, "other": other} {
		if got := read(t, s, "tokens"); got != "t1\n" {
			t.Errorf("tokens from the %s Docs: got %q, want %q", name, got, "t1\n")
		}
		if got := read(t, s, "authorized"); got != "a1\n" {
			t.Errorf("authorized from the %s Docs: got %q, want %q", name, got, "a1\n")
		}
	}

	// fn sees what is there; a document left out of next is kept; an
	// empty next commits nothing.
	err := other.Update(ctx, []string{"tokens", "authorized", "pending"}, func(cur map[string][]byte) (map[string][]byte, error) {
		if string(cur["tokens"]) != "t1\n" || string(cur["authorized"]) != "a1\n" {
			return nil, fmt.Errorf("fn got %q, want tokens and authorized as committed", cur)
		}
		if p, ok := cur["pending"]; ok {
			return nil, fmt.Errorf("fn got pending = %q, want it absent", p)
		}
		return map[string][]byte{"authorized": []byte("a2\n")}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Update(ctx, []string{"tokens"}, func(map[string][]byte) (map[string][]byte, error) { return nil, nil }); err != nil {
		t.Fatal(err)
	}
	if got := read(t, d, "tokens"); got != "t1\n" {
		t.Errorf("tokens after updates that left it out: got %q, want %q", got, "t1\n")
	}
	if got := read(t, d, "authorized"); got != "a2\n" {
		t.Errorf("authorized: got %q, want %q", got, "a2\n")
	}
	if got, err := d.Read(ctx, "pending"); got != nil || err != nil {
		t.Errorf("pending, never written: got %q, %v; want nil, nil", got, err)
	}

	// fn may not write a document it did not read.
	err = d.Update(ctx, []string{"tokens"}, put(map[string]string{"tokens": "t3\n", "authorized": "sneaky\n"}))
	if err == nil {
		t.Error("Update writing a document it was not given: no error")
	}
	if got := read(t, d, "authorized"); got != "a2\n" {
		t.Errorf("authorized after a refused Update: got %q, want %q", got, "a2\n")
	}
	if got := read(t, d, "tokens"); got != "t1\n" {
		t.Errorf("tokens after a refused Update: got %q, want %q (nothing committed)", got, "t1\n")
	}
}

func testUpdateError(t *testing.T, open Open) {
	ctx := context.Background()
	d := open(t)
	if err := d.Update(ctx, []string{"a", "b"}, put(map[string]string{"a": "1", "b": "1"})); err != nil {
		t.Fatal(err)
	}
	errNo := errors.New("no, thanks")
	err := d.Update(ctx, []string{"a", "b"}, func(map[string][]byte) (map[string][]byte, error) {
		return map[string][]byte{"a": []byte("2"), "b": []byte("2")}, errNo
	})
	if !errors.Is(err, errNo) {
		t.Fatalf("Update with a failing fn: got %v, want %v", err, errNo)
	}
	other := open(t)
	if a, b := read(t, other, "a"), read(t, other, "b"); a != "1" || b != "1" {
		t.Errorf("after a failed Update: a=%q b=%q, want both \"1\" (nothing committed)", a, b)
	}
}

func testBadNames(t *testing.T, open Open) {
	ctx := context.Background()
	d := open(t)
	for _, name := range []string{"", ".hidden", "a/b", "../up", "a b", strings.Repeat("x", 65)} {
		if _, err := d.Read(ctx, name); err == nil {
			t.Errorf("Read(%q): no error", name)
		}
		if err := d.Update(ctx, []string{name}, put(nil)); err == nil {
			t.Errorf("Update(%q): no error", name)
		}
	}
	if err := d.Update(ctx, []string{"a", "a"}, put(nil)); err == nil {
		t.Error("Update naming a document twice: no error")
	}
}

// testConcurrentUpdaters: three Docs values (three relays) each add one to
// two counters, in two documents, in one Update, many times at once. No
// update is lost, and fn never sees the two documents disagree: another
// Update's commit is whole or absent.
func testConcurrentUpdaters(t *testing.T, open Open) {
	const updaters, each = 3, 30
	ctx := context.Background()
	names := []string{"left", "right"}
	var wg sync.WaitGroup
	errs := make([]error, updaters)
	for u := range updaters {
		d := open(t)
		wg.Go(func() {
			for range each {
				err := d.Update(ctx, names, func(cur map[string][]byte) (map[string][]byte, error) {
					l, r := counter(cur["left"]), counter(cur["right"])
					if l != r {
						return nil, fmt.Errorf("fn saw left=%d right=%d: half a commit", l, r)
					}
					return map[string][]byte{"left": fmt.Appendf(nil, "%d\n", l+1), "right": fmt.Appendf(nil, "%d\n", r+1)}, nil
				})
				if err != nil {
					errs[u] = fmt.Errorf("updater %d: %w", u, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	d := open(t)
	for _, n := range names {
		if got := counter([]byte(read(t, d, n))); got != updaters*each {
			t.Errorf("%s after %d updates: got %d, want %d (an update was lost)", n, updaters*each, got, updaters*each)
		}
	}
}

func counter(b []byte) int {
	n, _ := strconv.Atoi(string(bytes.TrimSpace(b)))
	return n
}

// watch starts d.Watch(name) on a fresh context and returns the versions
// it reports and a stop function that cancels it and returns Watch's
// result.
func watch(t *testing.T, d store.Docs, name string) (<-chan string, func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	versions := make(chan string, 1000)
	done := make(chan error, 1)
	go func() {
		done <- d.Watch(ctx, name, func(data []byte, err error) {
			if err != nil {
				t.Errorf("Watch reported %v", err)
				return
			}
			versions <- string(data)
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
	return versions, stop
}

func next(t *testing.T, versions <-chan string, what string) string {
	t.Helper()
	select {
	case v := <-versions:
		return v
	case <-time.After(watchWait):
		t.Fatalf("Watch did not report %s within %v", what, watchWait)
		return ""
	}
}

func testWatchOtherWriter(t *testing.T, open Open) {
	ctx := context.Background()
	d := open(t)
	if err := d.Update(ctx, []string{"doc"}, put(map[string]string{"doc": "first\n"})); err != nil {
		t.Fatal(err)
	}
	versions, stop := watch(t, d, "doc")
	if got := next(t, versions, "the current version"); got != "first\n" {
		t.Errorf("Watch's first report: got %q, want the current %q", got, "first\n")
	}
	// Another document changing is not this one's version.
	if err := open(t).Update(ctx, []string{"other", "doc"}, put(map[string]string{"other": "x\n", "doc": "second\n"})); err != nil {
		t.Fatal(err)
	}
	if got := next(t, versions, "another writer's commit"); got != "second\n" {
		t.Errorf("Watch after another writer's commit: got %q, want %q", got, "second\n")
	}
	if err := stop(); err != nil {
		t.Errorf("Watch at cancel: got %v, want nil", err)
	}
}

// testWatchInOrder: a writer appends one line per Update; Watch reports
// versions in commit order (each longer than the last, each a committed
// one) and ends on the last. A polling store may skip versions between.
func testWatchInOrder(t *testing.T, open Open) {
	const n = 20
	ctx := context.Background()
	versions, stop := watch(t, open(t), "log")
	if got := next(t, versions, "the missing document"); got != "" {
		t.Errorf("Watch's first report of a missing document: got %q, want empty", got)
	}
	w := open(t)
	for i := range n {
		err := w.Update(ctx, []string{"log"}, func(cur map[string][]byte) (map[string][]byte, error) {
			return map[string][]byte{"log": fmt.Appendf(bytes.Clone(cur["log"]), "line %d\n", i)}, nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	last := 0
	deadline := time.After(watchWait)
	for last < n {
		select {
		case v := <-versions:
			lines := strings.Count(v, "\n")
			if lines <= last {
				t.Fatalf("Watch reported a version of %d lines after one of %d: out of order", lines, last)
			}
			for i := range lines {
				if !strings.Contains(v, fmt.Sprintf("line %d\n", i)) {
					t.Fatalf("Watch reported %d lines without line %d: not a committed version", lines, i)
				}
			}
			last = lines
		case <-deadline:
			t.Fatalf("Watch reported up to %d lines within %v, want %d", last, watchWait, n)
		}
	}
	if err := stop(); err != nil {
		t.Errorf("Watch at cancel: got %v, want nil", err)
	}
}
