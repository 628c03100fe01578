package relay

import (
	"log/slog"
	"net"
	"testing"

	"paradigm/internal/logthrottle"
)

// TestAdmitQUIC checks the QUIC handshake admission: per source address,
// then in total, refused at once, and slots given back on release.
func TestAdmitQUIC(t *testing.T) {
	r := &Relay{
		cfg:     Config{MaxUnauthPerAddress: 2, MaxHandshakes: 3},
		log:     slog.New(slog.DiscardHandler),
		hsSlots: make(chan struct{}, 3),
		reg:     newRegistry(&authorizedSet{}, nil),

		throttle: logthrottle.New(slog.New(slog.DiscardHandler), logthrottle.Config{}),
	}
	a := &net.UDPAddr{IP: net.ParseIP("127.0.0.1"), Port: 1000}
	b := &net.UDPAddr{IP: net.ParseIP("127.0.0.2"), Port: 1000}
	c := &net.UDPAddr{IP: net.ParseIP("127.0.0.3"), Port: 1000}
	admit := func(addr net.Addr, want bool) func() {
		t.Helper()
		release, ok := r.admitQUIC(addr)
		if ok != want {
			t.Fatalf("admitQUIC(%v): got %v, want %v", addr, ok, want)
		}
		return release
	}
	a1 := admit(a, true)
	admit(a, true)
	admit(a, false) // a third from one address
	admit(b, true)
	admit(c, false) // a fourth in total
	a1()
	admit(c, true)
	if got := len(r.hsSlots); got != 3 {
		t.Errorf("handshake slots in use: got %d, want 3", got)
	}
}
