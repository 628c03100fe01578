package relay

import (
	"context"
	"path/filepath"
	"time"

	"paradigm/internal/identity"
	"paradigm/internal/proto"
	"paradigm/internal/store"
)

// revokePoll is how often the authorized-nodes file is checked for edits,
// at most: a revocation (a deleted line, `paradigm-relay revoke`) cuts the
// playnode within it. Checking is one stat, cheap at any rate.
const revokePoll = 250 * time.Millisecond

// watchAuthorized applies operator edits of the authorized-nodes file while
// the relay runs (a deleted line revokes the playnode and ends its session,
// within revokePoll), and retries portaliases that could not be bound and
// announces host key changes every reload interval, until ctx is done.
func (r *Relay) watchAuthorized(ctx context.Context) {
	path := filepath.Join(r.cfg.DataDir, AuthorizedFile)
	since := r.authStamp
	t := time.NewTicker(min(r.cfg.ReloadInterval, revokePoll))
	defer t.Stop()
	lastRetry := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if st := store.StampOf(path); st != since {
			since = st
			r.reloadAuthorized(path)
		}
		if time.Since(lastRetry) >= r.cfg.ReloadInterval {
			lastRetry = time.Now()
			r.retryUnbound()
			r.pushHostKeys() // hostkey.go
		}
	}
}

// reloadAuthorized applies a changed authorized-nodes file and ends the
// sessions of keys no longer bound to their playnode. A file that no longer
// parses is logged and the previous set kept: a typo must not lock out the
// whole fleet (nor revoke anyone).
func (r *Relay) reloadAuthorized(path string) {
	r.authMu.Lock()
	defer r.authMu.Unlock()
	set, err := loadAuthorized(path)
	if err != nil {
		r.log.Error("authorized nodes file not reloaded, keeping the previous one", "err", err)
		return
	}
	revoked := r.reg.setAuth(set)
	r.log.Info("authorized nodes reloaded", "keys", len(set.byKey))
	for _, s := range revoked {
		s.log.Warn("playnode key revoked, disconnecting", "fingerprint", identity.Fingerprint(s.key))
		s.refuse(&proto.Refuse{Code: proto.RefuseRevoked, Reason: "this playnode's key was removed from the relay's authorized nodes"})
	}
}
