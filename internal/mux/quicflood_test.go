package mux_test

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"paradigm/internal/mux/muxtest"
)

// forgedInitial is a datagram shaped like a client's first QUIC packet:
// long header, type Initial, version 1, random 8-byte connection IDs, no
// token, a 4-byte packet number and random bytes for the encrypted
// payload, 1200 bytes in all. It passes every check quic-go makes before
// deciding whether to create a connection; only decryption would reveal it.
func forgedInitial() []byte {
	const size = 1200
	b := make([]byte, 0, size)
	b = append(b, 0xc3)                     // long header, fixed bit, Initial, 4-byte packet number
	b = binary.BigEndian.AppendUint32(b, 1) // QUIC version 1
	dcid, scid := make([]byte, 8), make([]byte, 8)
	rand.Read(dcid)
	rand.Read(scid)
	b = append(b, 8)
	b = append(b, dcid...)
	b = append(b, 8)
	b = append(b, scid...)
	b = append(b, 0) // token length
	rest := size - len(b) - 2
	b = binary.BigEndian.AppendUint16(b, 0x4000|uint16(rest)) // 2-byte varint length
	tail := make([]byte, rest)
	rand.Read(tail)
	return append(b, tail...)
}

// slotAdmit is an Admit with a small number of handshake slots; it counts
// the calls per source IP.
type slotAdmit struct {
	free atomic.Int64
	mu   sync.Mutex
	by   map[string]int
}

func (a *slotAdmit) admit(remote net.Addr) (func(), bool) {
	a.mu.Lock()
	a.by[remote.(*net.UDPAddr).IP.String()]++
	a.mu.Unlock()
	if a.free.Add(-1) < 0 {
		a.free.Add(1)
		return nil, false
	}
	return func() { a.free.Add(1) }, true
}

// TestQUICInitialFloodAdmitsRealNodes floods a relay whose Admit has 4
// handshake slots with forged Initials (2,000 a second, 40 times the rate
// that locked QUIC out before the relay used Retry) from 40 source addresses
// (127.0.0.2-127.0.0.41), paced and bounded in count, while real nodes
// connect from 127.0.0.1 one after the other. Every real handshake must
// succeed, the relay must have answered the flood (with Retries), and Admit
// must never have been asked about a flood address: forged Initials take no
// slot.
func TestQUICInitialFloodAdmitsRealNodes(t *testing.T) {
	const (
		senders   = 40
		perSender = 500                   // at most 20,000 forged Initials, over at least 10 s
		pace      = 20 * time.Millisecond // 2,000 a second in all
		nodes     = 8
	)
	a := &slotAdmit{by: make(map[string]int)}
	a.free.Store(4)
	e := newQUICEnv(t, func(e *quicEnv) { e.server.Admit = a.admit })
	target := e.ln.Addr().(*net.UDPAddr)

	stop := make(chan struct{})
	var sent, answered atomic.Int64
	var wg sync.WaitGroup
	defer func() {
		close(stop)
		wg.Wait()
	}()
	for i := range senders {
		c := listenUDP(t, fmt.Sprintf("127.0.0.%d:0", i+2))
		wg.Go(func() { // count the Retries the relay sends back
			buf := make([]byte, 2048)
			for {
				n, _, err := c.ReadFrom(buf)
				if err != nil {
					return
				}
				if n > 0 && buf[0]&0xf0 == 0xf0 { // long header, fixed bit, type Retry
					answered.Add(1)
				}
			}
		})
		wg.Go(func() {
			defer c.Close()
			tick := time.NewTicker(pace)
			defer tick.Stop()
			for range perSender {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				if _, err := c.WriteTo(forgedInitial(), target); err != nil {
					t.Errorf("flood from %s: %v", c.LocalAddr(), err)
					return
				}
				sent.Add(1)
			}
		})
	}
	// The nodes connect once the relay has answered some of the flood.
	deadline := time.Now().Add(muxtest.Timeout)
	for answered.Load() < senders {
		if time.Now().After(deadline) {
			t.Fatalf("the relay answered %d of %d forged Initials with a Retry, want some", answered.Load(), sent.Load())
		}
		time.Sleep(time.Millisecond) // polling a condition with a deadline
	}
	for i := range nodes {
		e.accept()
		client, err := e.dial(t, nil, nil)
		if err != nil {
			t.Fatalf("node %d of %d during the flood (%d forged Initials sent): %v", i+1, nodes, sent.Load(), err)
		}
		if r := e.result(t); r.err != nil {
			t.Fatalf("Accept of node %d: %v", i+1, r.err)
		}
		client.Close()
	}
	t.Logf("%d forged Initials sent, %d Retries received", sent.Load(), answered.Load())

	a.mu.Lock()
	defer a.mu.Unlock()
	for ip, n := range a.by {
		if ip != "127.0.0.1" {
			t.Errorf("Admit called %d times for flood address %s, want never", n, ip)
		}
	}
	if got := a.by["127.0.0.1"]; got != nodes {
		t.Errorf("Admit called %d times for the real nodes, want %d (one per handshake)", got, nodes)
	}
}
