package relay

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/crypto/ssh"

	"paradigm/internal/identity"
	"paradigm/internal/lockfile"
	"paradigm/internal/store"
)

// NodeRow is one authorized playnode, connected or never seen.
type NodeRow struct {
	Playnode    string    `json:"playnode"`
	Fingerprint string    `json:"key_fingerprint"`
	Enrolled    string    `json:"enrolled"` // the key line's comment: how it got there
	Online      bool      `json:"online"`
	LastSeen    time.Time `json:"last_seen,omitzero"`
}

// Nodes lists the playnodes of dataDir's authorized-nodes file, in name
// order, with what status.json says of each.
func Nodes(dataDir string) ([]NodeRow, error) {
	p := filepath.Join(dataDir, AuthorizedFile)
	data, err := os.ReadFile(p)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read authorized nodes: %w", err)
	}
	set, err := parseAuthorized(data, p)
	if err != nil {
		return nil, err
	}
	doc, _ := readStatus(filepath.Join(dataDir, StatusFile))
	running := isRunning(dataDir)
	lines := strings.Split(string(data), "\n")
	var rows []NodeRow
	for name, n := range set.byName {
		row := NodeRow{Playnode: name, Fingerprint: identity.Fingerprint(n.key)}
		if _, comment, _, _, err := ssh.ParseAuthorizedKey([]byte(lines[n.line-1])); err == nil {
			row.Enrolled = comment
		}
		if st := doc.Playnodes[name]; st != nil {
			row.Online = st.Online && running && st.Fingerprint == row.Fingerprint
			row.LastSeen = st.LastSeen
		}
		rows = append(rows, row)
	}
	slices.SortFunc(rows, func(a, b NodeRow) int { return strings.Compare(a.Playnode, b.Playnode) })
	return rows, nil
}

// WriteNodes prints rows as a table or a JSON array.
func WriteNodes(w io.Writer, rows []NodeRow, asJSON bool) error {
	if asJSON {
		return writeJSONList(w, rows)
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "PLAYNODE\tONLINE\tLAST SEEN\tKEY\tENROLLED")
	for _, r := range rows {
		seen := "never"
		if !r.LastSeen.IsZero() {
			seen = r.LastSeen.UTC().Format(time.RFC3339)
		}
		online := "no"
		if r.Online {
			online = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Playnode, online, seen, r.Fingerprint, r.Enrolled)
	}
	return tw.Flush()
}

// Revoke removes name's line from dataDir's authorized-nodes file and marks
// its key rejected in the pending file, so that an enrollment token the
// device still holds cannot bind it again. A running relay ends its session
// when it reloads the file (within its reload interval); the node is then
// refused. Lock order as everywhere: pending file, then authorized nodes.
func Revoke(dataDir, name string) (string, error) {
	p := filepath.Join(dataDir, AuthorizedFile)
	set, err := loadAuthorized(p)
	if err != nil {
		return "", err
	}
	n, ok := set.byName[name]
	if !ok {
		return "", fmt.Errorf("playnode %q is not in %s (see paradigm-relay nodes)", name, p)
	}
	if err := rejectKey(dataDir, name, n.key); err != nil {
		return "", err
	}
	lock, err := lockfile.AcquireFor(p, "authorized nodes")
	if err != nil {
		return "", err
	}
	defer lock.Release()
	data, err := os.ReadFile(p)
	if err != nil {
		return "", fmt.Errorf("read authorized nodes: %w", err)
	}
	if set, err = parseAuthorized(data, p); err != nil {
		return "", err
	}
	if n, ok = set.byName[name]; !ok {
		return "", fmt.Errorf("playnode %q is not in %s (see paradigm-relay nodes)", name, p)
	}
	lines := bytes.SplitAfter(data, []byte("\n"))
	out := slices.Concat(slices.Concat(lines[:n.line-1]...), slices.Concat(lines[n.line:]...))
	if err := store.WriteAtomic(p, out, 0o644); err != nil {
		return "", err
	}
	return fmt.Sprintf("revoked %s (key %s); a running relay disconnects it within its reload interval", name, identity.Fingerprint(n.key)), nil
}
