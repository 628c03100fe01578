package admin

import (
	"testing"

	"paradigm/internal/relay"
)

func TestRing(t *testing.T) {
	g := newRing(3)
	g.begin(10)
	for seq := uint64(11); seq <= 14; seq++ {
		g.add(relay.Event{Seq: seq, Kind: relay.EventUp})
	}
	for _, tt := range []struct {
		after   uint64
		want    []uint64
		wantOK  bool
		comment string
	}{
		{10, nil, false, "11 fell out of the ring"},
		{11, []uint64{12, 13, 14}, true, "the whole ring"},
		{13, []uint64{14}, true, "the last one"},
		{14, nil, true, "up to date"},
		{20, nil, true, "ahead: the feed has yet to catch up"},
	} {
		evs, _, ok, _ := g.after(tt.after, 100)
		var got []uint64
		for _, e := range evs {
			got = append(got, e.Seq)
		}
		if ok != tt.wantOK || len(got) != len(tt.want) || (len(got) > 0 && got[0] != tt.want[0]) {
			t.Errorf("after %d (%s): got %v ok=%v, want %v ok=%v", tt.after, tt.comment, got, ok, tt.want, tt.wantOK)
		}
	}
	// A gap (the feeding subscription lost events) empties the ring: no
	// reader is handed a sequence with a hole.
	g.add(relay.Event{Seq: 20, Kind: relay.EventDown})
	if _, _, ok, _ := g.after(14, 100); ok {
		t.Errorf("after 14 across a gap to 20: got ok, want a reset")
	}
	if evs, _, ok, _ := g.after(19, 100); !ok || len(evs) != 1 || evs[0].Seq != 20 {
		t.Errorf("after 19: got %v ok=%v, want [20]", evs, ok)
	}
	// Batches are bounded.
	if evs, _, _, _ := g.after(19, 0); len(evs) != 0 {
		t.Errorf("max 0: got %d events", len(evs))
	}
}
