package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"paradigm/internal/lockfile"
)

// DefaultLockTimeout bounds how long Update waits for another writer.
const DefaultLockTimeout = 10 * time.Second

// DefaultPollInterval is how often Watch looks for a new version of the
// file.
const DefaultPollInterval = 2 * time.Second

// File is a store file on disk, shared by the running relay and the
// `paradigm-relay alias` CLI. Update is its only writer; readers use Load.
type File struct {
	// Path is the store file. Update locks Path + ".lock" and writes
	// temporary files next to Path, so its folder must be writable.
	Path string
	// LockTimeout bounds Update's wait for the lock; 0 means
	// DefaultLockTimeout.
	LockTimeout time.Duration
	// PollInterval is how often Watch checks the file for a new version;
	// 0 means DefaultPollInterval.
	PollInterval time.Duration

	mu   sync.Mutex
	seen Stamp // the version the last Load or Update read or wrote
}

var _ Store = (*File)(nil)

// Load parses the file. A missing file is an empty table with the Header,
// not an error: the first Update creates it. Load takes no lock; Update
// replaces the file by rename, so Load sees either the old or the new one.
func (f *File) Load(context.Context) (*Table, error) {
	return f.load()
}

func (f *File) load() (*Table, error) {
	// The stamp first: an edit after it is seen by Watch.
	f.setSeen(StampOf(f.Path))
	data, err := os.ReadFile(f.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return New(), nil
	}
	if err != nil {
		return nil, fmt.Errorf("load portaliases: %w", err)
	}
	return Parse(bytes.NewReader(data), f.Path)
}

// Update is a read-modify-write of the file under an exclusive lock, so the
// relay and the CLI never lose each other's changes. It re-reads the file
// under the lock, runs fn on it, and if fn changed anything replaces the file
// atomically (temporary file, fsync, rename, fsync of the folder). If fn
// returns an error, Update returns it unchanged and writes nothing. On a
// write error (full disk, read-only folder) the old file is intact and no
// temporary file is left behind. It returns the table as written. fn runs
// once: the lock makes the read-modify-write exclusive.
func (f *File) Update(ctx context.Context, fn func(*Table) error) (*Table, error) {
	timeout := f.LockTimeout
	if timeout <= 0 {
		timeout = DefaultLockTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	lock, err := lockfile.Acquire(ctx, f.Path+".lock")
	if err != nil {
		return nil, fmt.Errorf("update portaliases: %w", err)
	}
	defer lock.Release()
	f.removeStaleTemps()

	t, err := f.load()
	if err != nil {
		return nil, err
	}
	if err := fn(t); err != nil {
		return nil, err
	}
	if !t.changed {
		return t, nil
	}
	if err := f.write(t); err != nil {
		return nil, fmt.Errorf("update portaliases: %w", err)
	}
	f.setSeen(StampOf(f.Path))
	t.changed = false
	return t, nil
}

func (f *File) setSeen(st Stamp) {
	f.mu.Lock()
	f.seen = st
	f.mu.Unlock()
}

// Watch polls the file every PollInterval and passes each new version to
// fn: hand edits, `paradigm-relay alias` and this File's own Updates alike
// (a caller applying a table it already has sees it again, which must be
// harmless). It starts from the version the last Load or Update saw, so an
// edit made between that Load and Watch is not missed.
func (f *File) Watch(ctx context.Context, fn func(*Table, error)) error {
	interval := f.PollInterval
	if interval <= 0 {
		interval = DefaultPollInterval
	}
	f.mu.Lock()
	since := f.seen
	f.mu.Unlock()
	poll(ctx, f.Path, interval, since, func() {
		t, err := f.load()
		fn(t, err)
	})
	return nil
}

// removeStaleTemps deletes temporary files that writers killed mid-write
// (kill -9, power loss) left next to Path; each is a whole copy of the
// table and nothing else would ever remove them. Only a writer holding the
// lock may call it: no other write can be in progress.
func (f *File) removeStaleTemps() {
	stale, _ := filepath.Glob(filepath.Join(filepath.Dir(f.Path), "."+filepath.Base(f.Path)+".tmp-*"))
	for _, p := range stale {
		os.Remove(p)
	}
}

// write replaces the file with t atomically.
func (f *File) write(t *Table) error {
	var buf bytes.Buffer
	if _, err := t.WriteTo(&buf); err != nil {
		return err
	}
	return WriteAtomic(f.Path, buf.Bytes(), 0o644)
}

// WriteAtomic replaces path with data so that a crash at any moment leaves
// either the old or the new file, never a mix: temporary file in the same
// folder, fsync, rename, fsync of the folder. An existing file keeps its
// permissions; a new one gets perm. On error the old file is intact and no
// temporary file is left. The relay's other flat files (authorized nodes,
// status) are written the same way.
func WriteAtomic(path string, data []byte, perm fs.FileMode) error {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	mode := perm
	if fi, err := os.Stat(path); err == nil {
		mode = fi.Mode().Perm()
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return err
	}
	renamed := false
	defer func() {
		if !renamed {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(mode); err != nil {
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	renamed = true
	return syncDir(dir)
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync folder %s: %w", dir, err)
	}
	return nil
}
