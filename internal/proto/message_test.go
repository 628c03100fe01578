package proto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// golden compares got with testdata/name, rewriting the file under -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s: got\n%q\nwant\n%q", name, got, want)
	}
}

// writeCounter records each Write call, to check frames go out whole.
type writeCounter struct {
	bytes.Buffer
	calls int
}

func (w *writeCounter) Write(p []byte) (int, error) {
	w.calls++
	return w.Buffer.Write(p)
}

// frame builds a control frame by hand, independent of WriteMessage.
func frame(typ byte, payload string) []byte {
	b := []byte{typ, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], uint32(len(payload)))
	return append(b, payload...)
}

func TestWireConstants(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want int
	}{
		{"TypeHello", int(TypeHello), 1},
		{"TypeWelcome", int(TypeWelcome), 2},
		{"TypeRefuse", int(TypeRefuse), 3},
		{"TypeEnroll", int(TypeEnroll), 4},
		{"TypeHostKeys", int(TypeHostKeys), 5},
		{"Version", Version, 1},
		{"MaxMessageSize", MaxMessageSize, 65536},
		{"MaxServices", MaxServices, 64},
	} {
		if c.got != c.want {
			t.Errorf("%s: got %d, want %d", c.name, c.got, c.want)
		}
	}
}

var goldenMessages = []struct {
	file string
	msg  Message
}{
	{"hello.golden", &Hello{Version: 1, Playnode: "kiosk-7", Services: []Service{{"ssh", 22}, {"web", 8080}}, Software: "paradigm-node/0.1"}},
	{"welcome.golden", &Welcome{Version: 1, Playnode: "kiosk-7", Portaliases: []Portalias{{"ssh", 40001}, {"web", 40002}}}},
	{"refuse.golden", &Refuse{Code: RefuseReplaced, Reason: "a newer session of kiosk-7 took over"}},
	{"host_keys.golden", &HostKeys{Next: []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN6MJcIWDGrC9y4DWwk+CnVUWOiHW0MZLLcQu9nMvKn6"}}},
	{"enroll.golden", &Enroll{Version: 1, Playnode: "signage-3f9a1c2e", Token: "pdt_3f9a1c2e_c2VjcmV0LW5vdC1hLXJlYWwtdG9rZW4tanVzdC1hLXRlc3Q"}},
	{"refuse_pending.golden", &Refuse{Code: RefusePending, Reason: "enrollment of signage-3f9a1c2e waits for approval on the relay"}},
}

func TestMessageGoldenAndRoundTrip(t *testing.T) {
	for _, c := range goldenMessages {
		t.Run(c.file, func(t *testing.T) {
			var w writeCounter
			if err := WriteMessage(&w, c.msg); err != nil {
				t.Fatal(err)
			}
			if w.calls != 1 {
				t.Errorf("Write calls: got %d, want 1", w.calls)
			}
			golden(t, c.file, w.Bytes())
			got, err := ReadMessage(&w)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, c.msg) {
				t.Errorf("round trip: got %#v, want %#v", got, c.msg)
			}
			if w.Len() != 0 {
				t.Errorf("left unread: got %d bytes, want 0", w.Len())
			}
		})
	}
}

func TestReadMessageSequence(t *testing.T) {
	var buf bytes.Buffer
	for _, c := range goldenMessages {
		if err := WriteMessage(&buf, c.msg); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range goldenMessages {
		got, err := ReadMessage(&buf)
		if err != nil {
			t.Fatal(err)
		}
		if got.Type() != c.msg.Type() {
			t.Errorf("type: got %s, want %s", got.Type(), c.msg.Type())
		}
	}
	if _, err := ReadMessage(&buf); !errors.Is(err, io.EOF) {
		t.Errorf("after the last frame: got %v, want io.EOF", err)
	}
}

func TestReadMessageIgnoresUnknownFields(t *testing.T) {
	in := frame(1, `{"version":1,"playnode":"p","services":[{"name":"ssh","port":22,"tls":true}],"future":{"x":1}}`)
	got, err := ReadMessage(bytes.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := &Hello{Version: 1, Playnode: "p", Services: []Service{{"ssh", 22}}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %#v, want %#v", got, want)
	}
}

// readMessageErrors are malformed frames; the fuzz target starts from them.
var readMessageErrors = []struct {
	name string
	in   []byte
	want string // substring of the error
	is   error  // if set, errors.Is must hold
}{
	{"empty", nil, "read control message: EOF", io.EOF},
	{"truncated header", []byte{1, 0, 0}, "read control message: unexpected EOF", io.ErrUnexpectedEOF},
	{"unknown type", frame(7, `{}`), "read control message: type 7 unknown", nil},
	{"type zero", frame(0, `{}`), "read control message: type 0 unknown", nil},
	{"oversized", []byte{2, 0, 1, 0x11, 0x70}, "read control message welcome: control message of 70000 bytes exceeds limit 65536", ErrMessageTooLarge},
	{"max length field", []byte{1, 0xff, 0xff, 0xff, 0xff}, "control message of 4294967295 bytes exceeds limit 65536", ErrMessageTooLarge},
	{"truncated payload", frame(3, `{"code":"revoked"}`)[:10], "read control message refuse: payload of 18 bytes: unexpected EOF", io.ErrUnexpectedEOF},
	{"header only", frame(1, `{}`)[:5], "read control message hello: payload of 2 bytes: unexpected EOF", io.ErrUnexpectedEOF},
	{"empty payload", frame(1, ``), "read control message hello: unexpected end of JSON input", nil},
	{"bad json", frame(2, `{"version":`), "read control message welcome: unexpected end of JSON input", nil},
	{"trailing garbage", frame(3, `{} x`), "read control message refuse: invalid character 'x' after top-level value", nil},
	{"wrong field type", frame(1, `{"version":"1"}`), "read control message hello: json: cannot unmarshal string into Go struct field Hello.version of type int", nil},
	{"port overflow", frame(1, `{"services":[{"name":"a","port":70000}]}`), "read control message hello: json: cannot unmarshal number 70000 into Go struct field", nil},
}

func TestReadMessageErrors(t *testing.T) {
	for _, c := range readMessageErrors {
		t.Run(c.name, func(t *testing.T) {
			m, err := ReadMessage(bytes.NewReader(c.in))
			if err == nil {
				t.Fatalf("got message %#v, want error %q", m, c.want)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("got error %q, want %q", err, c.want)
			}
			if c.is != nil && !errors.Is(err, c.is) {
				t.Errorf("got error %v, want errors.Is %v", err, c.is)
			}
		})
	}
}

func TestReadMessageChecksSizeBeforeReading(t *testing.T) {
	// Only the header is there: had ReadMessage allocated and read 4 GiB
	// first, the error would be about the payload, not the size.
	r := bytes.NewReader([]byte{1, 0xff, 0xff, 0xff, 0xff})
	if _, err := ReadMessage(r); !errors.Is(err, ErrMessageTooLarge) {
		t.Fatalf("got %v, want ErrMessageTooLarge", err)
	}
}

func TestWriteMessageErrors(t *testing.T) {
	var w writeCounter
	big := &Refuse{Code: RefuseProtocol, Reason: strings.Repeat("x", MaxMessageSize)}
	err := WriteMessage(&w, big)
	if !errors.Is(err, ErrMessageTooLarge) {
		t.Errorf("oversized: got %v, want ErrMessageTooLarge", err)
	}
	if want := "write control message refuse: control message of"; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("oversized: got %v, want prefix %q", err, want)
	}
	if err := WriteMessage(&w, nil); err == nil {
		t.Error("nil message: got nil error, want one")
	}
	if w.calls != 0 {
		t.Errorf("Write calls after errors: got %d, want 0", w.calls)
	}
	failing := errors.New("pipe closed")
	err = WriteMessage(errWriter{failing}, &Hello{})
	if !errors.Is(err, failing) {
		t.Errorf("write error: got %v, want it wrapped", err)
	}
}

type errWriter struct{ err error }

func (w errWriter) Write([]byte) (int, error) { return 0, w.err }

func TestRefuseIsError(t *testing.T) {
	var err error = fmt.Errorf("register: %w", &Refuse{Code: RefuseRevoked, Reason: "key revoked by operator"})
	if want := "register: relay refused: revoked: key revoked by operator"; err.Error() != want {
		t.Errorf("got %q, want %q", err, want)
	}
	var ref *Refuse
	if !errors.As(err, &ref) {
		t.Fatalf("errors.As(%v, *Refuse): got false, want true", err)
	}
	if ref.Code != RefuseRevoked {
		t.Errorf("code: got %q, want %q", ref.Code, RefuseRevoked)
	}
}

func services(n int) []Service {
	s := make([]Service, n)
	for i := range s {
		s[i] = Service{Name: fmt.Sprintf("svc%d", i), Port: uint16(1000 + i)}
	}
	return s
}

func TestHelloValidate(t *testing.T) {
	ok := func() Hello { return Hello{Version: Version, Playnode: "kiosk-7", Services: []Service{{"ssh", 22}}} }
	for _, c := range []struct {
		name   string
		modify func(h *Hello)
		want   string // "" for valid
	}{
		{"valid", func(h *Hello) {}, ""},
		{"max services", func(h *Hello) { h.Services = services(MaxServices) }, ""},
		{"old version", func(h *Hello) { h.Version = 0 }, "hello version 0, relay speaks version 1"},
		{"new version", func(h *Hello) { h.Version = 2 }, "hello version 2, relay speaks version 1"},
		{"empty playnode", func(h *Hello) { h.Playnode = "" }, "playnode name is empty"},
		{"bad playnode", func(h *Hello) { h.Playnode = "../etc" }, `playnode name "../etc": character '.' at offset 0`},
		{"long playnode", func(h *Hello) { h.Playnode = strings.Repeat("a", MaxNameLen+1) }, "is 64 bytes long, the limit is 63"},
		{"no services", func(h *Hello) { h.Services = nil }, "hello lists no services"},
		{"too many services", func(h *Hello) { h.Services = services(MaxServices + 1) }, "hello lists 65 services, the limit is 64"},
		{"bad service name", func(h *Hello) { h.Services[0].Name = "s sh" }, `service name "s sh": character ' ' at offset 1`},
		{"empty service name", func(h *Hello) { h.Services[0].Name = "" }, "service name is empty"},
		{"duplicate", func(h *Hello) { h.Services = append(h.Services, Service{"ssh", 2222}) }, `service "ssh" listed twice`},
		{"zero port", func(h *Hello) { h.Services[0].Port = 0 }, `service "ssh" has port 0`},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := ok()
			c.modify(&h)
			err := h.Validate()
			switch {
			case c.want == "" && err != nil:
				t.Errorf("got %v, want nil", err)
			case c.want != "" && err == nil:
				t.Errorf("got nil, want %q", c.want)
			case c.want != "" && !strings.Contains(err.Error(), c.want):
				t.Errorf("got %q, want %q", err, c.want)
			}
		})
	}
}

func BenchmarkWriteReadMessage(b *testing.B) {
	hello := &Hello{Version: Version, Playnode: "kiosk-7", Services: services(8), Software: "paradigm-node/0.1"}
	var buf bytes.Buffer
	if err := WriteMessage(&buf, hello); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(buf.Len()))
	b.ReportAllocs()
	for b.Loop() {
		buf.Reset()
		if err := WriteMessage(&buf, hello); err != nil {
			b.Fatal(err)
		}
		if _, err := ReadMessage(&buf); err != nil {
			b.Fatal(err)
		}
	}
}
