package admin_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"paradigm/internal/admin"
	"paradigm/internal/relay"
)

// sseEvent is one Server-Sent Event as read off the wire.
type sseEvent struct {
	name, id, data string
}

// sseStream reads an event stream.
type sseStream struct {
	t    *testing.T
	resp *http.Response
	rd   *bufio.Reader
	evs  chan sseEvent
}

func (f *fixture) openEvents(lastID string) *sseStream {
	f.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f.t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, "GET", f.url+"/api/v1/events", nil)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		f.t.Fatalf("GET /api/v1/events: got %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	s := &sseStream{t: f.t, resp: resp, rd: bufio.NewReader(resp.Body), evs: make(chan sseEvent, 1024)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(s.evs)
		var e sseEvent
		for {
			line, err := s.rd.ReadString('\n')
			if err != nil {
				return
			}
			line = strings.TrimSuffix(line, "\n")
			switch {
			case line == "":
				if e.name != "" {
					s.evs <- e
				}
				e = sseEvent{}
			case strings.HasPrefix(line, ":"):
			case strings.HasPrefix(line, "event: "):
				e.name = line[len("event: "):]
			case strings.HasPrefix(line, "id: "):
				e.id = line[len("id: "):]
			case strings.HasPrefix(line, "data: "):
				e.data = line[len("data: "):]
			}
		}
	}()
	f.t.Cleanup(func() {
		cancel()
		resp.Body.Close()
		<-done
	})
	return s
}

// next returns the next event whose name is one of names.
func (s *sseStream) next(names ...string) sseEvent {
	s.t.Helper()
	timeout := time.After(waitTimeout)
	for {
		select {
		case e, ok := <-s.evs:
			if !ok {
				s.t.Fatalf("event stream ended while waiting for %v", names)
			}
			for _, n := range names {
				if e.name == n {
					return e
				}
			}
		case <-timeout:
			s.t.Fatalf("no %v event within %v", names, waitTimeout)
		}
	}
}

func TestEventsSnapshotThenDeltas(t *testing.T) {
	f := newFixture(t, []string{"p1", "p2"}, nil)
	echo := echoService(t)
	f.startNode("p1", "web="+echo)
	f.waitOnline("p1", true)

	s := f.openEvents("")
	first := s.next("snapshot", "up", "down")
	if first.name != "snapshot" {
		t.Fatalf("first event: got %q, want snapshot", first.name)
	}
	var snap relay.Snapshot
	if err := json.Unmarshal([]byte(first.data), &snap); err != nil {
		t.Fatal(err)
	}
	if p, ok := snap.Playnode("p1"); !ok || !p.Online {
		t.Fatalf("snapshot: p1 not online: %+v", snap.Playnodes)
	}
	if first.id != strconv.FormatUint(snap.Seq, 10) {
		t.Fatalf("snapshot id: got %q, want its seq %d", first.id, snap.Seq)
	}

	stop2 := f.startNode("p2", "web="+echo)
	var up sseEvent
	var e relay.Event
	for e.Playnode != "p2" { // p2's up (p1 may have reconnected meanwhile)
		up = s.next("up")
		if err := json.Unmarshal([]byte(up.data), &e); err != nil {
			t.Fatal(err)
		}
	}
	if up.id != strconv.FormatUint(e.Seq, 10) || e.Seq <= snap.Seq {
		t.Fatalf("up event: got id %s %+v, want p2 after seq %d", up.id, e, snap.Seq)
	}
	stop2()
	down := s.next("down")

	// Resume after the up: the down comes again, no snapshot.
	r := f.openEvents(up.id)
	got := r.next("snapshot", "reset", "down")
	if got.name != "down" || got.id != down.id {
		t.Fatalf("resumed after %s: got %s id %s, want down id %s", up.id, got.name, got.id, down.id)
	}

	// An id from an earlier run of the relay cannot be resumed.
	r = f.openEvents("999999")
	if got := r.next("snapshot", "reset", "down", "up"); got.name != "reset" {
		t.Fatalf("resume from an unknown id: got %s, want reset", got.name)
	}
	if got := r.next("snapshot", "down", "up"); got.name != "snapshot" {
		t.Fatalf("after reset: got %s, want snapshot", got.name)
	}

	code, b := f.do("GET", "/api/v1/events", "", "", "Last-Event-ID", "abc")
	wantError(t, "bad Last-Event-ID", code, b, 400, "Last-Event-ID")
}

func TestEventsRingOverflow(t *testing.T) {
	f := newFixture(t, []string{"p1"}, func(c *admin.Config) { c.EventRing = 2 })
	echo := echoService(t)
	s := f.openEvents("")
	snap := s.next("snapshot")
	for range 3 {
		stop := f.startNode("p1", "web="+echo)
		f.waitOnline("p1", true)
		stop()
		f.waitOnline("p1", false)
	}
	s.next("down")
	// The ring holds 2 events: resuming from the snapshot's id is too old.
	r := f.openEvents(snap.id)
	if got := r.next("snapshot", "reset", "down", "up"); got.name != "reset" {
		t.Fatalf("resume beyond the ring: got %s, want reset", got.name)
	}
}

func TestEventsClientLimit(t *testing.T) {
	f := newFixture(t, nil, func(c *admin.Config) { c.MaxSSEClients = 2 })
	f.openEvents("").next("snapshot")
	f.openEvents("").next("snapshot")
	code, b := f.do("GET", "/api/v1/events", "", "")
	wantError(t, "third stream", code, b, http.StatusServiceUnavailable, "too many event streams")
}

func TestEventsHeartbeat(t *testing.T) {
	f := newFixture(t, nil, func(c *admin.Config) { c.Heartbeat = 20 * time.Millisecond })
	s := f.openEvents("")
	s.next("snapshot")
	// The reader goroutine consumes lines; read raw instead on a new stream.
	req, _ := http.NewRequest("GET", f.url+"/api/v1/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rd := bufio.NewReader(resp.Body)
	for {
		line, err := rd.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if line == ": heartbeat\n" {
			return
		}
	}
}
