package store_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"paradigm/internal/store"
	"paradigm/internal/store/docstest"
)

// TestFileDocsConformance runs the Docs suite over the flat files; each
// Docs value is another FileDocs on the same folder, as the relay and the
// operator's commands are. The poll interval is short so Watch's tests
// take real milliseconds.
func TestFileDocsConformance(t *testing.T) {
	docstest.Run(t, func(t *testing.T) docstest.Open {
		dir := filepath.Join(t.TempDir(), "data")
		return func(*testing.T) store.Docs {
			return &store.FileDocs{Dir: dir, PollInterval: 10 * time.Millisecond}
		}
	})
}

// TestFileDocsFiles: each document is the file of its name, byte for
// byte, created with the mode given for it and keeping its own after; its
// lock is NAME.lock, the lock the relay's writers have always taken.
func TestFileDocsFiles(t *testing.T) {
	dir := t.TempDir()
	d := &store.FileDocs{Dir: dir, Modes: map[string]os.FileMode{"enroll_tokens": 0o600}}
	ctx := context.Background()
	err := d.Update(ctx, []string{"enroll_tokens", "authorized_nodes"}, func(map[string][]byte) (map[string][]byte, error) {
		return map[string][]byte{"enroll_tokens": []byte("# t\n"), "authorized_nodes": []byte("# a\n")}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]os.FileMode{"enroll_tokens": 0o600, "authorized_nodes": 0o644} {
		p := filepath.Join(dir, name)
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", name, fi.Mode().Perm(), want)
		}
		if _, err := os.Stat(p + ".lock"); err != nil {
			t.Errorf("%s: no lock file beside it: %v", name, err)
		}
		if d.Where(name) != p {
			t.Errorf("Where(%s) = %q, want %q", name, d.Where(name), p)
		}
	}
	if err := os.Chmod(filepath.Join(dir, "authorized_nodes"), 0o640); err != nil {
		t.Fatal(err)
	}
	err = d.Update(ctx, []string{"authorized_nodes"}, func(map[string][]byte) (map[string][]byte, error) {
		return map[string][]byte{"authorized_nodes": []byte("# b\n")}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "authorized_nodes")); fi.Mode().Perm() != 0o640 {
		t.Errorf("rewritten file: mode %v, want its own 0640 kept", fi.Mode().Perm())
	}
	if data, _ := os.ReadFile(filepath.Join(dir, "authorized_nodes")); string(data) != "# b\n" {
		t.Errorf("file holds %q, want %q", data, "# b\n")
	}
}

// TestFileDocsUnreadable: a file that cannot be read is an error naming
// it, from Read and from Update, which then commits nothing.
func TestFileDocsUnreadable(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "pending_nodes"), 0o700); err != nil { // a folder where a file should be
		t.Fatal(err)
	}
	d := &store.FileDocs{Dir: dir}
	if _, err := d.Read(context.Background(), "pending_nodes"); err == nil || !strings.Contains(err.Error(), "pending_nodes") {
		t.Errorf("Read of a folder: got %v, want an error naming pending_nodes", err)
	}
	called := false
	err := d.Update(context.Background(), []string{"authorized_nodes", "pending_nodes"}, func(map[string][]byte) (map[string][]byte, error) {
		called = true
		return nil, nil
	})
	if err == nil || called {
		t.Errorf("Update over an unreadable document: err %v, fn called %v; want an error and no call", err, called)
	}
}
