package mux

import (
	"encoding/binary"
	"errors"
	"sync/atomic"
	"testing"
)

// yamuxFrame is one yamux frame: a header and, for a data frame, its body.
func yamuxFrame(typ byte, flags uint16, id uint32, body []byte, length uint32) []byte {
	f := make([]byte, yamuxHeaderSize, yamuxHeaderSize+len(body))
	f[1] = typ
	binary.BigEndian.PutUint16(f[2:], flags)
	binary.BigEndian.PutUint32(f[4:], id)
	binary.BigEndian.PutUint32(f[8:], length)
	return append(f, body...)
}

func frames(fs ...[]byte) []byte {
	var b []byte
	for _, f := range fs {
		b = append(b, f...)
	}
	return b
}

var (
	// A body that looks like a SYN header: the gate must skip bodies.
	synLookalike = yamuxFrame(yamuxTypeWindowUpdate, yamuxFlagSYN, 9, nil, 0)
	gateCases    = []struct {
		name    string
		lane    int32
		limit   int
		in      []byte
		refused bool
	}{
		{"control stream", 0, 1, frames(
			yamuxFrame(yamuxTypeWindowUpdate, yamuxFlagSYN, 1, nil, 1<<20),
			yamuxFrame(yamuxTypeData, 0, 1, []byte("hello"), 5)), false},
		{"control stream opened with data", 0, 1, yamuxFrame(yamuxTypeData, yamuxFlagSYN, 1, []byte("hi"), 2), false},
		{"second stream", 0, 1, frames(
			yamuxFrame(yamuxTypeWindowUpdate, yamuxFlagSYN, 1, nil, 0),
			yamuxFrame(yamuxTypeData, yamuxFlagSYN, 3, []byte("x"), 1)), true},
		{"SYN inside a body", 0, 1, frames(
			yamuxFrame(yamuxTypeWindowUpdate, yamuxFlagSYN, 1, nil, 0),
			yamuxFrame(yamuxTypeData, 0, 1, synLookalike, uint32(len(synLookalike))),
			yamuxFrame(yamuxTypeData, 0, 1, synLookalike, uint32(len(synLookalike)))), false},
		{"ping and go away", 0, 1, frames(
			yamuxFrame(2, yamuxFlagSYN, 0, nil, 7),
			yamuxFrame(2, yamuxFlagSYN, 0, nil, 8),
			yamuxFrame(3, 0, 0, nil, 0)), false},
		{"replies and window updates", 0, 1, frames(
			yamuxFrame(yamuxTypeWindowUpdate, 2, 2, nil, 0), // ACK of a relay stream
			yamuxFrame(yamuxTypeWindowUpdate, 0, 2, nil, 1<<20),
			yamuxFrame(yamuxTypeData, 4, 2, []byte("bye"), 3)), false},
		{"no limit", 0, 0, frames(
			yamuxFrame(yamuxTypeWindowUpdate, yamuxFlagSYN, 1, nil, 0),
			yamuxFrame(yamuxTypeWindowUpdate, yamuxFlagSYN, 3, nil, 0),
			yamuxFrame(yamuxTypeWindowUpdate, yamuxFlagSYN, 5, nil, 0)), false},
		{"stream on another lane", 1, 0, yamuxFrame(yamuxTypeWindowUpdate, yamuxFlagSYN, 1, nil, 0), true},
		{"relay streams on another lane", 1, 1, frames(
			yamuxFrame(yamuxTypeWindowUpdate, 2, 2, nil, 0),
			yamuxFrame(yamuxTypeData, 0, 2, []byte("data"), 4)), false},
	}
)

// TestPeerStreamGate feeds each case whole and cut at every byte: the
// verdict does not depend on how the transport splits the bytes.
func TestPeerStreamGate(t *testing.T) {
	for _, tc := range gateCases {
		t.Run(tc.name, func(t *testing.T) {
			for cut := range len(tc.in) + 1 {
				var opened atomic.Int32
				g := &peerStreamGate{lane: tc.lane, limit: tc.limit, opened: &opened}
				err := g.scan(tc.in[:cut])
				if err == nil {
					err = g.scan(tc.in[cut:])
				}
				if refused := errors.Is(err, ErrPeerStreams); refused != tc.refused || err != nil && !refused {
					t.Fatalf("cut at %d: got %v, want refused %v", cut, err, tc.refused)
				}
				if err != nil && !errors.Is(g.scan(nil), ErrPeerStreams) {
					t.Fatalf("cut at %d: the gate opened again after refusing", cut)
				}
			}
		})
	}
}

// FuzzPeerStreamGate: any bytes, cut anywhere, get the same verdict as
// whole, and no panic.
func FuzzPeerStreamGate(f *testing.F) {
	for _, tc := range gateCases {
		f.Add(tc.in, uint16(len(tc.in)/2), tc.lane == 0)
	}
	f.Fuzz(func(t *testing.T, in []byte, cut uint16, lane0 bool) {
		lane := int32(1)
		if lane0 {
			lane = 0
		}
		c := min(int(cut), len(in))
		var o1, o2 atomic.Int32
		whole := (&peerStreamGate{lane: lane, limit: 1, opened: &o1}).scan(in)
		g := &peerStreamGate{lane: lane, limit: 1, opened: &o2}
		split := g.scan(in[:c])
		if split == nil {
			split = g.scan(in[c:])
		}
		if (whole == nil) != (split == nil) {
			t.Fatalf("whole: %v, cut at %d: %v", whole, c, split)
		}
	})
}
