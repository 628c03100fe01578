package relay

import (
	"context"
	"os"
	"path/filepath"
	"time"

	"paradigm/internal/identity"
	"paradigm/internal/proto"
)

// fileStamp identifies a version of a file cheaply; a change in any field
// means the file was rewritten (the store and Authorize replace by rename,
// editors rewrite or replace).
type fileStamp struct {
	mod  time.Time
	size int64
	ino  uint64
	ok   bool
}

func stampOf(path string) fileStamp {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}
	}
	return fileStamp{mod: fi.ModTime(), size: fi.Size(), ino: inode(fi), ok: true}
}

// watch applies operator edits to the authorized-nodes and portalias files
// while the relay runs (revocations end sessions, moved portaliases are
// rebound and announced), retries portaliases that could not be bound, and
// flushes status.json. Polling keeps it portable and needs no dependency;
// the interval bounds how long a revocation takes.
func (r *Relay) watch(ctx context.Context) {
	authPath := filepath.Join(r.cfg.DataDir, AuthorizedFile)
	authStamp, storeStamp := r.authStamp, r.storeStamp
	t := time.NewTicker(r.cfg.ReloadInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if st := stampOf(authPath); st != authStamp {
			authStamp = st
			r.reloadAuthorized(authPath)
		}
		if st := stampOf(r.store.Path); st != storeStamp {
			storeStamp = st
			r.reloadStore()
		} else {
			r.retryUnbound()
		}
		r.status.flush()
	}
}

// reloadAuthorized applies a changed authorized-nodes file and ends the
// sessions of keys no longer bound to their playnode. A file that no longer
// parses is logged and the previous set kept: a typo must not lock out the
// whole fleet (nor revoke anyone).
func (r *Relay) reloadAuthorized(path string) {
	set, err := loadAuthorized(path)
	if err != nil {
		r.log.Error("authorized nodes file not reloaded, keeping the previous one", "err", err)
		return
	}
	r.mu.Lock()
	r.auth = set
	var revoked []*nodeSession
	for _, s := range r.sessions {
		if name, ok := set.lookup(s.key); !ok || name != s.playnode {
			revoked = append(revoked, s)
		}
	}
	r.mu.Unlock()
	r.log.Info("authorized nodes reloaded", "keys", len(set.byKey))
	for _, s := range revoked {
		s.log.Warn("playnode key revoked, disconnecting", "fingerprint", identity.Fingerprint(s.key))
		r.wg.Go(func() {
			s.refuse(&proto.Refuse{Code: proto.RefuseRevoked, Reason: "this playnode's key was removed from the relay's authorized nodes"})
		})
	}
}

// reloadStore applies operator changes to the portalias file (alias set/rm
// or a hand edit) and tells online playnodes whose portaliases moved.
func (r *Relay) reloadStore() {
	r.storeMu.Lock()
	defer r.storeMu.Unlock()
	t, err := r.store.Load()
	if err != nil {
		r.log.Error("portalias file not reloaded, keeping the previous one", "err", err)
		return
	}
	r.syncListeners(t)
	r.mu.Lock()
	sessions := make([]*nodeSession, 0, len(r.sessions))
	for _, s := range r.sessions {
		sessions = append(sessions, s)
	}
	r.mu.Unlock()
	for _, s := range sessions {
		var services []proto.Service
		for _, name := range s.serviceNames() {
			services = append(services, s.services[name])
		}
		s.updatePortaliases(portaliasesOf(t, s.playnode, services))
	}
}

// retryUnbound binds portaliases whose port was busy before.
func (r *Relay) retryUnbound() {
	r.storeMu.Lock()
	defer r.storeMu.Unlock()
	r.mu.Lock()
	t := r.table
	missing := false
	for _, a := range t.All() {
		if _, ok := r.listeners[a.Portalias]; !ok {
			missing = true
			break
		}
	}
	r.mu.Unlock()
	if missing {
		r.syncListeners(t)
	}
}
