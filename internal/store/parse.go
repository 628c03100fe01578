package store

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"paradigm/internal/proto"
)

// maxErrors bounds how many problems Parse reports for one file: enough to
// fix a botched hand edit in one go, not a wall of text for a binary file.
const maxErrors = 10

// ParseError is a problem at one line of a store file.
type ParseError struct {
	File   string
	Line   int
	Reason string
}

// Error returns "file:line: reason", the form editors jump to.
func (e *ParseError) Error() string {
	return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Reason)
}

// ParseErrors are all the problems of one file, in line order.
type ParseErrors []*ParseError

// Error lists the problems one per line.
func (es ParseErrors) Error() string {
	s := make([]string, len(es))
	for i, e := range es {
		s[i] = e.Error()
	}
	return strings.Join(s, "\n")
}

// Unwrap lets errors.As find each *ParseError.
func (es ParseErrors) Unwrap() []error {
	errs := make([]error, len(es))
	for i, e := range es {
		errs[i] = e
	}
	return errs
}

// Parse reads a store file; name (usually its path) prefixes error
// messages. It reports up to maxErrors problems as ParseErrors: wrong field
// count, bad name or port, a (playnode, service) listed twice, a port given
// twice. A file without a final newline gains one when written back.
func Parse(r io.Reader, name string) (*Table, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	text := string(data)
	text = strings.TrimSuffix(text, "\n")
	t := &Table{}
	if len(data) == 0 {
		return t, nil
	}
	var errs ParseErrors
	for i, raw := range strings.Split(text, "\n") {
		l := &line{raw: raw, num: i + 1}
		t.lines = append(t.lines, l)
		reason := parseLine(l)
		if reason == "" && l.entry {
			reason = t.conflict(l)
		}
		if reason != "" {
			l.entry = false
			if errs = append(errs, &ParseError{name, l.num, reason}); len(errs) == maxErrors {
				break
			}
			continue
		}
		if l.entry {
			t.index(l)
		}
	}
	if errs != nil {
		return nil, errs
	}
	return t, nil
}

// parseLine fills l from l.raw and returns what is wrong with it, if
// anything. Comment-only and blank lines leave l.entry false.
func parseLine(l *line) string {
	s := strings.TrimSuffix(l.raw, "\r")
	body, comment := s, ""
	if i := strings.IndexByte(s, '#'); i >= 0 {
		body, comment = s[:i], s[i:]
	}
	f := strings.FieldsFunc(body, func(r rune) bool { return r == ' ' || r == '\t' })
	if len(f) == 0 {
		return ""
	}
	if len(f) != 3 {
		return fmt.Sprintf("want 3 fields (PLAYNODE SERVICE PORTALIAS), got %d", len(f))
	}
	if err := proto.ValidateName("playnode", f[0]); err != nil {
		return err.Error()
	}
	if err := proto.ValidateName("service", f[1]); err != nil {
		return err.Error()
	}
	port, err := strconv.ParseUint(f[2], 10, 16)
	if err != nil || port == 0 {
		return fmt.Sprintf("portalias %q is not a port number (1-65535)", f[2])
	}
	l.entry = true
	l.a = Assignment{Playnode: f[0], Service: f[1], Portalias: uint16(port)}
	if comment != "" {
		// Keep the gap before "#" so a moved entry keeps its comment aligned.
		l.comment = body[strings.LastIndex(body, f[2])+len(f[2]):] + comment
	}
	return ""
}

// conflict says why the entry on l cannot join t, if it cannot.
func (t *Table) conflict(l *line) string {
	if o, ok := t.byKey[key{l.a.Playnode, l.a.Service}]; ok {
		return fmt.Sprintf("playnode %s service %s is listed twice, first on line %d",
			l.a.Playnode, l.a.Service, o.num)
	}
	if o, ok := t.byPort[l.a.Portalias]; ok {
		return fmt.Sprintf("portalias %d is given to %s %s on line %d and to %s %s on line %d",
			l.a.Portalias, o.a.Playnode, o.a.Service, o.num, l.a.Playnode, l.a.Service, l.num)
	}
	return ""
}
