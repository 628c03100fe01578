package mux_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"paradigm/internal/mux"
)

// splice runs mux.Splice(a, b) for the test and waits for it at cleanup.
// The returned function waits for Splice and gives its error.
func splice(t *testing.T, a, b mux.HalfCloser) (wait func() error) {
	t.Helper()
	done := make(chan struct{})
	var err error
	go func() {
		defer close(done)
		_, _, err = mux.Splice(a, b)
	}()
	t.Cleanup(func() {
		a.Close()
		b.Close()
		<-done
	})
	return func() error {
		<-done
		return err
	}
}

// TestSpliceDeathResets kills the process holding a splice the way the
// kernel does at exit: it closes a spliced TCP connection with whatever
// linger is in force, without Splice getting a say. The peer of that
// connection, the client on the relay side or the service on the device
// side, must read a reset, never a clean EOF that would make a truncated
// transfer look complete. The peer that reads is never the one that writes,
// so no write consumes the reset before the read sees it.
func TestSpliceDeathResets(t *testing.T) {
	for _, tc := range []struct {
		name string
		// dies picks the spliced connection closed by the "kernel";
		// reader and writer pick the outside peers.
		dies           func(server, node *net.TCPConn) *net.TCPConn
		reader, writer func(client, service *net.TCPConn) *net.TCPConn
	}{
		{
			name:   "relay dies mid-download",
			dies:   func(server, node *net.TCPConn) *net.TCPConn { return server },
			reader: func(client, service *net.TCPConn) *net.TCPConn { return client },
			writer: func(client, service *net.TCPConn) *net.TCPConn { return service },
		},
		{
			name:   "node dies mid-upload",
			dies:   func(server, node *net.TCPConn) *net.TCPConn { return node },
			reader: func(client, service *net.TCPConn) *net.TCPConn { return service },
			writer: func(client, service *net.TCPConn) *net.TCPConn { return client },
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, server := mux.TCPPair(t)
			node, service := mux.TCPPair(t)
			splice(t, server, node)
			reader, writer := tc.reader(client, service), tc.writer(client, service)
			wrote := make(chan struct{})
			go func() {
				defer close(wrote)
				chunk := make([]byte, 64<<10)
				for range 1024 { // 64 MiB at most
					if _, err := writer.Write(chunk); err != nil {
						return
					}
				}
			}()
			t.Cleanup(func() { writer.Close(); <-wrote })

			reader.SetReadDeadline(time.Now().Add(30 * time.Second))
			buf := make([]byte, 64<<10)
			var got int
			for got < 1<<20 { // the transfer is under way
				n, err := reader.Read(buf)
				if err != nil {
					t.Fatalf("read before the death: %v after %d bytes", err, got)
				}
				got += n
			}
			tc.dies(server, node).Close()
			n, err := io.Copy(io.Discard, reader)
			if !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("after the death the peer read %d more bytes and then err %v, want ECONNRESET", n, err)
			}
		})
	}
}

// TestSpliceCleanEndDeliversAll checks that the reset armed for a death
// never touches a clean end: every byte arrives, then EOF, both ways. The
// client's small receive buffer keeps part of the reply queued in the
// kernel when Splice writes its last byte and closes, which a close with
// linger 0 would discard.
func TestSpliceCleanEndDeliversAll(t *testing.T) {
	client, server := mux.TCPPair(t)
	node, service := mux.TCPPair(t)
	client.SetReadBuffer(16 << 10)
	wait := splice(t, server, node)

	reply := make([]byte, 8<<20)
	rand.Read(reply)
	request := []byte("GET /big")
	served := make(chan error, 1)
	go func() {
		got, err := io.ReadAll(service)
		switch {
		case err != nil:
		case !bytes.Equal(got, request):
			err = errors.New("service got " + string(got))
		default:
			_, err = service.Write(reply)
		}
		if err == nil {
			err = service.CloseWrite()
		}
		served <- err
	}()
	if _, err := client.Write(request); err != nil {
		t.Fatal(err)
	}
	client.CloseWrite()
	client.SetReadDeadline(time.Now().Add(30 * time.Second))
	got, err := io.ReadAll(client)
	if err != nil || !bytes.Equal(got, reply) {
		t.Errorf("client got %d bytes and err %v, want all %d bytes and EOF", len(got), err, len(reply))
	}
	if err := <-served; err != nil {
		t.Errorf("service: %v", err)
	}
	if err := wait(); err != nil {
		t.Errorf("Splice: %v, want a clean end", err)
	}
}
