package bench

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"paradigm/internal/identity"
	"paradigm/internal/mux/muxtest"
	"paradigm/internal/node"
	"paradigm/internal/relay"
	"paradigm/internal/testenv"
)

// pair is an in-process relay and one node connected to it over loopback
// SSH, exposing one device-local service at portalias.
type pair struct {
	portalias string
	cancel    context.CancelFunc
	wg        sync.WaitGroup
}

// startPair runs relay and node as paradigm-relay serve and paradigm-node
// run do, with service (a local TCP address) registered as "svc".
func startPair(tb testing.TB, service string) *pair {
	tb.Helper()
	dir := tb.TempDir()
	data := filepath.Join(dir, "relay")
	if err := os.MkdirAll(data, 0o700); err != nil {
		tb.Fatal(err)
	}
	key, err := identity.GenerateKey(filepath.Join(dir, "node.key"), "bench")
	if err != nil {
		tb.Fatal(err)
	}
	if err := relay.Authorize(filepath.Join(data, relay.AuthorizedFile), "bench", key.PublicKey(), ""); err != nil {
		tb.Fatal(err)
	}
	r, err := relay.New(relay.Config{DataDir: data, Listen: "127.0.0.1:0", PortLow: 23000, PortHigh: 23999})
	if err != nil {
		tb.Fatal(err)
	}
	n, err := node.New(node.Config{
		Relay: r.Addr().String(), Fingerprint: identity.Fingerprint(r.HostKey()),
		KeyFile: filepath.Join(dir, "node.key"), Name: "bench",
		Services: []node.Service{{Name: "svc", Addr: service}},
	})
	if err != nil {
		r.Close()
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &pair{cancel: cancel}
	p.wg.Go(func() { r.Run(ctx) })
	p.wg.Go(func() { n.Run(ctx) })
	tb.Cleanup(p.stop)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if pn, ok := r.Snapshot().Playnode("bench"); ok && len(pn.Services) == 1 && pn.Services[0].State == relay.StateOnline {
			p.portalias = net.JoinHostPort("127.0.0.1", strconv.Itoa(int(pn.Services[0].Portalias)))
			return p
		}
		if time.Now().After(deadline) {
			tb.Fatal("node not online after 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (p *pair) stop() {
	p.cancel()
	p.wg.Wait()
}

// serve runs handle for every connection to a new loopback listener.
func serve(tb testing.TB, handle func(net.Conn)) string {
	tb.Helper()
	return testenv.Serve(tb, 0, func(c *net.TCPConn) { handle(c) })
}

// echo answers every byte with itself.
func echo(c net.Conn) {
	io.CopyBuffer(c, struct{ io.Reader }{c}, make([]byte, 4096))
}

// BenchmarkForward1MiB sends 1 MiB per op from a client through the relay's
// portalias, the SSH+yamux session and the node to a local sink, which
// acknowledges each MiB with one byte. Allocations count both roles (and the
// sink); allocs/32KiB is per forwarded splice buffer.
func BenchmarkForward1MiB(b *testing.B) {
	p := startPair(b, serve(b, func(c net.Conn) { muxtest.AckSink(c) }))
	c, err := net.Dial("tcp", p.portalias)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	muxtest.SendAcked(b, c)
}

// BenchmarkRoundTrip64 is one 64-byte request and its echo through the
// tunnel on an open connection: the per-message cost without bulk.
func BenchmarkRoundTrip64(b *testing.B) {
	p := startPair(b, serve(b, echo))
	c, err := net.Dial("tcp", p.portalias)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	msg, buf := bytes.Repeat([]byte{'r'}, 64), make([]byte, 64)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkNewConn is one connection through the tunnel: dial the
// portalias, one 64-byte round trip, close.
func BenchmarkNewConn(b *testing.B) {
	p := startPair(b, serve(b, echo))
	msg, buf := bytes.Repeat([]byte{'c'}, 64), make([]byte, 64)
	b.ReportAllocs()
	for b.Loop() {
		c, err := net.Dial("tcp", p.portalias)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}
