package store

import (
	"context"
	"os"
	"time"
)

// Store is where the relay's portalias assignments live. The flat File is
// the one implementation today; a store shared by several relays plugs in
// behind the same three calls without the relay's session code changing.
type Store interface {
	// Load returns the current assignments.
	Load(ctx context.Context) (*Table, error)
	// Update applies fn to the current assignments and commits the result,
	// returning the table as committed. fn may run more than once (a store
	// built on compare-and-swap re-runs it when another writer won), so it
	// must only compute: no side effects beyond the *Table it is given. If
	// fn returns an error, Update returns it and commits nothing.
	Update(ctx context.Context, fn func(*Table) error) (*Table, error)
	// Watch calls fn with every version of the assignments committed after
	// it started, by this process or another, until ctx is done; then it
	// returns nil. A version that cannot be read (a malformed hand edit) is
	// passed as a nil table and its error, and watching goes on. Calls to
	// fn are sequential, in commit order.
	Watch(ctx context.Context, fn func(*Table, error)) error
}

// Stamp identifies a version of a file cheaply: a change in any field
// means the file was rewritten (Update and WriteAtomic replace by rename,
// editors rewrite or replace). The zero Stamp is a missing file.
type Stamp struct {
	mod  time.Time
	size int64
	ino  uint64
	ok   bool
}

// StampOf returns path's current Stamp.
func StampOf(path string) Stamp {
	fi, err := os.Stat(path)
	if err != nil {
		return Stamp{}
	}
	return Stamp{mod: fi.ModTime(), size: fi.Size(), ino: inode(fi), ok: true}
}

// poll calls fn each time path's Stamp differs from the last one seen,
// checking every interval, until ctx is done. since is the Stamp the
// caller already knows. It is how the relay picks up hand edits of its
// flat files: polling is portable and needs no dependency, and the
// interval bounds how long an edit takes to apply.
func poll(ctx context.Context, path string, interval time.Duration, since Stamp, fn func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if st := StampOf(path); st != since {
			since = st
			fn()
		}
	}
}
