package relay

import (
	"errors"
	"fmt"
	"paradigm/internal/store"

	"paradigm/internal/proto"
)

// What the admin endpoint (internal/admin) needs of a running relay beyond
// Snapshot and Subscribe.

// ReasonDisconnected: the operator disconnected the playnode (admin API);
// the node reconnects after its backoff.
const ReasonDisconnected = "disconnected"

// ErrNotOnline is returned by Disconnect for a playnode without a session.
var ErrNotOnline = errors.New("playnode is not online")

// Disconnect ends playnode's session: the node is told why and reconnects
// after its backoff. The EventDown says ReasonDisconnected.
func (r *Relay) Disconnect(playnode string) error {
	s := r.reg.session(playnode)
	if s == nil {
		return fmt.Errorf("disconnect %s: %w", playnode, ErrNotOnline)
	}
	s.refuse(&proto.Refuse{Code: proto.RefuseCode(ReasonDisconnected), Reason: "disconnected by the relay's operator"})
	return nil
}

// Bind is the address portaliases listen on.
func (r *Relay) Bind() string { return r.cfg.Bind }

// PortRange is the range portaliases are assigned from (--ports).
func (r *Relay) PortRange() (low, high uint16) { return r.cfg.PortLow, r.cfg.PortHigh }

// DataDir is the relay's data folder.
func (r *Relay) DataDir() string { return r.cfg.DataDir }

// Store is where the relay keeps its portaliases: the data folder's file,
// or the cluster's shared store.
func (r *Relay) Store() store.Store { return r.store }

// Site is where this relay's authorization lives: Config.Docs, or the flat
// files in its data folder. The admin API's approve, reject and pending
// list go through it.
func (r *Relay) Site() Site { return Site{DataDir: r.cfg.DataDir, Docs: r.docs} }
