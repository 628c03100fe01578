package relay

import (
	"net/netip"
	"testing"
	"time"
)

// TestEnrollLimiter attacks the per-address enrollment rate: a burst, then
// the refill rate, each address on its own, and the tracked addresses
// bounded.
func TestEnrollLimiter(t *testing.T) {
	var l enrollLimiter
	now := tokenT0
	a := netip.MustParseAddr("203.0.113.7")
	b := netip.MustParseAddr("203.0.113.8")
	allowed := 0
	for range 1000 {
		if l.allow(a, 10, now) {
			allowed++
		}
	}
	if allowed != 10 {
		t.Fatalf("a burst of 1000 attempts: %d allowed, want 10", allowed)
	}
	if !l.allow(b, 10, now) {
		t.Fatal("another address is limited by the first one's attempts")
	}
	if l.allow(a, 10, now.Add(5*time.Second)) {
		t.Fatal("allowed again after 5 s, want 6 s at 10 a minute")
	}
	if !l.allow(a, 10, now.Add(12*time.Second)) {
		t.Fatal("not allowed again after 12 s at 10 a minute")
	}
	// Many addresses: the map stays bounded; full buckets are forgotten.
	var l2 enrollLimiter
	for i := range maxEnrollSources + 100 {
		src := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		l2.allow(src, 10, now)
	}
	if n := len(l2.buckets); n > maxEnrollSources {
		t.Fatalf("tracks %d addresses, the bound is %d", n, maxEnrollSources)
	}
	if !l2.allow(netip.MustParseAddr("192.0.2.1"), 10, now.Add(time.Minute)) {
		t.Fatal("a new address is refused once the old buckets have refilled")
	}
}
