package mux_test

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"paradigm/internal/mux"
)

// valveConn is one end of an in-memory link that can be blackholed: from
// then on what either end writes is lost, as on a dead path, and the peer
// hears nothing more.
type valveConn struct {
	net.Conn
	hole *atomic.Bool
}

func (c valveConn) Write(b []byte) (int, error) {
	if c.hole.Load() {
		return len(b), nil
	}
	return c.Conn.Write(b)
}

// TestLivenessVirtualTime checks the liveness watchdog's bounds in virtual
// time (testing/synctest): a silent link is declared dead on both ends
// after at least 2 and at most 2.25 keepalives of silence, with
// ErrKeepaliveTimeout; an idle but live link is never declared dead.
func TestLivenessVirtualTime(t *testing.T) {
	const keepalive = 10 * time.Second
	synctest.Test(t, func(t *testing.T) {
		e := newSSHEnv(t) // keys and configs; its TCP listener stays unused
		e.server.Keepalive, e.client.Keepalive = keepalive, keepalive
		a, b := memPipe()
		hole := new(atomic.Bool)
		type result struct {
			s   mux.Session
			err error
		}
		accepted := make(chan result, 1)
		go func() {
			s, _, err := mux.AcceptSSH(context.Background(), valveConn{b, hole}, &e.server)
			accepted <- result{s, err}
		}()
		client, err := mux.DialSSH(context.Background(), valveConn{a, hole}, &e.client)
		if err != nil {
			t.Fatal(err)
		}
		r := <-accepted
		if r.err != nil {
			t.Fatal(r.err)
		}
		server := r.s
		defer client.Close()
		defer server.Close()

		// Idle but live: keepalive requests are answered, nothing dies.
		time.Sleep(10 * keepalive)
		synctest.Wait()
		for _, s := range []mux.Session{client, server} {
			if err := s.Err(); err != nil {
				t.Fatalf("an idle live session died after 10 keepalives: %v", err)
			}
		}

		hole.Store(true)
		cut := time.Now()
		died := make(chan time.Duration, 2)
		for _, s := range []mux.Session{client, server} {
			go func() {
				<-s.Done()
				died <- time.Since(cut)
			}()
		}
		time.Sleep(3 * keepalive)
		synctest.Wait()
		for range 2 {
			select {
			case d := <-died:
				// Silence is counted from the last byte received. On an
				// idle link that is the last keepalive reply, at most 1.25
				// keepalives before the cut (a request goes out after one
				// keepalive of quiet, checked every quarter), so death
				// comes 0.75 to 2.25 keepalives after the cut.
				if d > 9*keepalive/4 {
					t.Errorf("declared dead %v after the cut, want within 2.25 keepalives (%v)", d, 9*keepalive/4)
				}
				if d < 3*keepalive/4 {
					t.Errorf("declared dead %v after the cut: less than 2 keepalives of silence", d)
				}
			default:
				t.Fatalf("a session still alive 3 keepalives after its link went silent: %v / %v", client.Err(), server.Err())
			}
		}
		for _, s := range []mux.Session{client, server} {
			if !errors.Is(s.Err(), mux.ErrKeepaliveTimeout) {
				t.Errorf("Err() = %v, want ErrKeepaliveTimeout", s.Err())
			}
		}
	})
}
