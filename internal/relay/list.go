package relay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"paradigm/internal/lockfile"
	"paradigm/internal/store"
)

// Row is one line of `paradigm-relay ls`: a portalias and the state of the
// playnode service behind it.
type Row struct {
	Playnode    string    `json:"playnode"`
	Service     string    `json:"service"`
	ServicePort uint16    `json:"service_port,omitempty"` // on the device, as its last hello said
	Portalias   uint16    `json:"portalias"`
	Online      bool      `json:"online"` // the portalias reaches the service now
	State       string    `json:"state"`  // StateOnline, StateOffline, StateBindFailed, StateUnassigned
	LastSeen    time.Time `json:"last_seen,omitzero"`
	Remote      string    `json:"remote,omitempty"`
	// OutsideRange: the portalias is outside the relay's --ports (pinned
	// with --force, or the range changed since it was assigned).
	OutsideRange bool `json:"outside_range,omitempty"`
	// Stale: the playnode's last hello did not register this service
	// (`alias prune` removes it).
	Stale bool `json:"stale,omitempty"`
}

// List reads the data folder, whether or not a relay runs on it. A running
// relay keeps status.json in step with its live state (rewritten at every
// change), so rows then show exactly what it serves, including services
// whose portalias could not be bound or that have none. Without a relay the
// portalias file is the truth, every playnode is offline, and LastSeen is
// the last moment a relay heard from it (at most a minute before a crash).
func List(dataDir string) (rows []Row, relayRunning bool, err error) {
	if _, err := os.Stat(dataDir); err != nil {
		return nil, false, err
	}
	table, err := (&store.File{Path: filepath.Join(dataDir, PortaliasFile)}).Load(context.Background())
	if err != nil {
		return nil, false, err
	}
	relayRunning = isRunning(dataDir)
	// An unreadable status file costs only the online state and last
	// seen times: the portaliases are still listed.
	doc, _ := readStatus(filepath.Join(dataDir, StatusFile))
	info := RelayInfo{PortLow: DefaultLowPort, PortHigh: DefaultHiPort}
	if doc.Relay != nil {
		info = *doc.Relay
	}
	seen := map[[2]string]bool{}
	for _, a := range table.All() {
		row := Row{Playnode: a.Playnode, Service: a.Service, Portalias: a.Portalias, State: StateOffline,
			OutsideRange: a.Portalias < info.PortLow || a.Portalias > info.PortHigh}
		seen[[2]string{a.Playnode, a.Service}] = true
		if st := doc.Playnodes[a.Playnode]; st != nil {
			row.Stale = st.Registered != nil && !slices.Contains(st.Registered, a.Service)
			row.ServicePort = st.Services[a.Service]
			row.LastSeen = st.LastSeen
			if relayRunning {
				if state := st.States[a.Service]; state != "" {
					row.State = state
				}
				if st.Online {
					row.LastSeen, row.Remote = time.Now(), st.Remote
				}
			}
		}
		row.Online = row.State == StateOnline
		rows = append(rows, row)
	}
	if relayRunning {
		// Services the online playnode registered that have no portalias.
		for name, st := range doc.Playnodes {
			for svc, state := range st.States {
				if state == StateUnassigned && !seen[[2]string{name, svc}] {
					rows = append(rows, Row{Playnode: name, Service: svc, ServicePort: st.Services[svc],
						State: state, LastSeen: time.Now(), Remote: st.Remote})
				}
			}
		}
		sortRows(rows)
	}
	return rows, relayRunning, nil
}

func sortRows(rows []Row) {
	slices.SortFunc(rows, func(a, b Row) int {
		if c := strings.Compare(a.Playnode, b.Playnode); c != 0 {
			return c
		}
		return strings.Compare(a.Service, b.Service)
	})
}

// isRunning reports whether a relay holds the data folder's lock.
func isRunning(dataDir string) bool {
	l, err := lockfile.TryAcquire(filepath.Join(dataDir, LockFile))
	if err == nil {
		l.Release()
		return false
	}
	return errors.Is(err, lockfile.ErrLocked)
}

// Filter selects rows of List: playnodes whose name starts with one of
// Prefixes (all when empty), and only online or only offline rows.
type Filter struct {
	Prefixes        []string
	Online, Offline bool
}

// Apply returns the rows f selects.
func (f Filter) Apply(rows []Row) []Row {
	out := rows[:0:0]
	for _, r := range rows {
		if f.Online && !r.Online || f.Offline && r.Online {
			continue
		}
		if len(f.Prefixes) > 0 && !slices.ContainsFunc(f.Prefixes, func(p string) bool { return strings.HasPrefix(r.Playnode, p) }) {
			continue
		}
		out = append(out, r)
	}
	return out
}

// WriteRows prints rows as `paradigm-relay ls` shows them: a table, or a
// JSON array.
func WriteRows(w io.Writer, rows []Row, asJSON bool) error {
	if asJSON {
		return writeJSONList(w, rows)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PLAYNODE\tSERVICE\tSERVICE PORT\tPORTALIAS\tONLINE\tLAST SEEN")
	outside, stale := false, false
	for _, r := range rows {
		port, alias, online, seen := "-", "-", "no", "never"
		if r.ServicePort != 0 {
			port = strconv.Itoa(int(r.ServicePort))
		}
		if r.Portalias != 0 {
			alias = strconv.Itoa(int(r.Portalias))
		}
		if r.OutsideRange {
			alias += "*"
			outside = true
		}
		if r.Stale {
			online += " (stale)"
			stale = true
		}
		switch r.State {
		case StateOnline:
			online = "yes"
		case StateBindFailed, StateUnassigned:
			online = r.State
		}
		if r.State == StateOnline || r.State == StateUnassigned {
			seen = "now"
		} else if !r.LastSeen.IsZero() {
			seen = r.LastSeen.Local().Format(time.DateTime)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Playnode, r.Service, port, alias, online, seen)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if outside {
		fmt.Fprintln(w, "* outside the relay's --ports: kept, but not where new portaliases come from")
	}
	if stale {
		fmt.Fprintln(w, "(stale): the playnode's last hello did not register this service; `paradigm-relay alias prune` removes it")
	}
	return nil
}

// writeJSONList prints rows as an indented JSON array: [] when there are
// none, never null, so that scripts can index it.
func writeJSONList[T any](w io.Writer, rows []T) error {
	if rows == nil {
		rows = []T{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rows)
}
