package mux

import (
	"context"
	"io"
	"testing"
)

// TestNewStreamAvoidsBulkLane: when every lane carries a stream, a new
// stream goes to a lane that has not been carrying bulk data.
func TestNewStreamAvoidsBulkLane(t *testing.T) {
	node, relay := pairAt(t, 1e9)
	var streams []Stream
	for range maxLanes {
		rs, err := relay.OpenStream(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := rs.Write([]byte{1}); err != nil {
			t.Fatal(err)
		}
		ns, err := node.AcceptStream(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(ns, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		streams = append(streams, rs, ns)
	}
	if got := len(relay.(*sshSession).lanes); got != maxLanes {
		t.Fatalf("got %d lanes, want %d", got, maxLanes)
	}
	// The stream on lane 0 and the one on the last lane move 1 MiB each.
	var bulkLanes []int32
	for _, i := range []int{0, 2 * (maxLanes - 1)} {
		rs, ns := streams[i], streams[i+1]
		bulkLanes = append(bulkLanes, rs.(*yamuxStream).lane.idx)
		done := make(chan error, 1)
		go func() {
			_, err := io.CopyN(io.Discard, ns, 1<<20)
			done <- err
		}()
		if _, err := rs.Write(make([]byte, 1<<20)); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	for range maxLanes - 2 {
		rs, err := relay.OpenStream(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer rs.Close()
		for _, b := range bulkLanes {
			if got := rs.(*yamuxStream).lane.idx; got == b {
				t.Errorf("new stream on lane %d, which carried 1 MiB; want another lane of as few streams", got)
			}
		}
	}
	for _, st := range streams {
		st.Close()
	}
}

// TestNewStreamSparesControlLane: of lanes with as few streams, a new
// stream never takes lane 0, where the control stream lives.
func TestNewStreamSparesControlLane(t *testing.T) {
	node, relay := pairAt(t, 1e9)
	var first []Stream
	for range 2 {
		rs, err := relay.OpenStream(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := rs.Write([]byte{1}); err != nil {
			t.Fatal(err)
		}
		ns, err := node.AcceptStream(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer ns.Close()
		first = append(first, rs)
	}
	for _, rs := range first {
		rs.Close() // both lanes free again
	}
	for range 3 {
		rs, err := relay.OpenStream(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if got := rs.(*yamuxStream).lane.idx; got == 0 {
			t.Errorf("new stream on lane 0 while lane 1 carries as few streams")
		}
		rs.Close()
	}
}
