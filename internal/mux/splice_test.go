package mux_test

import (
	"bytes"
	"errors"
	"io"
	"sync"
	"syscall"
	"testing"
	"time"

	"paradigm/internal/mux"
	"paradigm/internal/mux/muxtest"
)

// cutStream delivers data, then fails as a stream of a dead session does.
type cutStream struct {
	mu   sync.Mutex
	data []byte
	err  error
}

func (s *cutStream) Read(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.data) == 0 {
		return 0, s.err
	}
	n := copy(p, s.data)
	s.data = s.data[n:]
	return n, nil
}
func (s *cutStream) Write(p []byte) (int, error) { return len(p), nil }
func (s *cutStream) Close() error                { return nil }
func (s *cutStream) CloseWrite() error           { return nil }

func TestSpliceCutResetsClient(t *testing.T) {
	client, server := mux.TCPPair(t)
	errCut := errors.New("session died")
	stream := &cutStream{data: bytes.Repeat([]byte("x"), 1000), err: errCut}
	done := make(chan error, 1)
	go func() {
		_, _, err := mux.Splice(server, stream)
		done <- err
	}()
	client.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(client)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("client read after a cut: got %d bytes and err %v, want ECONNRESET (never a clean EOF)", len(got), err)
	}
	if err := <-done; !errors.Is(err, errCut) {
		t.Errorf("Splice: got %v, want the cut's error", err)
	}
}

func TestSpliceHalfClose(t *testing.T) {
	client, server := mux.TCPPair(t)
	node, service := mux.TCPPair(t)
	go mux.Splice(server, node)
	// The service reads the whole request, then answers after the
	// client's half-close.
	reply := bytes.Repeat([]byte("r"), 1<<20)
	go func() {
		io.Copy(io.Discard, service)
		service.Write(reply)
		service.CloseWrite()
	}()
	client.Write([]byte("request"))
	client.CloseWrite()
	client.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(client)
	if err != nil || !bytes.Equal(got, reply) {
		t.Errorf("reply after half-close: got %d bytes, err %v; want %d bytes, nil", len(got), err, len(reply))
	}
}

// BenchmarkSplice is the forwarding loop alone: 1 MiB per op from a client
// through Splice between two loopback TCP connections to a sink, which
// acknowledges each MiB with one byte. allocs/32KiB is per splice buffer
// (the target is 0 in steady state).
func BenchmarkSplice(b *testing.B) {
	client, in := mux.TCPPair(b)
	out, sink := mux.TCPPair(b)
	go mux.Splice(in, out)
	go muxtest.AckSink(sink)
	muxtest.SendAcked(b, client)
}
