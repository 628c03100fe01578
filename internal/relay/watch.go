package relay

import (
	"bytes"
	"context"
	"sync"
	"time"

	"paradigm/internal/identity"
	"paradigm/internal/proto"
)

// revokePoll is how often the flat authorized-nodes file is checked for
// edits, at most: a revocation (a deleted line, `paradigm-relay revoke`)
// cuts the playnode within it. Checking is one stat, cheap at any rate. A
// shared store tells the relay of a change as it is committed instead.
const revokePoll = 250 * time.Millisecond

// watchAuthorized applies changes of the authorized nodes while the relay
// runs (a removed line revokes the playnode and ends its session at once:
// within revokePoll for the flat file), and retries portaliases that could
// not be bound and announces host key changes every reload interval, until
// ctx is done.
func (r *Relay) watchAuthorized(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		failing := false
		r.docs.Watch(ctx, AuthorizedFile, func(_ []byte, err error) {
			if err != nil {
				if !failing { // once per outage, not once a second
					r.log.Error("authorized nodes not readable, keeping the previous ones", "err", err)
				}
				failing = true
				return
			}
			failing = false
			r.reloadAuthorized()
		})
	})
	t := time.NewTicker(r.cfg.ReloadInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r.retryUnbound()
		r.pushHostKeys() // hostkey.go
	}
}

// loadAuthorized reads the authorized nodes for New.
func (r *Relay) loadAuthorized() (*authorizedSet, error) {
	ctx, cancel := docCtx()
	defer cancel()
	set, data, err := readAuthorized(ctx, r.docs)
	r.authText = data
	return set, err
}

// reloadAuthorized reads the authorized nodes and, if they changed, applies
// them and ends the sessions of keys no longer bound to their playnode. It
// reads rather than taking the version a watch reported, so that the set
// installed last is always the newest. A document that no longer parses is
// logged and the previous set kept: a typo must not lock out the whole
// fleet (nor revoke anyone).
func (r *Relay) reloadAuthorized() {
	r.authMu.Lock()
	defer r.authMu.Unlock()
	ctx, cancel := docCtx()
	defer cancel()
	set, data, err := readAuthorized(ctx, r.docs)
	if err != nil {
		r.log.Error("authorized nodes file not reloaded, keeping the previous one", "err", err)
		return
	}
	if bytes.Equal(data, r.authText) {
		return
	}
	r.authText = data
	revoked := r.reg.setAuth(set)
	r.log.Info("authorized nodes reloaded", "keys", len(set.byKey))
	for _, s := range revoked {
		s.log.Warn("playnode key revoked, disconnecting", "fingerprint", identity.Fingerprint(s.key))
		s.refuse(&proto.Refuse{Code: proto.RefuseRevoked, Reason: "this playnode's key was removed from the relay's authorized nodes"})
	}
}
