package relay

import (
	"errors"
	"net"
	"time"
)

// portListener is one bound portalias. It stays bound while its playnode is
// offline, so nothing else takes the port; connections to it then close at
// once. Whose it is comes from the registry's table at each accept, so a
// moved or reassigned portalias needs no change here.
type portListener struct {
	port    uint16
	ln      net.Listener
	streams streamLimit // connections forwarded at once
}

// servePortalias accepts connections to one portalias until it is closed,
// admits each against the limits, and hands it to forward.
func (r *Relay) servePortalias(l *portListener) {
	var delay time.Duration
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and friends: back off instead of spinning.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			r.log.Warn("accept on portalias", "portalias", l.port, "err", err)
			time.Sleep(delay)
			continue
		}
		delay = 0
		t, ok := r.reg.route(l)
		if !ok || !r.admit(l, t.local, c) {
			// Offline (here and on every relay of the cluster), or over a
			// limit: close at once rather than leave the client hanging.
			r.reg.counters.connsRefused.Add(1)
			c.Close()
			continue
		}
		r.wg.Go(func() {
			defer l.streams.release()
			if t.local != nil {
				defer t.local.streams.release()
			}
			r.forward(t, c.(*net.TCPConn), c.RemoteAddr(), false)
		})
	}
}
