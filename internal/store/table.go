// Package store is the flat-file database of portaliases: which TCP port on
// the relay (the portalias) belongs to which (playnode, service).
//
// The file is for humans as much as for the relay:
//
//	# paradigm-relay portaliases: PLAYNODE SERVICE PORTALIAS, one per line.
//	kitchen-pi ssh  2201   # trailing comments are fine
//	kitchen-pi http 8001
//
// Fields are separated by runs of spaces or tabs, "#" starts a comment, blank
// lines are allowed. A Table keeps every line of the file it was parsed from,
// so comments, blank lines and order survive a rewrite; only the lines of
// changed entries are re-emitted, new entries are appended at the end.
package store

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"paradigm/internal/proto"
)

// Header starts a freshly created store file, so whoever opens it by hand
// knows the format and how to change it safely.
const Header = "# paradigm-relay portaliases: PLAYNODE SERVICE PORTALIAS, one per line.\n" +
	"# Hand edits (comments, order) are kept; while the relay runs, use `paradigm-relay alias`.\n"

// ErrPortaliasTaken is wrapped by Set when the port already belongs to
// another (playnode, service).
var ErrPortaliasTaken = errors.New("portalias is taken")

// Assignment is one line of the store: the portalias of a (playnode, service).
type Assignment struct {
	Playnode, Service string
	Portalias         uint16
}

type key struct{ playnode, service string }

// line is one line of the file, without its "\n". Lines that are not
// entries, and entries nobody changed, are written back as raw.
type line struct {
	raw     string
	entry   bool
	a       Assignment
	comment string // of an entry: the whitespace and "# ..." after the fields
	num     int    // 1-based line number in the parsed file, 0 if added
}

// Table is the in-memory view of a store file. It preserves the file's lines
// and is not safe for concurrent use. The zero Table is empty and has no
// header; New gives one with the header.
type Table struct {
	lines   []*line
	byKey   map[key]*line
	byPort  map[uint16]*line
	changed bool // since Parse or the last write by File.Update
}

// New returns an empty table that writes the Header.
func New() *Table {
	t := &Table{}
	for _, h := range strings.SplitAfter(strings.TrimSuffix(Header, "\n"), "\n") {
		t.lines = append(t.lines, &line{raw: strings.TrimSuffix(h, "\n")})
	}
	return t
}

func (t *Table) index(l *line) {
	if t.byKey == nil {
		t.byKey = make(map[key]*line)
		t.byPort = make(map[uint16]*line)
	}
	t.byKey[key{l.a.Playnode, l.a.Service}] = l
	t.byPort[l.a.Portalias] = l
}

// Lookup returns the portalias of (playnode, service).
func (t *Table) Lookup(playnode, service string) (uint16, bool) {
	l, ok := t.byKey[key{playnode, service}]
	if !ok {
		return 0, false
	}
	return l.a.Portalias, true
}

// Owner returns the assignment holding port, so the relay can tell whose
// listener a port is before binding it.
func (t *Table) Owner(port uint16) (Assignment, bool) {
	l, ok := t.byPort[port]
	if !ok {
		return Assignment{}, false
	}
	return l.a, true
}

// Set adds the assignment, or moves an existing (playnode, service) to a new
// portalias by rewriting its line in place. It fails, changing nothing, when
// a name is invalid, the port is 0, or the port belongs to another
// (playnode, service) (the error then wraps ErrPortaliasTaken).
func (t *Table) Set(a Assignment) error {
	if err := proto.ValidateName("playnode", a.Playnode); err != nil {
		return err
	}
	if err := proto.ValidateName("service", a.Service); err != nil {
		return err
	}
	if a.Portalias == 0 {
		return errors.New("portalias 0 is not a port number (1-65535)")
	}
	if o, ok := t.byPort[a.Portalias]; ok {
		if o.a == a {
			return nil
		}
		return fmt.Errorf("set %s %s: %w: portalias %d belongs to %s %s",
			a.Playnode, a.Service, ErrPortaliasTaken, a.Portalias, o.a.Playnode, o.a.Service)
	}
	t.changed = true
	if l, ok := t.byKey[key{a.Playnode, a.Service}]; ok {
		delete(t.byPort, l.a.Portalias)
		l.a = a
		l.raw = format(a, l.comment)
		t.index(l)
		return nil
	}
	l := &line{entry: true, a: a, raw: format(a, "")}
	t.lines = append(t.lines, l)
	t.index(l)
	return nil
}

// format renders an entry canonically: single spaces, then its comment.
func format(a Assignment, comment string) string {
	return a.Playnode + " " + a.Service + " " + strconv.Itoa(int(a.Portalias)) + comment
}

// Remove drops the line of (playnode, service) and reports whether it was
// there.
func (t *Table) Remove(playnode, service string) bool {
	l, ok := t.byKey[key{playnode, service}]
	if !ok {
		return false
	}
	t.drop(func(x *line) bool { return x == l })
	return true
}

// RemovePlaynode drops every entry of playnode and returns how many there
// were.
func (t *Table) RemovePlaynode(playnode string) int {
	return t.drop(func(x *line) bool { return x.entry && x.a.Playnode == playnode })
}

func (t *Table) drop(match func(*line) bool) int {
	n := len(t.lines)
	t.lines = slices.DeleteFunc(t.lines, func(l *line) bool {
		if !l.entry || !match(l) {
			return false
		}
		delete(t.byKey, key{l.a.Playnode, l.a.Service})
		delete(t.byPort, l.a.Portalias)
		return true
	})
	removed := n - len(t.lines)
	if removed > 0 {
		t.changed = true
	}
	return removed
}

// All returns the assignments sorted by playnode, then service.
func (t *Table) All() []Assignment {
	all := make([]Assignment, 0, len(t.byKey))
	for _, l := range t.byKey {
		all = append(all, l.a)
	}
	slices.SortFunc(all, func(a, b Assignment) int {
		if c := strings.Compare(a.Playnode, b.Playnode); c != 0 {
			return c
		}
		return strings.Compare(a.Service, b.Service)
	})
	return all
}

// Each calls fn for every assignment, in no particular order: cheaper than
// All for a caller that needs no order.
func (t *Table) Each(fn func(Assignment)) {
	for _, l := range t.byKey {
		fn(l.a)
	}
}

// Len returns the number of assignments.
func (t *Table) Len() int { return len(t.byKey) }

// FirstFree returns the lowest port in [lo, hi] that no entry holds, for the
// relay to hand out to a new service.
func (t *Table) FirstFree(lo, hi uint16) (uint16, bool) {
	for p := max(lo, 1); p >= lo && p <= hi; p++ {
		if _, taken := t.byPort[p]; !taken {
			return p, true
		}
		if p == 65535 {
			break
		}
	}
	return 0, false
}

// WriteTo writes the table in file form: the parsed lines as they were,
// changed entries re-formatted, added entries at the end. Every line ends
// in "\n", so canonical input comes back byte for byte.
func (t *Table) WriteTo(w io.Writer) (int64, error) {
	var b bytes.Buffer
	for _, l := range t.lines {
		b.WriteString(l.raw)
		b.WriteByte('\n')
	}
	return b.WriteTo(w)
}
