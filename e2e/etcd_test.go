package e2e

import (
	"io"
	"net"
	"strconv"
	"testing"
	"time"

	"paradigm/internal/store/etcdstore/etcdtest"
	"paradigm/internal/testenv"
)

// TestSharedStoreEtcd: two relays with `serve --store etcd://...` on one
// real etcd share their portaliases. Relay B binds the portalias that relay
// A assigned to A's playnode (learnt through etcd's Watch) on its own
// --bind address (the mesh that would carry it to A is issue 15's next
// part), and a playnode connecting to B gets another port from the
// same window, never A's.
func TestSharedStoreEtcd(t *testing.T) {
	t.Parallel()
	e := etcdtest.Start(t)
	storeURL := "etcd://" + e.Client + "/e2e"
	a, b := newDeployment(t), newDeployment(t)
	b.low, b.high, b.ports = a.low, a.high, a.ports
	a.serveArgs = []string{"--store", storeURL, "--bind", "127.0.0.2"}
	b.serveArgs = []string{"--store", storeURL, "--bind", "127.0.0.3"}
	echo := testenv.Serve(t, waitTimeout, func(c *net.TCPConn) { io.Copy(c, c) })
	keyA, keyB := a.addPlaynode(t, "pi-a"), b.addPlaynode(t, "pi-b")
	relayA, relayB := a.serve(t, "ssh", "127.0.0.1:0"), b.serve(t, "ssh", "127.0.0.1:0")

	a.runNode(t, relayA, "pi-a", keyA, "echo="+portOf(echo))
	pa := relayA.waitLog(t, 1, "playnode connected", "playnode", "pi-a").port(t, "echo")
	learnt := relayB.waitLog(t, 1, "portalias assigned", "playnode", "pi-a", "service", "echo")
	if got := learnt.port(t, "portalias"); got != pa {
		t.Errorf("relay B learnt pi-a echo at %d, want %d as relay A assigned", got, pa)
	}
	waitListening(t, net.JoinHostPort("127.0.0.3", strconv.Itoa(int(pa))))

	b.runNode(t, relayB, "pi-b", keyB, "echo="+portOf(echo))
	pb := relayB.waitLog(t, 1, "playnode connected", "playnode", "pi-b").port(t, "echo")
	if pb == pa {
		t.Errorf("relay B gave pi-b echo portalias %d, already pi-a's through relay A", pb)
	}
	relayA.waitLog(t, 1, "portalias assigned", "playnode", "pi-b", "service", "echo")
	waitListening(t, net.JoinHostPort("127.0.0.2", strconv.Itoa(int(pb))))

	// Each relay's own playnode answers on its relay's bind address.
	for _, tc := range []struct{ addr string }{
		{net.JoinHostPort("127.0.0.2", strconv.Itoa(int(pa)))},
		{net.JoinHostPort("127.0.0.3", strconv.Itoa(int(pb)))},
	} {
		c, err := net.DialTimeout("tcp", tc.addr, 5*time.Second)
		if err != nil {
			t.Fatalf("dial %s: %v", tc.addr, err)
		}
		c.SetDeadline(time.Now().Add(waitTimeout))
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4)
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
			t.Errorf("echo through %s: got %q, %v; want ping", tc.addr, buf, err)
		}
		c.Close()
	}
}

// waitListening waits until something accepts TCP connections at addr.
func waitListening(t *testing.T, addr string) {
	t.Helper()
	waitUntil(t, addr+" to accept connections", func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
}
