package proto

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"unicode/utf8"
)

func TestStreamWireConstants(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want int
	}{
		{"StreamVersion", StreamVersion, 1},
		{"StatusOK", int(StatusOK), 0},
		{"StatusUnknownService", int(StatusUnknownService), 1},
		{"StatusDialFailed", int(StatusDialFailed), 2},
		{"StatusRefused", int(StatusRefused), 3},
	} {
		if c.got != c.want {
			t.Errorf("%s: got %d, want %d", c.name, c.got, c.want)
		}
	}
}

func TestStreamHeaderGoldenAndRoundTrip(t *testing.T) {
	var w writeCounter
	if err := WriteStreamHeader(&w, "web"); err != nil {
		t.Fatal(err)
	}
	if w.calls != 1 {
		t.Errorf("Write calls: got %d, want 1", w.calls)
	}
	golden(t, "stream_header.golden", w.Bytes())
	if got := AppendStreamHeader([]byte("x"), "web"); !bytes.Equal(got[1:], w.Bytes()) {
		t.Errorf("AppendStreamHeader: got %q, want %q", got[1:], w.Bytes())
	}

	// The bytes after the header belong to the splice: none may be consumed,
	// even from a reader that hands out one byte at a time.
	w.WriteString("GET / HTTP/1.1\r\n")
	r := iotest.OneByteReader(bytes.NewReader(w.Bytes()))
	got, err := ReadStreamHeader(r)
	if err != nil {
		t.Fatal(err)
	}
	if got != "web" {
		t.Errorf("service: got %q, want %q", got, "web")
	}
	rest, _ := io.ReadAll(r)
	if string(rest) != "GET / HTTP/1.1\r\n" {
		t.Errorf("after header: got %q, want %q", rest, "GET / HTTP/1.1\r\n")
	}
}

func TestWriteStreamHeaderRejectsBadName(t *testing.T) {
	var w writeCounter
	for _, name := range []string{"", "a b", strings.Repeat("s", MaxNameLen+1)} {
		if err := WriteStreamHeader(&w, name); err == nil || !strings.HasPrefix(err.Error(), "write stream header: service name") {
			t.Errorf("WriteStreamHeader(%q): got %v, want a service name error", name, err)
		}
	}
	if w.calls != 0 {
		t.Errorf("Write calls: got %d, want 0", w.calls)
	}
}

// streamHeaderErrors are malformed stream headers; the fuzz target starts
// from them.
var streamHeaderErrors = []struct {
	name string
	in   []byte
	want string
	is   error
}{
	{"empty", nil, "read stream header: EOF", io.EOF},
	{"version only", []byte{1}, "read stream header: unexpected EOF", io.ErrUnexpectedEOF},
	{"version 0", []byte{0, 3, 'w', 'e', 'b'}, "read stream header: version 0 unsupported, want 1", nil},
	{"version 2", []byte{2, 3, 'w', 'e', 'b'}, "read stream header: version 2 unsupported, want 1", nil},
	{"empty name", []byte{1, 0}, "read stream header: service name length 0 out of range 1..63", nil},
	{"long name", append([]byte{1, 64}, strings.Repeat("a", 64)...), "read stream header: service name length 64 out of range 1..63", nil},
	{"truncated name", []byte{1, 3, 'w', 'e'}, "read stream header: service name: unexpected EOF", io.ErrUnexpectedEOF},
	{"length only", []byte{1, 3}, "read stream header: service name: unexpected EOF", io.ErrUnexpectedEOF},
	{"bad name", []byte{1, 3, 'w', '/', 'b'}, `read stream header: service name "w/b": character '/' at offset 1`, nil},
	{"leading dot", []byte{1, 2, '.', 'a'}, `read stream header: service name ".a": character '.' at offset 0`, nil},
}

func TestReadStreamHeaderErrors(t *testing.T) {
	for _, c := range streamHeaderErrors {
		t.Run(c.name, func(t *testing.T) {
			got, err := ReadStreamHeader(bytes.NewReader(c.in))
			if err == nil {
				t.Fatalf("got service %q, want error %q", got, c.want)
			}
			if !strings.HasPrefix(err.Error(), c.want) {
				t.Errorf("got error %q, want %q", err, c.want)
			}
			if c.is != nil && !errors.Is(err, c.is) {
				t.Errorf("got error %v, want errors.Is %v", err, c.is)
			}
		})
	}
}

func TestStreamStatusGoldenAndRoundTrip(t *testing.T) {
	for _, c := range []struct {
		file   string
		status StreamStatus
		reason string
		want   string // error text, "" for nil
	}{
		{"status_ok.golden", StatusOK, "ignored", ""},
		{"status_dial_failed.golden", StatusDialFailed, "connect: connection refused",
			"service unavailable on playnode: dial failed: connect: connection refused"},
		{"status_unknown_service.golden", StatusUnknownService, "",
			"service unavailable on playnode: unknown service"},
	} {
		t.Run(c.file, func(t *testing.T) {
			var w writeCounter
			if err := WriteStreamStatus(&w, c.status, c.reason); err != nil {
				t.Fatal(err)
			}
			if w.calls != 1 {
				t.Errorf("Write calls: got %d, want 1", w.calls)
			}
			golden(t, c.file, w.Bytes())
			w.WriteString("data")
			err := ReadStreamStatus(&w)
			if c.want == "" {
				if err != nil {
					t.Fatalf("got %v, want nil", err)
				}
			} else {
				var se *StreamError
				if !errors.As(err, &se) {
					t.Fatalf("got %v, want a *StreamError", err)
				}
				if se.Status != c.status || se.Error() != c.want {
					t.Errorf("got status %d %q, want %d %q", se.Status, se, c.status, c.want)
				}
			}
			if w.String() != "data" {
				t.Errorf("after status: got %q, want %q", w.String(), "data")
			}
		})
	}
}

func TestWriteStreamStatusTruncatesOnRuneBoundary(t *testing.T) {
	reason := strings.Repeat("é", 200) // 400 bytes of 2-byte runes
	var buf bytes.Buffer
	if err := WriteStreamStatus(&buf, StatusRefused, reason); err != nil {
		t.Fatal(err)
	}
	var se *StreamError
	if err := ReadStreamStatus(&buf); !errors.As(err, &se) {
		t.Fatalf("got %v, want a *StreamError", err)
	}
	if len(se.Reason) != 254 || !utf8.ValidString(se.Reason) {
		t.Errorf("reason: got %d bytes (valid UTF-8: %v), want 254 valid", len(se.Reason), utf8.ValidString(se.Reason))
	}
}

// streamStatusErrors are truncated or unusual statuses; the fuzz target
// starts from them.
var streamStatusErrors = []struct {
	name string
	in   []byte
	want string
	is   error
}{
	{"empty", nil, "read stream status: EOF", io.EOF},
	{"no reason length", []byte{2}, "read stream status dial failed: reason length: unexpected EOF", io.ErrUnexpectedEOF},
	{"truncated reason", []byte{3, 5, 'b', 'u'}, "read stream status refused: reason: unexpected EOF", io.ErrUnexpectedEOF},
	{"unknown status", []byte{9, 2, 'h', 'i'}, "service unavailable on playnode: status 9: hi", nil},
	{"empty reason", []byte{1, 0}, "service unavailable on playnode: unknown service", nil},
}

func TestReadStreamStatusErrors(t *testing.T) {
	for _, c := range streamStatusErrors {
		t.Run(c.name, func(t *testing.T) {
			err := ReadStreamStatus(bytes.NewReader(c.in))
			if err == nil || err.Error() != c.want {
				t.Errorf("got error %v, want %q", err, c.want)
			}
			if c.is != nil && !errors.Is(err, c.is) {
				t.Errorf("got error %v, want errors.Is %v", err, c.is)
			}
		})
	}
}

func TestStreamAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items at random under -race")
	}
	var header, status bytes.Buffer
	WriteStreamHeader(&header, "web")
	WriteStreamStatus(&status, StatusOK, "")
	hdr, st := header.Bytes(), status.Bytes()
	var r bytes.Reader
	var w bytes.Buffer
	w.Grow(64)
	buf := make([]byte, 0, 64)
	for _, c := range []struct {
		name string
		want float64
		f    func()
	}{
		{"AppendStreamHeader", 0, func() { buf = AppendStreamHeader(buf[:0], "web") }},
		{"WriteStreamHeader", 0, func() { w.Reset(); WriteStreamHeader(&w, "web") }},
		{"ReadStreamHeader", 1, func() { r.Reset(hdr); ReadStreamHeader(&r) }}, // the returned string
		{"WriteStreamStatus", 0, func() { w.Reset(); WriteStreamStatus(&w, StatusOK, "") }},
		{"ReadStreamStatus", 0, func() { r.Reset(st); ReadStreamStatus(&r) }},
	} {
		if got := testing.AllocsPerRun(100, c.f); got != c.want {
			t.Errorf("%s allocations: got %v, want %v", c.name, got, c.want)
		}
	}
}

func BenchmarkStreamHeader(b *testing.B) {
	var buf bytes.Buffer
	buf.Grow(128)
	b.SetBytes(int64(len(AppendStreamHeader(nil, "web")) + 1))
	b.ReportAllocs()
	for b.Loop() {
		buf.Reset()
		if err := WriteStreamHeader(&buf, "web"); err != nil {
			b.Fatal(err)
		}
		if _, err := ReadStreamHeader(&buf); err != nil {
			b.Fatal(err)
		}
		if err := WriteStreamStatus(&buf, StatusOK, ""); err != nil {
			b.Fatal(err)
		}
		if err := ReadStreamStatus(&buf); err != nil {
			b.Fatal(err)
		}
	}
}
