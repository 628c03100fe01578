package mux_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"testing"

	"paradigm/internal/mux"
	"paradigm/internal/mux/muxtest"
	"paradigm/internal/testenv"
)

// openBusy opens n streams from the relay, each carrying one byte that the
// node reads, and keeps them all open: every one is active at once.
func openBusy(t *testing.T, relay, node mux.Session, n int) (opened, accepted []mux.Stream) {
	t.Helper()
	for i := range n {
		o, a := muxtest.Open(t, relay, node)
		opened, accepted = append(opened, o), append(accepted, a)
		_ = i
	}
	return opened, accepted
}

func TestSSHLanesGrowWithBusyStreams(t *testing.T) {
	e := newSSHEnv(t)
	node, relay, _ := e.pair(t, e.ln.Addr().String())
	if n := mux.NumLanes(relay); n != 1 {
		t.Fatalf("idle session: got %d lanes, want 1", n)
	}
	opened, accepted := openBusy(t, relay, node, 3)
	if got, want := mux.NumLanes(relay), 3; got != want {
		t.Errorf("3 busy streams: got %d lanes on the relay, want %d", got, want)
	}
	if got, want := mux.NumLanes(node), 3; got != want {
		t.Errorf("3 busy streams: got %d lanes on the node, want %d", got, want)
	}
	// Data flows both ways on every lane.
	for i := range opened {
		msg := []byte(fmt.Sprintf("stream %d", i))
		if _, err := accepted[i].Write(msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(opened[i], got); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("stream %d: got %q, %v, want %q", i, got, err, msg)
		}
	}
	// A closed stream frees its lane: the next stream takes it, no new lane.
	opened[1].Close()
	openBusy(t, relay, node, 1)
	if got, want := mux.NumLanes(relay), 3; got != want {
		t.Errorf("after reuse: got %d lanes, want %d", got, want)
	}
	// Never more than MaxLanes, and the node refuses one more.
	openBusy(t, relay, node, 2*mux.MaxLanes)
	if got := mux.NumLanes(relay); got != mux.MaxLanes {
		t.Errorf("many busy streams: got %d lanes, want %d", got, mux.MaxLanes)
	}
	if err := mux.OpenLane(relay); err == nil {
		t.Error("lane beyond the maximum: got nil error, want the node's refusal")
	}
	if node.Err() != nil || relay.Err() != nil {
		t.Fatalf("session died: node %v, relay %v", node.Err(), relay.Err())
	}
}

func TestSSHDeadLaneKillsSession(t *testing.T) {
	e := newSSHEnv(t)
	node, relay, _ := e.pair(t, e.ln.Addr().String())
	opened, _ := openBusy(t, relay, node, 2)
	mux.CloseLane(node, 1)
	muxtest.WaitDone(t, node)
	muxtest.WaitDone(t, relay)
	if _, err := opened[0].Read(make([]byte, 1)); err == nil || errors.Is(err, io.EOF) {
		t.Errorf("read on lane 0 after lane 1 died: got %v, want an error other than EOF", err)
	}
}

// TestSSHGoroutinesPerSession bounds the goroutines an idle session costs
// (relay and node in this one process): the relay's x/crypto/ssh three,
// yamux's two and serveConn; the node's the same plus its accept pump.
// Nothing else may wait for the life of an idle session (memory per node).
func TestSSHGoroutinesPerSession(t *testing.T) {
	const sessions, maxPerPair = 20, 13
	e := newSSHEnv(t)
	before := runtime.NumGoroutine()
	var all []mux.Session
	for range sessions {
		node, relay, _ := e.pair(t, e.ln.Addr().String())
		muxtest.Open(t, node, relay) // the control stream
		all = append(all, node, relay)
	}
	// Handshake helpers end shortly after the handshake.
	perPair := func() float64 { return float64(runtime.NumGoroutine()-before) / sessions }
	testenv.WaitFor(t, muxtest.Timeout, fmt.Sprintf("at most %d goroutines per idle session", maxPerPair), func() bool {
		return perPair() <= maxPerPair
	})
	t.Logf("goroutines per idle session: %.1f for node and relay together", perPair())
	var wg sync.WaitGroup
	for _, s := range all {
		wg.Go(func() { s.Close() })
	}
	wg.Wait()
}
