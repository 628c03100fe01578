package relay_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"paradigm/internal/proto"
	"paradigm/internal/relay"
	"paradigm/internal/store"
)

// failingStore is the data folder's store whose writes fail while broken
// is set (a full disk, a read-only folder), with an error naming its path
// as the real one does.
type failingStore struct {
	*store.File
	broken atomic.Bool
}

func (s *failingStore) Update(ctx context.Context, fn func(*store.Table) error) (*store.Table, error) {
	if s.broken.Load() {
		return nil, errors.New("update portaliases: open " + s.Path + ".tmp: read-only file system")
	}
	return s.File.Update(ctx, fn)
}

// TestStoreWriteFailure: while the store cannot be written, a playnode
// whose services all have their portalias is served as always; one that
// needs a new portalias keeps the ones it has, or is refused with a reason
// that names no server path.
func TestStoreWriteFailure(t *testing.T) {
	cfg := relayConfig(t)
	fs := &failingStore{File: &store.File{Path: filepath.Join(cfg.DataDir, relay.PortaliasFile), PollInterval: cfg.ReloadInterval}}
	cfg.Store = fs
	k1, _ := authorize(t, cfg, "known")
	k2, _ := authorize(t, cfg, "fresh")
	r := startRelay(t, cfg, "ssh")
	hello := helloWith("known", "svc", 2)
	if w, ok := rawHello(t, r, k1, hello).(*proto.Welcome); !ok || len(w.Portaliases) != 2 {
		t.Fatalf("before the failure: want a welcome with 2 portaliases")
	}

	fs.broken.Store(true)
	if w, ok := rawHello(t, r, k1, hello).(*proto.Welcome); !ok || len(w.Portaliases) != 2 {
		t.Errorf("known services while the store fails: want a welcome with both portaliases")
	}
	more := helloWith("known", "svc", 3)
	if w, ok := rawHello(t, r, k1, more).(*proto.Welcome); !ok || len(w.Portaliases) != 2 {
		t.Errorf("a new service while the store fails: want a welcome with the 2 it has")
	}
	m := rawHello(t, r, k2, helloWith("fresh", "svc", 1))
	ref, ok := m.(*proto.Refuse)
	if !ok || strings.Contains(ref.Reason, cfg.DataDir) || strings.Contains(ref.Reason, "/") {
		t.Errorf("a new playnode while the store fails: %#v, want a refusal that names no server path", m)
	}
	fs.broken.Store(false)
	if w, ok := rawHello(t, r, k2, helloWith("fresh", "svc", 1)).(*proto.Welcome); !ok || len(w.Portaliases) != 1 {
		t.Errorf("after the store recovered: want a welcome")
	}
}
