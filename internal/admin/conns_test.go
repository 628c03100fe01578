package admin_test

import (
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"paradigm/internal/admin"
)

// TestMaxConnsBounded holds --admin-max-conns connections open without
// sending a byte: the next request waits (it is not served beside them),
// and is served as soon as one of them closes.
func TestMaxConnsBounded(t *testing.T) {
	f := newFixture(t, nil, func(c *admin.Config) { c.MaxConns = 4 })
	addr := strings.TrimPrefix(f.url, "http://")
	var idle []net.Conn
	for range 4 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		idle = append(idle, c)
	}
	served := make(chan int, 1)
	go func() {
		resp, err := http.Get(f.url + "/healthz")
		if err != nil {
			served <- -1
			return
		}
		resp.Body.Close()
		served <- resp.StatusCode
	}()
	select {
	case code := <-served:
		t.Fatalf("a fifth connection was served (%d) while 4 were open", code)
	case <-time.After(300 * time.Millisecond): // it waits; no timing is asserted beyond this
	}
	idle[0].Close()
	select {
	case code := <-served:
		if code != http.StatusOK {
			t.Fatalf("after one closed: status %d, want 200", code)
		}
	case <-time.After(waitTimeout):
		t.Fatal("the waiting request was not served after a connection closed")
	}
}
