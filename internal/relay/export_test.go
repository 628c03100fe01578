package relay

// HandshakesInProgress is how many SSH handshakes hold a MaxHandshakes slot
// now, for tests that watch a reconnection storm.
func HandshakesInProgress(r *Relay) int { return len(r.hsSlots) }
