package relay

import (
	"paradigm/internal/proto"
	"paradigm/internal/store"
)

// HandshakesInProgress is how many SSH handshakes hold a MaxHandshakes slot
// now, for tests that watch a reconnection storm.
func HandshakesInProgress(r *Relay) int { return len(r.hsSlots) }

// Online reports whether playnode is connected and, if so, the portaliases
// of the services it registered, sorted by service. It reads the registry
// directly: tests poll it for a thousand playnodes, where a whole Snapshot
// per call would cost the relay under test more than the test measures.
func (r *Relay) Online(playnode string) ([]proto.Portalias, bool) {
	s := r.reg.session(playnode)
	if s == nil {
		return nil, false
	}
	return portaliasesOf(r.reg.currentTable(), playnode, s.services), true
}

// SetAliasChecked sets the hook AliasSet runs between its check that the
// port is free and its commit; nil removes it.
func SetAliasChecked(fn func(store.Assignment)) { aliasChecked = fn }
