package etcdstore

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"paradigm/internal/store"
	"paradigm/internal/store/docstest"
	"paradigm/internal/store/etcdstore/etcdtest"
)

// TestDocsConformance runs the Docs suite over etcd: one real etcd, a
// fresh prefix per subtest, each Docs value its own client (its own
// relay).
func TestDocsConformance(t *testing.T) {
	e := etcdtest.Start(t)
	n := 0
	docstest.Run(t, func(t *testing.T) docstest.Open {
		n++
		prefix := fmt.Sprintf("docs%d", n)
		return func(t *testing.T) store.Docs { return open(t, e, prefix).Docs() }
	})
}

// TestDocsLayout: a document is the key PREFIX/docs/NAME holding its
// bytes as given, beside the portalias table, and Where names that key.
func TestDocsLayout(t *testing.T) {
	e := etcdtest.Start(t)
	ctx := context.Background()
	s := open(t, e, "/layout/")
	d := s.Docs()
	text := "# header\nplaynode=\"a\" ssh-ed25519 AAAA a\n"
	if err := d.Update(ctx, []string{"authorized_nodes"}, func(map[string][]byte) (map[string][]byte, error) {
		return map[string][]byte{"authorized_nodes": []byte(text)}, nil
	}); err != nil {
		t.Fatal(err)
	}
	resp, err := s.cli.Get(ctx, "/layout/docs/authorized_nodes")
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != text {
		t.Errorf("key /layout/docs/authorized_nodes: got %v, want %q", resp.Kvs, text)
	}
	if w := d.Where("authorized_nodes"); w != "etcd key /layout/docs/authorized_nodes" {
		t.Errorf("Where: got %q, want %q", w, "etcd key /layout/docs/authorized_nodes")
	}
	tab, err := s.Load(ctx)
	if err != nil || tab.Len() != 0 {
		t.Errorf("the portalias table beside the documents: %v, %v; want empty", tab, err)
	}
}

// TestDocsUpdateRerunsOnConflict: a key changed behind an Update's back
// (another relay, or etcdctl) between its read and its commit makes the
// commit fail and fn run again on the new value: nothing is lost.
func TestDocsUpdateRerunsOnConflict(t *testing.T) {
	e := etcdtest.Start(t)
	ctx := context.Background()
	s := open(t, e, "conflict")
	d := s.Docs()
	calls := 0
	err := d.Update(ctx, []string{"tokens", "pending"}, func(cur map[string][]byte) (map[string][]byte, error) {
		calls++
		if calls == 1 { // another writer of a document this Update read but does not write
			if _, err := s.cli.Put(ctx, "/conflict/docs/pending", "other\n"); err != nil {
				return nil, err
			}
		}
		return map[string][]byte{"tokens": append(bytes.Clone(cur["pending"]), "mine\n"...)}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := d.Read(ctx, "tokens")
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "other\nmine\n" || calls != 2 {
		t.Errorf("tokens = %q after %d runs of fn, want %q after 2", got, calls, "other\nmine\n")
	}
}

// TestDocsTooLarge: a document over etcd's request limit (1.5 MiB by
// default) or the client's (16 MiB) is refused with an error naming
// etcd's, and nothing is committed.
func TestDocsTooLarge(t *testing.T) {
	e := etcdtest.Start(t)
	ctx := context.Background()
	d := open(t, e, "large").Docs()
	for _, size := range []int{1600 << 10, 4 << 20, 17 << 20} {
		err := d.Update(ctx, []string{"authorized_nodes"}, func(map[string][]byte) (map[string][]byte, error) {
			return map[string][]byte{"authorized_nodes": bytes.Repeat([]byte("x"), size)}, nil
		})
		if err == nil || !strings.Contains(err.Error(), "--max-request-bytes") {
			t.Fatalf("Update of a %d-byte document: got %v, want an error naming --max-request-bytes", size, err)
		}
		if got, err := d.Read(ctx, "authorized_nodes"); got != nil || err != nil {
			t.Errorf("after the refused Update: %d bytes, %v; want nothing", len(got), err)
		}
	}
}

// TestDocsWatchEtcdKilled: etcd is killed and restarted; a Watch started
// before goes on and reports a commit made after, and a deletion of the
// key is reported as the empty document.
func TestDocsWatchEtcdKilled(t *testing.T) {
	e := etcdtest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := open(t, e, "killed")
	d := s.Docs()
	versions := make(chan string, 100)
	done := make(chan error)
	go func() {
		done <- d.Watch(ctx, "doc", func(data []byte, err error) {
			if err == nil { // errors while etcd is down are expected
				versions <- string(data)
			}
		})
	}()
	next := func(want string) {
		t.Helper()
		for {
			select {
			case got := <-versions:
				if got == want {
					return
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("Watch did not report %q", want)
			}
		}
	}
	next("")
	set := func(v string) {
		t.Helper()
		if err := d.Update(ctx, []string{"doc"}, func(map[string][]byte) (map[string][]byte, error) {
			return map[string][]byte{"doc": []byte(v)}, nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	set("before\n")
	next("before\n")
	e.Kill()
	e.Restart()
	set("after\n")
	next("after\n")
	if _, err := s.cli.Delete(ctx, "/killed/docs/doc"); err != nil {
		t.Fatal(err)
	}
	next("")
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Watch at cancel: got %v, want nil", err)
	}
}

// TestDocsWatchAfterCompaction: the watch's revisions were compacted away
// while it was cut off; it reports the current version and goes on.
func TestDocsWatchAfterCompaction(t *testing.T) {
	e := etcdtest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, w := open(t, e, "compact"), open(t, e, "compact")
	d := s.Docs()
	versions := make(chan string, 100)
	// follow from a revision that is compacted away, as after a long cut.
	put := func(v string) int64 {
		t.Helper()
		resp, err := w.cli.Put(ctx, "/compact/docs/doc", v)
		if err != nil {
			t.Fatal(err)
		}
		return resp.Header.Revision
	}
	first := put("v1\n")
	put("v2\n")
	last := put("v3\n")
	if _, err := w.cli.Compact(ctx, last); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		rev, ok := first, true
		for ok && ctx.Err() == nil {
			rev, ok = d.follow(ctx, "doc", rev, func(data []byte, err error) {
				if err == nil {
					versions <- string(data)
				}
			})
		}
	}()
	select {
	case got := <-versions:
		if got != "v3\n" {
			t.Errorf("after compaction: got %q, want the current %q", got, "v3\n")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no report after compaction")
	}
	put("v4\n")
	select {
	case got := <-versions:
		if got != "v4\n" {
			t.Errorf("after compaction, the next commit: got %q, want %q", got, "v4\n")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no report of the commit after compaction")
	}
	cancel()
	<-done
}
