package main

import (
	"testing"
	"time"
)

// TestRelaysOf: every relay is first for a third of the playnodes, and
// the playnodes of each first relay have each of the other two second
// for half of them, so that a dead relay's playnodes spread evenly.
func TestRelaysOf(t *testing.T) {
	c := &cluster{relays: []*relayProc{{name: "A", listen: "a"}, {name: "B", listen: "b"}, {name: "C", listen: "c"}}}
	first := map[string]int{}
	second := map[[2]string]int{}
	const n = 600
	for i := range n {
		order := c.relaysOf(i)
		if len(order) != 3 || order[0] == order[1] || order[1] == order[2] || order[0] == order[2] {
			t.Fatalf("playnode %d: order %v, want the three relays once each", i, order)
		}
		first[order[0]]++
		second[[2]string{order[0], order[1]}]++
	}
	for _, r := range []string{"a", "b", "c"} {
		if first[r] != n/3 {
			t.Errorf("relay %s first for %d playnodes, want %d", r, first[r], n/3)
		}
	}
	for pair, got := range second {
		if got != n/6 {
			t.Errorf("relay %s then %s for %d playnodes, want %d", pair[0], pair[1], got, n/6)
		}
	}
}

func TestSortedNonZero(t *testing.T) {
	got := sortedNonZero([]time.Duration{3, 0, 1, 0, 2})
	if len(got) != 3 || got[0] != 1 || got[2] != 3 {
		t.Errorf("sortedNonZero = %v, want [1 2 3]", got)
	}
}

// TestFailoverAllBack: the total is only reported when every victim
// answered through every survivor.
func TestFailoverAllBack(t *testing.T) {
	f := &failoverFigures{victims: 2, survivors: 2, echoBack: map[string][]time.Duration{"B": {1, 5}}}
	if _, ok := f.allBack(); ok {
		t.Fatal("allBack with one survivor's answers: ok, want not ok")
	}
	f.echoBack["C"] = []time.Duration{2, 7}
	if d, ok := f.allBack(); !ok || d != 7 {
		t.Fatalf("allBack = %v, %v; want 7, true", d, ok)
	}
	f.echoBack["C"] = []time.Duration{2}
	if _, ok := f.allBack(); ok {
		t.Fatal("allBack with a victim missing: ok, want not ok")
	}
}
