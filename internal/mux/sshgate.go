package mux

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"
)

// yamux v0.1.2 frame types and the flag that opens a stream (spec.md).
const (
	yamuxTypeWindowUpdate = 1
	yamuxFlagSYN          = 1
)

// peerStreamGate watches the frames a node sends on one lane of a relay
// session and ends the session, before yamux sees the frame, when it opens
// a stream the relay will never accept. yamux gives such a stream a 256 KiB
// window before anyone accepts it and keeps it in the accept backlog (128
// per lane) for the session's life, so without the gate a node that never
// says hello held 64 MiB of the relay's memory per connection (measured by
// TestPendingStreamsMemory), and yamux has no way to refuse streams itself
// short of its GoAway, which cannot be sent before the first stream, the
// control stream, is in. The relay accepts streams on lane 0 only, so a
// stream opened on another lane is refused whatever the limit.
//
// It only reads: the bytes pass to yamux unchanged, and Read fails, for
// good, at the chunk holding the offending header; the session dies of it.
// Read is called by the lane's yamux receive loop only, so the parser needs
// no lock; opened is the session's, shared by its lanes.
type peerStreamGate struct {
	lane   int32
	limit  int           // streams the peer may open on the session; 0: no limit
	opened *atomic.Int32 // streams the peer opened on the session
	// refused, the session's, is set at the refusal: it quiets yamux's
	// log lines about the end (yamuxLogger). Nil in tests.
	refused *atomic.Bool

	hdr  [yamuxHeaderSize]byte
	hn   int    // bytes of hdr filled
	body uint32 // bytes of the current data frame's body still to pass
	err  error
}

// scan follows p, the next bytes from the peer, through yamux's framing.
func (g *peerStreamGate) scan(p []byte) error {
	if g.err != nil {
		return g.err
	}
	for len(p) > 0 {
		if g.body > 0 {
			k := len(p)
			if uint64(k) > uint64(g.body) {
				k = int(g.body)
			}
			g.body -= uint32(k)
			p = p[k:]
			continue
		}
		k := copy(g.hdr[g.hn:], p)
		g.hn += k
		p = p[k:]
		if g.hn < yamuxHeaderSize {
			return nil
		}
		g.hn = 0
		typ, flags := g.hdr[1], binary.BigEndian.Uint16(g.hdr[2:])
		if typ == yamuxTypeData {
			g.body = binary.BigEndian.Uint32(g.hdr[8:])
		}
		if (typ == yamuxTypeData || typ == yamuxTypeWindowUpdate) && flags&yamuxFlagSYN != 0 {
			if err := g.admit(binary.BigEndian.Uint32(g.hdr[4:])); err != nil {
				g.err = err
				if g.refused != nil {
					g.refused.Store(true)
				}
				return err
			}
		}
	}
	return nil
}

// admit counts a stream the peer opens.
func (g *peerStreamGate) admit(id uint32) error {
	if g.lane > 0 {
		return fmt.Errorf("%w: stream %d on mux channel %d, where the relay accepts none", ErrPeerStreams, id, g.lane)
	}
	if n := g.opened.Add(1); g.limit > 0 && int(n) > g.limit {
		return fmt.Errorf("%w: stream %d is stream %d of the peer's, the limit is %d", ErrPeerStreams, id, n, g.limit)
	}
	return nil
}
