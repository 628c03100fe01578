package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"paradigm/internal/store"
)

// defaultMaxRequest is etcd's default --max-request-bytes.
const defaultMaxRequest = 1536 << 10

// Docs keeps the relay's named documents (authorized playnodes,
// enrollment tokens, pending list) in etcd, one key each, so every relay
// of the cluster authorizes, enrolls and revokes from the same text:
//
//	PREFIX/docs/NAME  ->  the document, byte for byte as the flat file
//
// Update reads its keys in one transaction (one revision) and commits in
// another that compares every key's ModRevision with what it read, so two
// relays never lose each other's changes; fn runs again when another
// writer won. One document is one value: it is bounded by etcd's
// --max-request-bytes (1.5 MiB by default), which Update names when a
// document outgrows it.
type Docs struct {
	s    *Store // its client, endpoints and timeout
	root string // PREFIX/docs/
}

var _ store.Docs = (*Docs)(nil)

// Docs returns the documents under the same prefix, over the same
// connection: one client per relay for its whole shared state.
func (s *Store) Docs() *Docs {
	return &Docs{s: s, root: s.prefix + "/docs/"}
}

// Where is the document's key.
func (d *Docs) Where(name string) string { return "etcd key " + d.key(name) }

func (d *Docs) key(name string) string { return d.root + name }

// Read returns the document's current value, nil if the key is absent.
func (d *Docs) Read(ctx context.Context, name string) ([]byte, error) {
	if err := store.ValidDocName(name); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, d.s.timeout())
	defer cancel()
	resp, err := d.s.cli.Get(ctx, d.key(name))
	if err != nil {
		return nil, d.s.callErr("read "+name+" from", err)
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	return resp.Kvs[0].Value, nil
}

// Update reads names at one revision, runs fn and commits its documents
// if none of names changed since (each key's ModRevision as read, 0 for an
// absent one), re-running fn when another writer committed first, up to
// maxAttempts times.
func (d *Docs) Update(ctx context.Context, names []string, fn func(map[string][]byte) (map[string][]byte, error)) error {
	if err := store.CheckNames(names); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, d.s.timeout())
	defer cancel()
	for attempt := 1; ; attempt++ {
		err := d.try(ctx, names, fn)
		if !errors.Is(err, errConflict) {
			return err
		}
		if attempt == maxAttempts {
			return fmt.Errorf("update %v in etcd %s: gave up after %d attempts: %w", names, d.s.endpoints, attempt, err)
		}
		select {
		case <-ctx.Done():
			return d.s.callErr(fmt.Sprintf("update %v in", names), ctx.Err())
		case <-time.After(rand.N(time.Duration(attempt) * time.Millisecond)):
		}
	}
}

// try is one read-modify-write; errConflict when it lost a race.
func (d *Docs) try(ctx context.Context, names []string, fn func(map[string][]byte) (map[string][]byte, error)) error {
	gets := make([]clientv3.Op, len(names))
	for i, n := range names {
		gets[i] = clientv3.OpGet(d.key(n))
	}
	resp, err := d.s.cli.Txn(ctx).Then(gets...).Commit()
	if err != nil {
		return d.s.callErr(fmt.Sprintf("read %v from", names), err)
	}
	cur := make(map[string][]byte, len(names))
	cmps := make([]clientv3.Cmp, len(names))
	for i, n := range names {
		var mod int64
		if kvs := resp.Responses[i].GetResponseRange().GetKvs(); len(kvs) > 0 {
			cur[n] = kvs[0].Value
			mod = kvs[0].ModRevision
		}
		cmps[i] = clientv3.Compare(clientv3.ModRevision(d.key(n)), "=", mod)
	}
	next, err := fn(cur)
	if err != nil {
		return err
	}
	if err := store.CheckNext(names, next); err != nil {
		return err
	}
	if len(next) == 0 {
		return nil
	}
	var puts []clientv3.Op
	size := 0
	for _, n := range names {
		if data, ok := next[n]; ok {
			puts = append(puts, clientv3.OpPut(d.key(n), string(data)))
			size += len(data)
		}
	}
	var tr *clientv3.TxnResponse
	if size > maxSend-(64<<10) { // the client's own limit, less room for keys and framing
		err = fmt.Errorf("%d bytes in one request", size)
	} else {
		tr, err = d.s.cli.Txn(ctx).If(cmps...).Then(puts...).Commit()
	}
	// etcd refuses a request over --max-request-bytes with its own error,
	// and one past its gRPC limit (that plus 512 KiB) with a bare gRPC one:
	// past the default limit, a refusal other than a timeout names it.
	tooLarge := err != nil && size > defaultMaxRequest && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled)
	if errors.Is(err, rpctypes.ErrRequestTooLarge) || tooLarge {
		return fmt.Errorf("update %v in etcd %s: %d bytes, more than etcd's --max-request-bytes allows (1.5 MiB by default; raise it on every etcd member): %w",
			names, d.s.endpoints, size, err)
	}
	if err != nil {
		return d.s.callErr(fmt.Sprintf("update %v in", names), err)
	}
	if !tr.Succeeded {
		return errConflict
	}
	return nil
}

// Watch reads the document, reports it, then follows its key with etcd's
// Watch from the revision read, reporting each version. While etcd is
// unreachable it waits and resumes where it was; if etcd compacted the
// revisions it missed, it reads and reports the current version and goes
// on from it.
func (d *Docs) Watch(ctx context.Context, name string, fn func([]byte, error)) error {
	if err := store.ValidDocName(name); err != nil {
		return err
	}
	rev, ok := d.baseline(ctx, name, fn)
	for ok {
		rev, ok = d.follow(ctx, name, rev, fn)
	}
	return nil
}

// baseline reads and reports the current version, retrying until etcd
// answers; it returns the revision read, and false when Watch should stop.
func (d *Docs) baseline(ctx context.Context, name string, fn func([]byte, error)) (int64, bool) {
	for {
		rctx, cancel := context.WithTimeout(ctx, d.s.timeout())
		resp, err := d.s.cli.Get(rctx, d.key(name))
		cancel()
		if err == nil {
			var data []byte
			if len(resp.Kvs) > 0 {
				data = resp.Kvs[0].Value
			}
			fn(data, nil)
			return resp.Header.Revision, true
		}
		if d.s.done(ctx) {
			return 0, false
		}
		fn(nil, d.s.callErr("watch "+name+" in", err))
		if !d.s.pause(ctx) {
			return 0, false
		}
	}
}

// follow watches the key from rev+1, reporting each version, and returns
// where it got to when the watch broke, with false when Watch should stop.
func (d *Docs) follow(ctx context.Context, name string, rev int64, fn func([]byte, error)) (int64, bool) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for resp := range d.s.cli.Watch(wctx, d.key(name), clientv3.WithRev(rev+1)) {
		if resp.CompactRevision != 0 {
			return d.baseline(ctx, name, fn)
		}
		if err := resp.Err(); err != nil {
			fn(nil, fmt.Errorf("watch %s in etcd %s: %w", name, d.s.endpoints, err))
			break
		}
		for _, ev := range resp.Events {
			if ev.Type == mvccpb.DELETE {
				fn(nil, nil)
			} else {
				fn(ev.Kv.Value, nil)
			}
			rev = ev.Kv.ModRevision
		}
	}
	if d.s.done(ctx) {
		return 0, false
	}
	return rev, d.s.pause(ctx)
}
