package relay

import (
	"errors"
	"os"
	"path/filepath"
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
	Online      bool      `json:"online"`
	LastSeen    time.Time `json:"last_seen,omitzero"`
	Remote      string    `json:"remote,omitempty"`
}

// List reads the data folder, whether or not a relay runs on it: the
// portalias file, and status.json for online state. When no relay holds the
// folder's lock every playnode is offline, whatever status.json last said.
func List(dataDir string) (rows []Row, relayRunning bool, err error) {
	if _, err := os.Stat(dataDir); err != nil {
		return nil, false, err
	}
	table, err := (&store.File{Path: filepath.Join(dataDir, PortaliasFile)}).Load()
	if err != nil {
		return nil, false, err
	}
	relayRunning = true
	if l, err := lockfile.TryAcquire(filepath.Join(dataDir, LockFile)); err == nil {
		relayRunning = false
		l.Release()
	} else if !errors.Is(err, lockfile.ErrLocked) {
		return nil, false, err
	}
	doc, err := readStatus(filepath.Join(dataDir, StatusFile))
	if err != nil && !os.IsNotExist(err) {
		return nil, relayRunning, err
	}
	for _, a := range table.All() {
		row := Row{Playnode: a.Playnode, Service: a.Service, Portalias: a.Portalias}
		if st := doc.Playnodes[a.Playnode]; st != nil {
			port, registered := st.Services[a.Service]
			row.ServicePort = port
			row.Online = relayRunning && st.Online && registered
			row.LastSeen = st.LastSeen
			if relayRunning && st.Online {
				row.LastSeen = time.Now()
				row.Remote = st.Remote
			}
		}
		rows = append(rows, row)
	}
	return rows, relayRunning, nil
}
