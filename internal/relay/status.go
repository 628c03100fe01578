package relay

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"paradigm/internal/store"
)

// statusRefresh is how often status.json is rewritten while nothing
// changes, so that the last seen time of an online playnode is at most this
// old after a relay crash.
const statusRefresh = time.Minute

// nodeStatus is what status.json records of one playnode, so that
// `paradigm-relay ls` can show who is online, since when, and when offline
// playnodes were last seen, whether or not the relay runs.
type nodeStatus struct {
	Online        bool              `json:"online"`
	Connected     time.Time         `json:"connected,omitzero"`
	LastSeen      time.Time         `json:"last_seen,omitzero"`
	Remote        string            `json:"remote,omitempty"`
	Transport     string            `json:"transport,omitempty"`
	Fingerprint   string            `json:"key_fingerprint,omitempty"`
	ClientVersion string            `json:"client_version,omitempty"`
	Services      map[string]uint16 `json:"services,omitempty"`    // service -> service port on the device
	Portaliases   map[string]uint16 `json:"portaliases,omitempty"` // service -> portalias
	States        map[string]string `json:"states,omitempty"`      // service -> portalias state (Snapshot's)
	BindErrors    map[string]string `json:"bind_errors,omitempty"` // service -> why its portalias could not be bound
	Registered    []string          `json:"registered,omitempty"`  // the services its last hello registered
}

// RelayInfo is what a running relay records of its settings in
// status.json, so that the operator's commands can check against them.
type RelayInfo struct {
	PID            int           `json:"pid"`
	ListenPort     uint16        `json:"listen_port"`
	PortLow        uint16        `json:"port_low"`
	PortHigh       uint16        `json:"port_high"`
	Bind           string        `json:"bind"`
	ReloadInterval time.Duration `json:"reload_interval"`
	// Store names a shared store (--store) holding the portaliases; empty
	// when they are the data folder's file.
	Store string `json:"store,omitempty"`
}

type statusDoc struct {
	Updated   time.Time              `json:"updated"`
	Relay     *RelayInfo             `json:"relay,omitempty"`
	Playnodes map[string]*nodeStatus `json:"playnodes"`
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

// statusOf renders a snapshot as status.json records.
func statusOf(snap Snapshot, info *RelayInfo) statusDoc {
	doc := statusDoc{Updated: snap.Time, Relay: info, Playnodes: make(map[string]*nodeStatus, len(snap.Playnodes))}
	for _, p := range snap.Playnodes {
		st := &nodeStatus{Online: p.Online, Connected: p.Connected, LastSeen: p.LastSeen, Remote: p.Remote,
			Transport: p.Transport, Fingerprint: p.Fingerprint, ClientVersion: p.ClientVersion,
			Services: map[string]uint16{}, Portaliases: map[string]uint16{}, States: map[string]string{}, BindErrors: map[string]string{}}
		for _, s := range p.Services {
			if s.ServicePort != 0 {
				st.Services[s.Name] = s.ServicePort
			}
			if s.Portalias != 0 {
				st.Portaliases[s.Name] = s.Portalias
			}
			if s.BindError != "" {
				st.BindErrors[s.Name] = s.BindError
			}
			st.States[s.Name] = s.State
		}
		st.Registered = p.Registered
		doc.Playnodes[p.Name] = st
	}
	return doc
}

// statusMinGap spaces status.json writes during a burst of changes (a
// reconnection storm of thousands of playnodes): a change after a quiet
// spell is written at once, changes within statusMinGap of a write are
// written together, statusMinGap later.
const statusMinGap = time.Second

// writeStatus keeps status.json in step with the live state: flush rewrites
// it after changes (see statusMinGap) and every statusRefresh, until ctx
// is done. It is an event subscriber like any other: if it falls behind it
// loses events, which costs nothing since it writes the whole snapshot.
func writeStatus(ctx context.Context, sub *Subscription, flush func()) {
	refresh := time.NewTicker(statusRefresh)
	defer refresh.Stop()
	gap := time.NewTimer(0)
	defer gap.Stop()
	var last time.Time
	dirty, waiting := false, true // waiting: gap is running
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-sub.C:
			if !ok {
				return
			}
			dirty = true
		case <-refresh.C:
			dirty = true
		case <-gap.C:
			waiting = false
		}
		if !dirty || waiting {
			continue
		}
		if wait := statusMinGap - time.Since(last); wait > 0 {
			gap.Reset(wait)
			waiting = true
			continue
		}
		flush()
		dirty, last = false, time.Now()
	}
}

// flushStatus writes the current snapshot to status.json. A failing write
// is logged when it starts failing and when it recovers, not at every try.
func (r *Relay) flushStatus() {
	r.flushMirror()
	data, err := json.MarshalIndent(statusOf(r.reg.snapshot(), r.info()), "", "  ")
	if err == nil {
		err = store.WriteAtomic(r.statusPath(), append(data, '\n'), 0o644)
	}
	switch {
	case err != nil && !r.statusFailing:
		r.statusFailing = true
		r.log.Error("write status file, retrying at the next change", "err", err)
	case err == nil && r.statusFailing:
		r.statusFailing = false
		r.log.Info("status file written again")
	}
}

// info is the relay's settings for status.json.
func (r *Relay) info() *RelayInfo {
	info := &RelayInfo{PID: os.Getpid(), PortLow: r.cfg.PortLow, PortHigh: r.cfg.PortHigh, Bind: r.cfg.Bind, ReloadInterval: r.cfg.ReloadInterval}
	if named, ok := r.cfg.Store.(fmt.Stringer); ok {
		info.Store = named.String()
	}
	if a, ok := r.ln.Addr().(*net.TCPAddr); ok {
		info.ListenPort = uint16(a.Port)
	}
	return info
}

// mirrorHeader opens the local mirror of a cluster's portaliases.
const mirrorHeader = "# A copy of the cluster's portaliases in its shared store, written by the relay:\n" +
	"# edits here are overwritten; change them with paradigm-relay alias --store ...\n"

// flushMirror keeps DataDir/portaliases a readable copy of the shared
// store's table, for the operator's eyes and for `ls` while the store (or
// the relay) is down. It is written by the status writer, when the table
// changed, never under a lock. A relay alone keeps that file as its store.
func (r *Relay) flushMirror() {
	if r.cluster == nil {
		return
	}
	t := r.reg.currentTable()
	if t == r.mirrored {
		return
	}
	var buf bytes.Buffer
	buf.WriteString(mirrorHeader)
	t.WriteTo(&buf)
	if err := store.WriteAtomic(filepath.Join(r.cfg.DataDir, PortaliasFile), buf.Bytes(), 0o644); err != nil {
		r.log.Warn("write the local mirror of the portaliases", "err", err)
		return
	}
	r.mirrored = t
}
