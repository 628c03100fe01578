package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"paradigm/internal/lockfile"
)

// Docs holds the relay's small named documents besides the portaliases:
// the authorized playnodes, the enrollment tokens and the pending list,
// each a short text file whose format belongs to the relay. In the flat
// files (FileDocs) each is a file of the data folder; in etcd each is one
// key, so that relays sharing the store share them.
type Docs interface {
	// Read returns the document's current text; a document never written
	// is nil and no error.
	Read(ctx context.Context, name string) ([]byte, error)
	// Update reads the documents names, passes them to fn (a missing one
	// is absent from cur) and commits the documents fn returns in next, all
	// or none, only if no other Update changed any of names meanwhile.
	// next may only hold names; those it leaves out stay as they are, and
	// an empty next commits nothing. fn may run more than once (a store
	// built on compare-and-swap re-runs it when another writer won), so it
	// must only compute. If fn returns an error, Update returns it and
	// commits nothing. Callers that update several documents together list
	// them in one fixed order: FileDocs locks them in that order.
	Update(ctx context.Context, names []string, fn func(cur map[string][]byte) (next map[string][]byte, err error)) error
	// Watch calls fn with the document as it is when Watch starts, then
	// with each later version committed by this process or another, until
	// ctx is done; then it returns nil. A version that cannot be read is
	// passed as nil and its error, and watching goes on. Calls to fn are
	// sequential, in commit order; a polling store may skip versions in
	// between.
	Watch(ctx context.Context, name string, fn func([]byte, error)) error
	// Where names the document's place for messages: a file's path, an
	// etcd key. Errors about its text name Where(name) and the line.
	Where(name string) string
}

// ValidDocName reports whether name can name a document: a file name and
// an etcd key segment alike, so letters, digits, '_', '-' and '.', not
// starting with '.'.
func ValidDocName(name string) error {
	if name == "" || name[0] == '.' || len(name) > 64 {
		return fmt.Errorf("document name %q: want 1 to 64 of a-z, A-Z, 0-9, _ - . not starting with a dot", name)
	}
	for _, c := range name {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-' || c == '.') {
			return fmt.Errorf("document name %q: want 1 to 64 of a-z, A-Z, 0-9, _ - . not starting with a dot", name)
		}
	}
	return nil
}

// CheckNames checks the names an Update is given: valid, each once.
func CheckNames(names []string) error {
	if len(names) == 0 {
		return errors.New("update of documents: no document named")
	}
	for i, n := range names {
		if err := ValidDocName(n); err != nil {
			return err
		}
		if slices.Contains(names[:i], n) {
			return fmt.Errorf("update of documents %v: %q named twice", names, n)
		}
	}
	return nil
}

// CheckNext checks what an Update's fn returned: only names it was given.
func CheckNext(names []string, next map[string][]byte) error {
	for n := range next {
		if !slices.Contains(names, n) {
			return fmt.Errorf("update of documents %v: document %q was not read", names, n)
		}
	}
	return nil
}

// FileDocs keeps each document as a file in Dir, the relay's data folder:
// what the relay has always done. Update takes each document's lock file
// (NAME.lock, the lock the relay's writers always took) in the order
// given, then reads, and writes with WriteAtomic; Read takes no lock, as
// writes replace by rename. Watch polls the file's Stamp.
type FileDocs struct {
	// Dir is the folder holding the documents; Update creates it.
	Dir string
	// PollInterval is how often Watch checks a file for a new version; 0
	// means DefaultPollInterval.
	PollInterval time.Duration
	// Modes gives the permissions a document's file is created with, by
	// name; 0644 for others. An existing file keeps its own.
	Modes map[string]fs.FileMode
}

var _ Docs = (*FileDocs)(nil)

// Where is the document's path.
func (d *FileDocs) Where(name string) string { return filepath.Join(d.Dir, name) }

// Read returns the file's contents, nil if it does not exist.
func (d *FileDocs) Read(_ context.Context, name string) ([]byte, error) {
	if err := ValidDocName(name); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(d.Where(name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return data, nil
}

// Update is a read-modify-write of the files under their locks; fn runs
// once. Each file is replaced atomically, one after another: another
// Update never sees part of a commit (it waits for the locks), a lock-free
// Read of one file sees its old or its new version. A write error leaves
// the files not yet written as they were.
func (d *FileDocs) Update(ctx context.Context, names []string, fn func(map[string][]byte) (map[string][]byte, error)) error {
	if err := CheckNames(names); err != nil {
		return err
	}
	if err := os.MkdirAll(d.Dir, 0o700); err != nil {
		return fmt.Errorf("create data folder: %w", err)
	}
	for _, n := range names {
		lock, err := lockfile.AcquireFor(d.Where(n), n)
		if err != nil {
			return err
		}
		defer lock.Release()
	}
	cur := make(map[string][]byte, len(names))
	for _, n := range names {
		data, err := d.Read(ctx, n)
		if err != nil {
			return err
		}
		if data != nil {
			cur[n] = data
		}
	}
	next, err := fn(cur)
	if err != nil {
		return err
	}
	if err := CheckNext(names, next); err != nil {
		return err
	}
	for _, n := range names {
		data, ok := next[n]
		if !ok {
			continue
		}
		mode, ok := d.Modes[n]
		if !ok {
			mode = 0o644
		}
		if err := WriteAtomic(d.Where(n), data, mode); err != nil {
			return fmt.Errorf("write %s: %w", n, err)
		}
	}
	return nil
}

// Watch reads the file now, then again each time its Stamp changes,
// checking every PollInterval.
func (d *FileDocs) Watch(ctx context.Context, name string, fn func([]byte, error)) error {
	if err := ValidDocName(name); err != nil {
		return err
	}
	interval := d.PollInterval
	if interval <= 0 {
		interval = DefaultPollInterval
	}
	path := d.Where(name)
	since := StampOf(path) // first: an edit after it is seen
	fn(d.Read(ctx, name))
	poll(ctx, path, interval, since, func() { fn(d.Read(ctx, name)) })
	return nil
}
