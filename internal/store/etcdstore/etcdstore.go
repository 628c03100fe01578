// Package etcdstore keeps the relay's portalias assignments in etcd, so
// several relays share one set of portaliases. It implements store.Store
// and passes the same conformance suite as the flat file.
//
// Layout under PREFIX (one key per assignment, no lease: an assignment is
// permanent until someone removes it; the relay's other documents beside):
//
//	PREFIX/portaliases/ports/PORT  ->  "PLAYNODE SERVICE"
//	PREFIX/portaliases/version     ->  "" (rewritten by every commit)
//	PREFIX/docs/NAME               ->  a document (see Docs)
//
// Update reads the whole range at one revision, runs fn on the table built
// from it, and writes the difference in one transaction that commits only
// if the version key is still at the revision read and every port it
// takes has no key yet (created only if absent). When another relay won
// the race, fn runs again on the newer table. A port's key is the only
// record of its owner: a second index by service would double the
// operations per commit and one playnode's 64 services would exceed
// etcd's default limit of 128 operations per transaction.
package etcdstore

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"paradigm/internal/store"
)

// DefaultTimeout bounds one Load or Update, so a relay whose etcd is
// unreachable refuses new assignments with an error instead of hanging.
const DefaultTimeout = 10 * time.Second

// maxSend is the largest request the client sends: above etcd's
// --max-request-bytes (1.5 MiB by default, 10 MiB at most advised), so
// that etcd's own limit is the one that refuses, whatever it is set to.
const maxSend = 16 << 20

// maxAttempts bounds how often Update re-runs fn when other writers keep
// committing first; each lost race means another writer made progress.
const maxAttempts = 50

// Store is the portalias table in etcd. Its methods are safe for
// concurrent use; Close releases the connection.
type Store struct {
	// Timeout bounds one Load or Update; 0 means DefaultTimeout.
	Timeout time.Duration

	cli       *clientv3.Client
	endpoints string // for error messages
	url       string // etcd://ENDPOINTS/PREFIX, what String returns
	prefix    string // /PREFIX, under which every key lives
	ports     string // PREFIX/portaliases/ports/
	version   string // PREFIX/portaliases/version
	root      string // PREFIX/portaliases/, what Watch watches
	cluster   string // PREFIX/cluster/, what Join watches (cluster.go)

	mu    sync.Mutex
	seen  int64            // the etcd revision the last Load or Update read or wrote
	last  *snapshot        // the newest table read or committed; never modified
	lease clientv3.LeaseID // this relay's lease while Join holds one, else 0 (cluster.go)
}

var _ store.Store = (*Store)(nil)

// Open connects to the etcd cluster at endpoints (host:port each) and
// keeps the table under prefix. tlsConfig nil means plain TCP. It does not
// wait for etcd: an unreachable cluster shows as Load and Update errors.
func Open(endpoints []string, prefix string, tlsConfig *tls.Config) (*Store, error) {
	if len(endpoints) == 0 {
		return nil, errors.New("open etcd store: no endpoint given")
	}
	p := strings.Trim(prefix, "/")
	if p == "" {
		return nil, errors.New("open etcd store: empty key prefix (give etcd://HOST:PORT/PREFIX)")
	}
	scheme := "http://"
	if tlsConfig != nil {
		scheme = "https://"
	}
	urls := make([]string, len(endpoints))
	for i, e := range endpoints {
		urls[i] = scheme + e
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            urls,
		TLS:                  tlsConfig,
		Logger:               zap.NewNop(), // errors reach the caller; the relay logs them
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
		MaxCallSendMsgSize:   maxSend,
	})
	if err != nil {
		return nil, fmt.Errorf("open etcd store %s: %w", strings.Join(endpoints, ","), err)
	}
	root := "/" + p + "/portaliases/"
	return &Store{
		cli:       cli,
		endpoints: strings.Join(endpoints, ","),
		url:       "etcd://" + strings.Join(endpoints, ",") + "/" + p,
		prefix:    "/" + p,
		root:      root,
		ports:     root + "ports/",
		version:   root + "version",
		cluster:   "/" + p + "/cluster/",
	}, nil
}

// String is the store as --store names it, etcd://HOST:PORT[,...]/PREFIX.
func (s *Store) String() string { return s.url }

// Close releases the connection to etcd; Watch calls in progress return.
func (s *Store) Close() error {
	return s.cli.Close()
}

func (s *Store) timeout() time.Duration {
	if s.Timeout > 0 {
		return s.Timeout
	}
	return DefaultTimeout
}

// snapshot is the table's keys as read at one revision.
type snapshot struct {
	rev        int64             // the revision read
	versionMod int64             // the version key's ModRevision, 0 if absent
	owners     map[uint16]string // port -> "PLAYNODE SERVICE"
}

// read gets the whole range, at its current revision unless opts say.
func (s *Store) read(ctx context.Context, opts ...clientv3.OpOption) (*snapshot, error) {
	resp, err := s.cli.Get(ctx, s.root, append(opts, clientv3.WithPrefix())...)
	if err != nil {
		return nil, err
	}
	snap := &snapshot{rev: resp.Header.Revision, owners: make(map[uint16]string, len(resp.Kvs))}
	for _, kv := range resp.Kvs {
		if string(kv.Key) == s.version {
			snap.versionMod = kv.ModRevision
			continue
		}
		if port, ok := s.portOf(string(kv.Key)); ok {
			snap.owners[port] = string(kv.Value)
		}
	}
	return snap, nil
}

// portOf returns the port of a ports/ key; other keys under the prefix
// (none today) are not the table's.
func (s *Store) portOf(key string) (uint16, bool) {
	rest, ok := strings.CutPrefix(key, s.ports)
	if !ok {
		return 0, false
	}
	p, err := strconv.ParseUint(rest, 10, 16)
	if err != nil || p == 0 {
		return 0, false
	}
	return uint16(p), true
}

// table builds a store.Table from port owners. A value that is not
// "PLAYNODE SERVICE" (a bad hand edit with etcdctl) is an error naming
// its key, as a bad line of the flat file names its line.
func (s *Store) table(owners map[uint16]string) (*store.Table, error) {
	t := store.New()
	var errs []error
	for port, owner := range owners {
		playnode, service, ok := strings.Cut(owner, " ")
		if !ok {
			errs = append(errs, fmt.Errorf("etcd key %s%d: value %q is not \"PLAYNODE SERVICE\"", s.ports, port, owner))
			continue
		}
		if err := t.Set(store.Assignment{Playnode: playnode, Service: service, Portalias: port}); err != nil {
			errs = append(errs, fmt.Errorf("etcd key %s%d: %w", s.ports, port, err))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return t, nil
}

// remember keeps snap for the next Update, if it is the newest seen.
func (s *Store) remember(snap *snapshot) {
	s.mu.Lock()
	if s.last == nil || snap.rev > s.last.rev {
		s.last = snap
	}
	s.seen = max(s.seen, snap.rev)
	s.mu.Unlock()
}

func (s *Store) cached() *snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

// Load reads the current assignments.
func (s *Store) Load(ctx context.Context) (*store.Table, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout())
	defer cancel()
	snap, err := s.read(ctx)
	if err != nil {
		return nil, s.callErr("load portaliases from", err)
	}
	s.remember(snap)
	return s.table(snap.owners)
}

// errConflict means another writer committed between read and write.
var errConflict = errors.New("another writer committed first")

// Update runs fn on the current assignments and commits what it changed
// in one transaction, re-running fn when another writer committed first
// (up to maxAttempts times). If fn fails, nothing is written. The first
// attempt starts from the table this Store last read or committed, without
// reading the whole range again: the transaction's compare on the version
// key fails if that table is out of date, and the next attempt reads.
func (s *Store) Update(ctx context.Context, fn func(*store.Table) error) (*store.Table, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout())
	defer cancel()
	for attempt := 1; ; attempt++ {
		t, err := s.try(ctx, fn, attempt > 1)
		if !errors.Is(err, errConflict) {
			return t, err
		}
		if attempt == maxAttempts {
			return nil, fmt.Errorf("update portaliases in etcd %s: gave up after %d attempts: %w", s.endpoints, attempt, err)
		}
		// A short random pause so writers that collided do not collide again.
		select {
		case <-ctx.Done():
			return nil, s.callErr("update portaliases in", ctx.Err())
		case <-time.After(rand.N(time.Duration(attempt) * time.Millisecond)):
		}
	}
}

// try is one read-modify-write, from the remembered table unless fresh;
// errConflict when it lost a race.
func (s *Store) try(ctx context.Context, fn func(*store.Table) error, fresh bool) (*store.Table, error) {
	snap := s.cached()
	if fresh || snap == nil {
		var err error
		if snap, err = s.read(ctx); err != nil {
			return nil, s.callErr("update portaliases in", err)
		}
		s.remember(snap)
		fresh = true
	}
	t, err := s.table(snap.owners)
	if err != nil {
		return nil, fmt.Errorf("update portaliases in etcd %s: %w", s.endpoints, err)
	}
	if err := fn(t); err != nil {
		return nil, err
	}
	after := make(map[uint16]string, t.Len())
	t.Each(func(a store.Assignment) { after[a.Portalias] = a.Playnode + " " + a.Service })
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(s.version), "=", snap.versionMod)}
	var ops []clientv3.Op
	for port, owner := range after {
		key := s.ports + strconv.Itoa(int(port))
		switch old, had := snap.owners[port]; {
		case !had:
			// Taken only if nobody holds it, whatever the version key says.
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(key), "=", 0))
			ops = append(ops, clientv3.OpPut(key, owner))
		case old != owner:
			ops = append(ops, clientv3.OpPut(key, owner))
		}
	}
	for port := range snap.owners {
		if _, kept := after[port]; !kept {
			ops = append(ops, clientv3.OpDelete(s.ports+strconv.Itoa(int(port))))
		}
	}
	if len(ops) == 0 {
		if !fresh {
			// Nothing to commit, so nothing checks the remembered
			// table: read, so the table returned is the current one.
			return s.try(ctx, fn, true)
		}
		return t, nil
	}
	ops = append(ops, clientv3.OpPut(s.version, ""))
	resp, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if errors.Is(err, rpctypes.ErrTooManyOps) {
		return nil, fmt.Errorf("update portaliases in etcd %s: %d changes in one transaction exceed etcd's --max-txn-ops: %w",
			s.endpoints, len(ops)-1, err)
	}
	if err != nil {
		return nil, s.callErr("update portaliases in", err)
	}
	if !resp.Succeeded {
		return nil, errConflict
	}
	rev := resp.Header.Revision
	s.remember(&snapshot{rev: rev, versionMod: rev, owners: after})
	return t, nil
}

// callErr wraps the error of an etcd call made to do op. A deadline
// mostly means etcd never answered: the client waits for a connection and
// keeps why it has none (down, TLS refused) to itself.
func (s *Store) callErr(op string, err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s etcd %s: no answer in time (is etcd up, and does it accept this relay's TLS settings?): %w", op, s.endpoints, err)
	}
	return fmt.Errorf("%s etcd %s: %w", op, s.endpoints, err)
}
