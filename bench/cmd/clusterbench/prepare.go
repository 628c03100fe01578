package main

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"

	"golang.org/x/crypto/ssh"

	"paradigm/internal/identity"
	"paradigm/internal/relay"
	"paradigm/internal/store"
	"paradigm/internal/store/etcdstore"
)

// playnode is one playnode the run authorizes: a simulated one (echo
// only) or the measured one (echo, sink, source).
type playnode struct {
	name     string
	keyFile  string
	key      ssh.PublicKey
	services []string
	port     uint16 // portalias of its first service; the others follow
}

// simName names simulated playnode i; benchName is the measured one.
func simName(i int) string { return fmt.Sprintf("sim-%05d", i) }

const benchName = "meshbench"

// The measured playnode's services, in portalias order.
var benchServices = []string{"echo", "sink", "source"}

// makeKeys creates the keys of n simulated playnodes and of the measured
// one, 16 at a time, and gives each its portalias(es) from low upwards.
func makeKeys(dir string, n int, low uint16) ([]*playnode, error) {
	pns := make([]*playnode, n+1)
	for i := range n {
		pns[i] = &playnode{name: simName(i), services: []string{"echo"}, port: low + uint16(i)}
	}
	pns[n] = &playnode{name: benchName, services: benchServices, port: low + uint16(n)}
	errs := make([]error, len(pns))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i, p := range pns {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			p.keyFile = filepath.Join(dir, p.name+".key")
			signer, err := identity.GenerateKey(p.keyFile, p.name)
			if err != nil {
				errs[i] = err
				return
			}
			p.key = signer.PublicKey()
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return pns, nil
}

// authorizeAll binds every playnode's key in the cluster's authorized
// nodes, one etcd document shared by the three relays (PREFIX/docs/
// authorized_nodes, what `paradigm-relay authorize --store ...` edits).
// The first goes through relay.Site.Authorize; the others are appended in
// the same syntax in one update, because each Authorize call rereads and
// rewrites the whole document: O(n²) for 1,000 keys (tunnelbench does the
// same with the flat file).
func authorizeAll(ctx context.Context, es *etcdstore.Store, pns []*playnode) error {
	docs := es.Docs()
	if err := (relay.Site{Docs: docs}).Authorize(pns[0].name, pns[0].key, pns[0].name); err != nil {
		return err
	}
	var more []byte
	for _, p := range pns[1:] {
		more = fmt.Appendf(more, "playnode=%q %s\n", p.name, identity.PublicLine(p.key, p.name))
	}
	return docs.Update(ctx, []string{relay.AuthorizedFile}, func(cur map[string][]byte) (map[string][]byte, error) {
		return map[string][]byte{relay.AuthorizedFile: append(slices.Clip(cur[relay.AuthorizedFile]), more...)}, nil
	})
}

// pinPortaliases writes every playnode's portaliases into the cluster's
// etcd store, so that portalias = low + index on every relay (what a
// cluster that has seen these playnodes before has). It writes 100 at a
// time: one update is one etcd transaction, and etcd refuses more than
// --max-txn-ops (default 128) operations in one.
func pinPortaliases(ctx context.Context, s *etcdstore.Store, pns []*playnode) error {
	var all []store.Assignment
	for _, p := range pns {
		for k, svc := range p.services {
			all = append(all, store.Assignment{Playnode: p.name, Service: svc, Portalias: p.port + uint16(k)})
		}
	}
	for chunk := range slices.Chunk(all, 100) {
		_, err := s.Update(ctx, func(t *store.Table) error {
			for _, a := range chunk {
				if err := t.Set(a); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("pin portaliases in etcd: %w", err)
		}
	}
	return nil
}
