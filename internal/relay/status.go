package relay

import (
	"encoding/json"
	"log/slog"
	"os"
	"sync"
	"time"

	"paradigm/internal/proto"
	"paradigm/internal/store"
)

// nodeStatus is what status.json records of one playnode, so that
// `paradigm-relay ls` can show who is online, since when, and when offline
// playnodes were last seen, whether or not the relay runs.
type nodeStatus struct {
	Online    bool              `json:"online"`
	Connected time.Time         `json:"connected,omitzero"`
	LastSeen  time.Time         `json:"last_seen,omitzero"`
	Remote    string            `json:"remote,omitempty"`
	Services  map[string]uint16 `json:"services,omitempty"` // service -> service port on the device
}

type statusDoc struct {
	Updated   time.Time              `json:"updated"`
	Playnodes map[string]*nodeStatus `json:"playnodes"`
}

// statusBook is the relay's in-memory status.json, written by flush at
// most once per reload interval when something changed.
type statusBook struct {
	path string
	log  *slog.Logger

	mu    sync.Mutex
	doc   statusDoc
	dirty bool
}

// loadStatus reads the previous status.json, keeping what it knew about
// offline playnodes; an unreadable file only costs that history.
func loadStatus(path string, log *slog.Logger) *statusBook {
	b := &statusBook{path: path, log: log, doc: statusDoc{Playnodes: map[string]*nodeStatus{}}}
	if doc, err := readStatus(path); err == nil {
		b.doc = doc
	} else if !os.IsNotExist(err) {
		log.Warn("status file unreadable, starting afresh", "err", err)
	}
	// Whatever a killed relay left says nothing now: write it at once, so
	// that ls does not show its playnodes online under the new relay.
	b.markAllOffline(time.Now())
	b.flush()
	return b
}

func readStatus(path string) (statusDoc, error) {
	var doc statusDoc
	data, err := os.ReadFile(path)
	if err != nil {
		return doc, err
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return doc, err
	}
	if doc.Playnodes == nil {
		doc.Playnodes = map[string]*nodeStatus{}
	}
	return doc, nil
}

func (b *statusBook) online(playnode, remote string, services map[string]proto.Service, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	ports := make(map[string]uint16, len(services))
	for name, svc := range services {
		ports[name] = svc.Port
	}
	b.doc.Playnodes[playnode] = &nodeStatus{Online: true, Connected: now, LastSeen: now, Remote: remote, Services: ports}
	b.dirty = true
}

func (b *statusBook) offline(playnode string, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if st := b.doc.Playnodes[playnode]; st != nil {
		st.Online = false
		st.LastSeen = now
		b.dirty = true
	}
}

func (b *statusBook) markAllOffline(now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, st := range b.doc.Playnodes {
		if st.Online {
			st.Online = false
			st.LastSeen = now
			b.dirty = true
		}
	}
}

// flush writes status.json if it changed since the last flush.
func (b *statusBook) flush() {
	b.mu.Lock()
	if !b.dirty {
		b.mu.Unlock()
		return
	}
	b.doc.Updated = time.Now()
	data, err := json.MarshalIndent(b.doc, "", "  ")
	b.dirty = false
	b.mu.Unlock()
	if err == nil {
		err = store.WriteAtomic(b.path, append(data, '\n'), 0o644)
	}
	if err != nil {
		b.log.Error("write status file", "err", err)
		b.mu.Lock()
		b.dirty = true
		b.mu.Unlock()
	}
}
