package store

import (
	"context"
	"path/filepath"
	"testing"
	"testing/synctest"
	"time"
)

// TestFileWatch: Watch reports an edit by another writer within one poll
// interval, reports a malformed edit as an error, and stops with ctx; all
// in virtual time.
func TestFileWatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &File{Path: filepath.Join(t.TempDir(), "portaliases"), PollInterval: time.Second}
		if _, err := f.Load(context.Background()); err != nil {
			t.Fatal(err)
		}
		type seen struct {
			t   *Table
			err error
			at  time.Duration
		}
		got := make(chan seen, 10)
		start := time.Now()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() {
			done <- f.Watch(ctx, func(t *Table, err error) { got <- seen{t, err, time.Since(start)} })
		}()

		other := &File{Path: f.Path} // another writer: the CLI
		if _, err := other.Update(context.Background(), func(t *Table) error {
			return t.Set(Assignment{"pi", "ssh", 2201})
		}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(1500 * time.Millisecond)
		synctest.Wait()
		select {
		case s := <-got:
			if s.err != nil || s.t == nil {
				t.Fatalf("first change: %v", s.err)
			}
			if port, ok := s.t.Lookup("pi", "ssh"); !ok || port != 2201 || s.at > time.Second {
				t.Errorf("first change seen after %v with pi ssh = %d, %v; want 2201 within a second", s.at, port, ok)
			}
		default:
			t.Fatal("an edit was not reported within the poll interval")
		}

		if err := WriteAtomic(f.Path, []byte("pi ssh notaport\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if s := <-got; s.err == nil || s.t != nil {
			t.Errorf("malformed edit: got table %v, err %v; want an error and no table", s.t, s.err)
		}

		time.Sleep(10 * time.Second) // nothing changes: nothing is reported
		synctest.Wait()
		if len(got) != 0 {
			t.Errorf("%d reports without a change", len(got))
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Watch returned %v at cancel, want nil", err)
		}
	})
}
