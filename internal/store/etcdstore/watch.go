package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"paradigm/internal/store"
)

// retryPause is how long Watch waits before reading again after etcd
// failed to answer; etcd's client reconnects on its own meanwhile.
const retryPause = time.Second

// Watch calls fn with every version committed after the last Load or
// Update of this Store (after Watch starts if there was none), one call per
// etcd revision that touched the table, in revision order, until ctx is
// done or the Store is closed; then it returns nil. While etcd is
// unreachable it waits and resumes where it was; if etcd compacted the
// revisions it missed, it reports the current table and goes on from it.
func (s *Store) Watch(ctx context.Context, fn func(*store.Table, error)) error {
	s.mu.Lock()
	since := s.seen
	s.mu.Unlock()
	owners, rev, ok := s.baseline(ctx, since, fn)
	for ok {
		owners, rev, ok = s.follow(ctx, owners, rev, fn)
	}
	return nil
}

// baseline returns the table's keys at revision since (the current ones
// when since is 0 or compacted away, reporting them then), retrying until
// etcd answers; ok is false when ctx is done or the Store closed.
func (s *Store) baseline(ctx context.Context, since int64, fn func(*store.Table, error)) (owners map[uint16]string, rev int64, ok bool) {
	for {
		snap, err := s.readAt(ctx, since)
		if errors.Is(err, rpctypes.ErrCompacted) {
			since = 0
			snap, err = s.readAt(ctx, 0)
			if err == nil {
				fn(s.table(snap.owners))
			}
		}
		if err == nil {
			return snap.owners, snap.rev, true
		}
		if s.done(ctx) {
			return nil, 0, false
		}
		fn(nil, s.callErr("watch portaliases in", err))
		if !s.pause(ctx) {
			return nil, 0, false
		}
	}
}

// readAt reads the table's keys at rev, or the current ones if rev is 0.
func (s *Store) readAt(ctx context.Context, rev int64) (*snapshot, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout())
	defer cancel()
	if rev == 0 {
		return s.read(ctx)
	}
	snap, err := s.read(ctx, clientv3.WithRev(rev))
	if err != nil {
		return nil, err
	}
	snap.rev = rev // the header gives the current revision
	return snap, nil
}

// follow watches from rev+1, applying each revision's events to owners and
// reporting the table after each revision. It returns where it got to
// when the watch broke (to be resumed), with ok false when ctx is done or
// the Store closed.
func (s *Store) follow(ctx context.Context, owners map[uint16]string, rev int64, fn func(*store.Table, error)) (map[uint16]string, int64, bool) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for resp := range s.cli.Watch(wctx, s.root, clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
		if resp.CompactRevision != 0 {
			// Missed revisions are gone: start over from the current table.
			owners, rev, ok := s.baseline(ctx, 0, fn)
			if ok {
				fn(s.table(owners))
			}
			return owners, rev, ok
		}
		if err := resp.Err(); err != nil {
			fn(nil, fmt.Errorf("watch portaliases in etcd %s: %w", s.endpoints, err))
			break
		}
		owners, rev = s.apply(owners, rev, resp.Events, fn)
	}
	if s.done(ctx) {
		return nil, 0, false
	}
	return owners, rev, s.pause(ctx)
}

// apply applies events in order, reporting the table each time a revision
// ends; etcd never splits one revision's events across responses.
func (s *Store) apply(owners map[uint16]string, rev int64, events []*clientv3.Event, fn func(*store.Table, error)) (map[uint16]string, int64) {
	owners = maps.Clone(owners)
	for i, ev := range events {
		if port, ok := s.portOf(string(ev.Kv.Key)); ok {
			if ev.Type == mvccpb.DELETE {
				delete(owners, port)
			} else {
				owners[port] = string(ev.Kv.Value)
			}
		}
		rev = ev.Kv.ModRevision
		if i == len(events)-1 || events[i+1].Kv.ModRevision != rev {
			fn(s.table(owners))
		}
	}
	return owners, rev
}

// done reports whether Watch should stop: ctx done or the Store closed.
func (s *Store) done(ctx context.Context) bool {
	return ctx.Err() != nil || s.cli.Ctx().Err() != nil
}

// pause waits retryPause; false if Watch should stop instead.
func (s *Store) pause(ctx context.Context) bool {
	t := time.NewTimer(retryPause)
	defer t.Stop()
	select {
	case <-t.C:
		return !s.done(ctx)
	case <-ctx.Done():
		return false
	case <-s.cli.Ctx().Done():
		return false
	}
}
