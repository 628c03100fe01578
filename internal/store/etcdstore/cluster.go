package etcdstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"paradigm/internal/store"
)

// The cluster's keys, beside the assignments, all under this relay's lease
// (store.Cluster):
//
//	PREFIX/cluster/members/ID      ->  JSON store.Member
//	PREFIX/cluster/homes/PLAYNODE  ->  JSON store.Home
//
// A relay that dies, or cannot renew its lease for its TTL, loses both when
// etcd expires the lease; the other relays see that in their watch.

var _ store.Cluster = (*Store)(nil)

// errNoLease: Claim before Join holds a lease, or after it lost it.
var errNoLease = errors.New("this relay holds no lease in etcd yet (etcd unreachable?)")

func (s *Store) memberKey(id string) string     { return s.cluster + "members/" + id }
func (s *Store) homeKey(playnode string) string { return s.cluster + "homes/" + playnode }

// Join registers self under a lease of ttl (whole seconds, at least 2) and
// reports the cluster's members and homes to fn until ctx is done; then it
// revokes the lease, so a relay that stops cleanly leaves at once. See
// store.Cluster.
func (s *Store) Join(ctx context.Context, self store.Member, ttl time.Duration, fn func(store.ClusterChange)) error {
	secs := max(int64(math.Ceil(ttl.Seconds())), 2)
	val, err := json.Marshal(self)
	if err != nil {
		return err
	}
	var lease clientv3.LeaseID
	for !s.done(ctx) {
		lease, err = s.register(ctx, lease, secs, self.ID, string(val))
		if err != nil {
			if !s.pause(ctx) {
				break
			}
			continue
		}
		s.setLease(lease)
		fn(store.ClusterChange{Joined: true})
		s.keepAndWatch(ctx, lease, fn)
		s.setLease(0)
		if s.done(ctx) {
			break
		}
		fn(store.ClusterChange{LeaseLost: true})
	}
	s.setLease(0)
	if lease != 0 && s.cli.Ctx().Err() == nil {
		// A relay that stops cleanly takes its member key and its
		// playnodes' homes with it at once, not a TTL later.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		s.cli.Revoke(rctx, lease)
		cancel()
	}
	return nil
}

func (s *Store) setLease(id clientv3.LeaseID) {
	s.mu.Lock()
	s.lease = id
	s.mu.Unlock()
}

func (s *Store) currentLease() clientv3.LeaseID {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lease
}

// register takes a lease (old, if etcd still has it: an outage shorter
// than etcd's own lease extension keeps every claim) and puts the member
// key under it.
func (s *Store) register(ctx context.Context, old clientv3.LeaseID, secs int64, id, val string) (clientv3.LeaseID, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout())
	defer cancel()
	lease := old
	if old != 0 {
		if ttl, err := s.cli.TimeToLive(ctx, old); err != nil {
			return old, err
		} else if ttl.TTL <= 0 {
			lease = 0
		}
	}
	if lease == 0 {
		g, err := s.cli.Grant(ctx, secs)
		if err != nil {
			return 0, err
		}
		lease = g.ID
	}
	if _, err := s.cli.Put(ctx, s.memberKey(id), val, clientv3.WithLease(lease)); err != nil {
		return lease, err
	}
	return lease, nil
}

// keepAndWatch keeps lease alive and reports the cluster's state, then its
// changes, until ctx is done or the lease could not be renewed in time.
func (s *Store) keepAndWatch(ctx context.Context, lease clientv3.LeaseID, fn func(store.ClusterChange)) {
	kctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ka, err := s.cli.KeepAlive(kctx, lease)
	if err != nil {
		return
	}
	for {
		rev, ok := s.clusterBaseline(kctx, ka, fn)
		if !ok {
			return
		}
		if !s.watchCluster(kctx, ka, rev, fn) {
			return
		}
	}
}

// clusterBaseline reads every member and home and reports them after a
// Reset; false when ctx is done or the lease was lost meanwhile.
func (s *Store) clusterBaseline(ctx context.Context, ka <-chan *clientv3.LeaseKeepAliveResponse, fn func(store.ClusterChange)) (int64, bool) {
	for {
		rctx, cancel := context.WithTimeout(ctx, s.timeout())
		resp, err := s.cli.Get(rctx, s.cluster, clientv3.WithPrefix())
		cancel()
		if err == nil {
			all := &store.ClusterState{Homes: map[string]store.Home{}}
			for _, kv := range resp.Kvs {
				c, _ := s.clusterChange(kv, false)
				switch {
				case c.Member != nil:
					all.Members = append(all.Members, *c.Member)
				case c.Home != nil:
					all.Homes[c.Playnode] = *c.Home
				}
			}
			fn(store.ClusterChange{Reset: all})
			return resp.Header.Revision, true
		}
		if !drain(ka) || !s.pause(ctx) {
			return 0, false
		}
	}
}

// drain reads the keepalive answers waiting in ka; false once it is closed
// (the lease expired, or ctx ended).
func drain(ka <-chan *clientv3.LeaseKeepAliveResponse) bool {
	for {
		select {
		case _, ok := <-ka:
			if !ok {
				return false
			}
		default:
			return true
		}
	}
}

// watchCluster reports changes after rev until the watch breaks (true:
// read the baseline again) or ctx ends or the lease is lost (false).
func (s *Store) watchCluster(ctx context.Context, ka <-chan *clientv3.LeaseKeepAliveResponse, rev int64, fn func(store.ClusterChange)) bool {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wch := s.cli.Watch(wctx, s.cluster, clientv3.WithPrefix(), clientv3.WithRev(rev+1), clientv3.WithPrevKV())
	for {
		select {
		case _, ok := <-ka:
			if !ok {
				return false
			}
		case resp, ok := <-wch:
			if !ok || resp.Err() != nil || resp.CompactRevision != 0 {
				return !s.done(ctx) && s.pause(ctx)
			}
			for _, ev := range resp.Events {
				if c, ok := s.clusterChange(ev.Kv, ev.Type == mvccpb.DELETE); ok {
					fn(c)
				}
			}
		}
	}
}

// clusterChange decodes one key of the cluster prefix. A value that does
// not decode (a hand edit) counts as absent.
func (s *Store) clusterChange(kv *mvccpb.KeyValue, deleted bool) (store.ClusterChange, bool) {
	key := string(kv.Key)
	if id, ok := strings.CutPrefix(key, s.cluster+"members/"); ok {
		var m store.Member
		if deleted || json.Unmarshal(kv.Value, &m) != nil || m.ID != id {
			return store.ClusterChange{MemberGone: id}, true
		}
		return store.ClusterChange{Member: &m}, true
	}
	if name, ok := strings.CutPrefix(key, s.cluster+"homes/"); ok {
		var h store.Home
		if deleted || json.Unmarshal(kv.Value, &h) != nil {
			return store.ClusterChange{Playnode: name}, true
		}
		return store.ClusterChange{Playnode: name, Home: &h}, true
	}
	return store.ClusterChange{}, false
}

// Claim records h as playnode's home under this relay's lease unless a
// newer session is at home (see store.Cluster). The compare on the key's
// revision makes read-check-write one step: a claim that raced another
// reads again.
func (s *Store) Claim(ctx context.Context, playnode string, h store.Home) (store.Home, bool, error) {
	lease := s.currentLease()
	if lease == 0 {
		return store.Home{}, false, fmt.Errorf("claim playnode %s in etcd %s: %w", playnode, s.endpoints, errNoLease)
	}
	val, err := json.Marshal(h)
	if err != nil {
		return store.Home{}, false, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout())
	defer cancel()
	key := s.homeKey(playnode)
	for range maxAttempts {
		resp, err := s.cli.Get(ctx, key)
		if err != nil {
			return store.Home{}, false, s.callErr("claim playnode "+playnode+" in", err)
		}
		cmp := clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
		if len(resp.Kvs) > 0 {
			kv := resp.Kvs[0]
			var old store.Home
			if json.Unmarshal(kv.Value, &old) == nil && old.Session != h.Session && old.Newer(h) {
				return old, false, nil
			}
			cmp = clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision)
		}
		t, err := s.cli.Txn(ctx).If(cmp).Then(clientv3.OpPut(key, string(val), clientv3.WithLease(lease))).Commit()
		if err != nil {
			return store.Home{}, false, s.callErr("claim playnode "+playnode+" in", err)
		}
		if t.Succeeded {
			return h, true, nil
		}
	}
	return store.Home{}, false, fmt.Errorf("claim playnode %s in etcd %s: gave up after %d attempts: %w", playnode, s.endpoints, maxAttempts, errConflict)
}

// Release removes playnode's home if it is still h, byte for byte as Claim
// wrote it.
func (s *Store) Release(ctx context.Context, playnode string, h store.Home) error {
	val, err := json.Marshal(h)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout())
	defer cancel()
	key := s.homeKey(playnode)
	_, err = s.cli.Txn(ctx).If(clientv3.Compare(clientv3.Value(key), "=", string(val))).Then(clientv3.OpDelete(key)).Commit()
	if err != nil {
		return s.callErr("release playnode "+playnode+" in", err)
	}
	return nil
}
