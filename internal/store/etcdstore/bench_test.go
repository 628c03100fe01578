package etcdstore

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"paradigm/internal/store"
	"paradigm/internal/store/etcdstore/etcdtest"
)

// BenchmarkUpdate assigns one new portalias per Update, the relay's write
// when a new service registers, on a table that already holds size
// assignments: etcd (read the whole table, one transaction) beside the
// flat file (lock, read, rewrite with fsync).
func BenchmarkUpdate(b *testing.B) {
	for _, size := range []int{100, 10000} {
		b.Run(fmt.Sprintf("etcd/%d", size), func(b *testing.B) {
			e := etcdtest.Start(b)
			s, err := Open([]string{e.Client}, "bench", nil)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			benchUpdate(b, s, size)
		})
		b.Run(fmt.Sprintf("file/%d", size), func(b *testing.B) {
			benchUpdate(b, &store.File{Path: filepath.Join(b.TempDir(), "portaliases")}, size)
		})
	}
}

// fill adds size assignments, 100 per Update.
func fill(b *testing.B, s store.Store, size int) {
	b.Helper()
	for done := 0; done < size; done += 100 {
		if _, err := s.Update(context.Background(), func(t *store.Table) error {
			for i := done; i < min(done+100, size); i++ {
				if err := t.Set(store.Assignment{Playnode: fmt.Sprint("pi", i/8), Service: fmt.Sprint("svc", i%8), Portalias: uint16(10000 + i)}); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
	}
}

func benchUpdate(b *testing.B, s store.Store, size int) {
	fill(b, s, size)
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		if _, err := s.Update(context.Background(), func(t *store.Table) error {
			port, _ := t.FirstFree(30000, 65535)
			n++
			return t.Set(store.Assignment{Playnode: "new", Service: fmt.Sprint("svc", n), Portalias: port})
		}); err != nil {
			b.Fatal(err)
		}
	}
}
