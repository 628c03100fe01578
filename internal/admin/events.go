package admin

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"paradigm/internal/relay"
)

// ring keeps the most recent events, contiguous in Seq, for every event
// stream to read from: one relay subscription feeds it, so the relay's cost
// does not grow with the number of streams, and a stream that reconnects
// with Last-Event-ID resumes from it. A gap (the feeding subscription fell
// behind) empties it: no stream is ever handed a sequence with a hole.
type ring struct {
	mu      sync.Mutex
	buf     []relay.Event // circular, len == cap once full
	size    int
	start   int    // index of the oldest event in buf
	last    uint64 // Seq of the newest event known (in buf or not)
	changed chan struct{}
	closed  bool
}

func newRing(size int) *ring {
	return &ring{size: size, changed: make(chan struct{})}
}

// begin sets the Seq the feeding subscription starts after.
func (g *ring) begin(seq uint64) {
	g.mu.Lock()
	g.last = seq
	g.mu.Unlock()
}

// feed appends sub's events until it is closed, then marks the ring closed.
func (g *ring) feed(sub *relay.Subscription) {
	for e := range sub.C {
		if e.Kind == relay.EventLost {
			continue // the next event's Seq shows the gap
		}
		g.add(e)
	}
	g.mu.Lock()
	g.closed = true
	close(g.changed)
	g.mu.Unlock()
}

func (g *ring) add(e relay.Event) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if e.Seq != g.last+1 {
		g.buf, g.start = g.buf[:0], 0 // a hole: what is kept cannot be continued
	}
	g.last = e.Seq
	if len(g.buf) < g.size {
		g.buf = append(g.buf, e)
	} else {
		g.buf[g.start] = e
		g.start = (g.start + 1) % g.size
	}
	close(g.changed)
	g.changed = make(chan struct{})
}

// after returns the events after seq (at most max), a channel closed at
// the next change, and ok false when the ring no longer holds the event
// after seq (the reader must start again from a snapshot). closed reports
// that no event will come any more.
func (g *ring) after(seq uint64, max int) (evs []relay.Event, changed <-chan struct{}, ok, closed bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	changed, closed = g.changed, g.closed
	if seq >= g.last {
		return nil, changed, true, closed // up to date, or the feed has yet to catch up
	}
	if len(g.buf) == 0 {
		return nil, changed, false, closed
	}
	oldest := g.buf[g.start].Seq
	if seq+1 < oldest {
		return nil, changed, false, closed
	}
	for i := int(seq + 1 - oldest); i < len(g.buf) && len(evs) < max; i++ {
		evs = append(evs, g.buf[(g.start+i)%len(g.buf)])
	}
	return evs, changed, true, closed
}

// sseBatch bounds the events written between two flushes.
const sseBatch = 256

// sseWriteTimeout bounds each write to an event stream: a client that does
// not read is dropped rather than holding its goroutine.
const sseWriteTimeout = 10 * time.Second

// events serves GET /api/v1/events: the current Snapshot (event
// "snapshot", id its Seq), then every event (event named by its kind, id its
// Seq). With Last-Event-ID it resumes after that event if the ring still
// holds what followed; if not, it sends a "reset" event and a fresh
// snapshot. An idle stream gets a comment line every Heartbeat.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	if len(r.URL.Query()) > 0 {
		writeError(w, http.StatusBadRequest, "GET /api/v1/events takes no query parameters (resume with the Last-Event-ID header)")
		return
	}
	var resume uint64
	hasResume := false
	if h := r.Header.Get("Last-Event-ID"); h != "" {
		v, err := strconv.ParseUint(strings.TrimSpace(h), 10, 64)
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("Last-Event-ID %q is not an event id", h))
			return
		}
		resume, hasResume = v, true
	}
	select {
	case s.sse <- struct{}{}:
		defer func() { <-s.sse }()
	default:
		writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("too many event streams (--admin-max-sse-clients %d)", s.cfg.MaxSSEClients))
		return
	}
	rc := http.NewResponseController(w)
	// The server's ReadTimeout would end the stream (its background read
	// of the idle connection times out and cancels the request).
	rc.SetReadDeadline(time.Time{})
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)

	write := func(f func(io.Writer) error) bool {
		rc.SetWriteDeadline(time.Now().Add(sseWriteTimeout))
		if err := f(w); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	cursor := resume
	needSnapshot := !hasResume
	if hasResume {
		// An id beyond the relay's last event is from an earlier run.
		if _, _, ok, _ := s.ring.after(resume, 0); !ok || resume > s.relay.Snapshot().Seq {
			if !write(func(w io.Writer) error {
				return writeEvent(w, "reset", "", map[string]string{"reason": "the events after Last-Event-ID are no longer kept: start again from this snapshot"})
			}) {
				return
			}
			needSnapshot = true
		}
	}
	heartbeat := time.NewTicker(s.cfg.Heartbeat)
	defer heartbeat.Stop()
	for {
		if needSnapshot {
			snap := s.relay.Snapshot()
			if !write(func(w io.Writer) error { return writeEvent(w, "snapshot", strconv.FormatUint(snap.Seq, 10), snap) }) {
				return
			}
			cursor, needSnapshot = snap.Seq, false
		}
		evs, changed, ok, closed := s.ring.after(cursor, sseBatch)
		if !ok && !closed {
			// Fell behind the ring (or the feed had a gap): start again.
			if !write(func(w io.Writer) error {
				return writeEvent(w, "reset", "", map[string]string{"reason": "this stream fell behind: start again from this snapshot"})
			}) {
				return
			}
			needSnapshot = true
			continue
		}
		if len(evs) > 0 {
			if !write(func(w io.Writer) error {
				for _, e := range evs {
					if err := writeEvent(w, string(e.Kind), strconv.FormatUint(e.Seq, 10), e); err != nil {
						return err
					}
				}
				return nil
			}) {
				return
			}
			cursor = evs[len(evs)-1].Seq
			continue
		}
		if closed {
			return // the relay stopped
		}
		select {
		case <-r.Context().Done():
			return
		case <-changed:
		case <-heartbeat.C:
			if !write(func(w io.Writer) error { _, err := io.WriteString(w, ": heartbeat\n\n"); return err }) {
				return
			}
		}
	}
}

// writeEvent writes one Server-Sent Event; id "" writes none.
func writeEvent(w io.Writer, name string, id string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if id != "" {
		_, err = fmt.Fprintf(w, "event: %s\nid: %s\ndata: %s\n\n", name, id, b)
	} else {
		_, err = fmt.Fprintf(w, "event: %s\ndata: %s\n\n", name, b)
	}
	return err
}
