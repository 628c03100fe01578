package relay

import (
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/crypto/ssh"

	"paradigm/internal/identity"
)

// NodeRow is one authorized playnode, connected or never seen.
type NodeRow struct {
	Playnode    string    `json:"playnode"`
	Fingerprint string    `json:"key_fingerprint"`
	Enrolled    string    `json:"enrolled"` // the key line's comment: how it got there
	Online      bool      `json:"online"`
	LastSeen    time.Time `json:"last_seen,omitzero"`
}

// Nodes lists the playnodes of dataDir's authorized-nodes file: the
// flat-file form of Site.Nodes.
func Nodes(dataDir string) ([]NodeRow, error) { return Site{DataDir: dataDir}.Nodes() }

// Nodes lists the authorized playnodes, in name order, with what the
// status.json of DataDir says of each (the relay on this server: with a
// shared store, a playnode connected to another relay shows offline here).
func (s Site) Nodes() ([]NodeRow, error) {
	ctx, cancel := docCtx()
	defer cancel()
	set, data, err := readAuthorized(ctx, s.docs())
	if err != nil {
		return nil, err
	}
	doc, _ := readStatus(filepath.Join(s.DataDir, StatusFile))
	running := isRunning(s.DataDir)
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

// Revoke removes name from dataDir's authorized-nodes file: the flat-file
// form of Site.Revoke.
func Revoke(dataDir, name string) (string, error) { return Site{DataDir: dataDir}.Revoke(name) }

// Revoke removes name's binding from the authorized nodes and marks its key
// rejected in the pending list, so that an enrollment token the device still
// holds cannot bind it again; both in one update. Every running relay on
// the site ends the playnode's session when it sees the change: at once
// with a shared store, within a quarter of a second with the flat files.
func (s Site) Revoke(name string) (string, error) {
	d := s.docs()
	ctx, cancel := docCtx()
	defer cancel()
	var revoked authorizedNode
	err := d.Update(ctx, []string{PendingFile, AuthorizedFile}, func(cur map[string][]byte) (map[string][]byte, error) {
		auth, n, err := removeAuthorized(cur[AuthorizedFile], d.Where(AuthorizedFile), name)
		if err != nil {
			return nil, err
		}
		ps, err := parsePending(cur[PendingFile], d.Where(PendingFile))
		if err != nil {
			return nil, err
		}
		revoked = n
		return map[string][]byte{AuthorizedFile: auth, PendingFile: marshalPending(rejectKey(ps, name, n.key, time.Now()))}, nil
	})
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("revoked %s (key %s); running relays disconnect it at once", name, identity.Fingerprint(revoked.key)), nil
}
