package relay

import (
	"sync"
	"testing"

	"paradigm/internal/proto"
)

// TestNothingQueuedAfterSessionEnd: once a session's connection ended, a
// refusal (shutdown, revocation, the operator's disconnect, a newer
// session) or a control message queues nothing and starts no sender. The
// session's count in the relay's WaitGroup is released right after the
// end; a sender added then would be added to a WaitGroup that shutdown may
// be waiting on at zero (the race detector caught it in
// TestConcurrentConnections: the node's session ending as the relay
// stopped).
func TestNothingQueuedAfterSessionEnd(t *testing.T) {
	var wg sync.WaitGroup
	s := &nodeSession{wg: &wg}
	s.ctrlMu.Lock()
	s.over = true
	s.ctrlMu.Unlock()
	s.refuse(refuseShutdown)
	s.ctrlMu.Lock()
	s.queueLocked(&proto.HostKeys{})
	pending, sending := len(s.pending), s.sending
	s.ctrlMu.Unlock()
	if pending != 0 || sending {
		t.Fatalf("after the session's end: %d queued, sender running %v; want none", pending, sending)
	}
	wg.Wait()
}
