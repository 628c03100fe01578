package mux_test

import (
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"paradigm/internal/mux/muxtest"
)

// admitCounter is a QUICServerConfig.Admit that admits while allow is set
// and counts slots taken and released.
type admitCounter struct {
	allow           atomic.Bool
	taken, released atomic.Int64
	lastRemote      atomic.Value
}

func (a *admitCounter) admit(remote net.Addr) (func(), bool) {
	a.lastRemote.Store(remote.String())
	if !a.allow.Load() {
		return nil, false
	}
	a.taken.Add(1)
	return func() { a.released.Add(1) }, true
}

// waitReleased waits until every slot taken was released.
func (a *admitCounter) waitReleased(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(muxtest.Timeout)
	for a.released.Load() != a.taken.Load() {
		if time.Now().After(deadline) {
			t.Fatalf("slots taken %d, released %d: want every one released", a.taken.Load(), a.released.Load())
		}
		time.Sleep(5 * time.Millisecond) // polling a condition with a deadline
	}
}

func TestQUICAdmitRefuses(t *testing.T) {
	var a admitCounter
	var authorized atomic.Bool
	e := newQUICEnv(t, func(e *quicEnv) {
		e.server.Admit = a.admit
		authorize := e.server.Authorize
		e.server.Authorize = func(r net.Addr, u string, k ssh.PublicKey) (string, error) {
			authorized.Store(true)
			return authorize(r, u, k)
		}
	})
	if _, err := e.dial(t, nil, nil); err == nil {
		t.Fatal("DialQUIC past a refusing Admit: got a session, want an error")
	}
	if authorized.Load() {
		t.Error("Authorize ran for a connection Admit refused")
	}
	if a.lastRemote.Load() == nil {
		t.Error("Admit was never asked")
	}
}

func TestQUICAdmitReleasesOnce(t *testing.T) {
	var a admitCounter
	a.allow.Store(true)
	e := newQUICEnv(t, func(e *quicEnv) { e.server.Admit = a.admit })

	// A completed handshake releases its slot at Accept, once, and
	// closing the session later releases nothing more.
	client, server := e.pair(t, nil, nil)
	a.waitReleased(t)
	client.Close()
	server.Close()
	muxtest.WaitDone(t, server)
	if taken, released := a.taken.Load(), a.released.Load(); taken != 1 || released != 1 {
		t.Errorf("after one session: taken %d, released %d; want 1 and 1", taken, released)
	}

	// A handshake that fails (the node refuses the relay's key) releases
	// its slot too.
	e.client.HostKeyCallback = func(string, net.Addr, ssh.PublicKey) error { return errors.New("not this relay") }
	if _, err := e.dial(t, nil, nil); err == nil {
		t.Fatal("DialQUIC with a refusing host key callback: got a session")
	}
	a.waitReleased(t)
	if taken := a.taken.Load(); taken != 2 {
		t.Errorf("slots taken after the failed handshake: %d, want 2", taken)
	}
}
