package store

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

func parseString(t *testing.T, s string) *Table {
	t.Helper()
	tab, err := Parse(strings.NewReader(s), "test")
	if err != nil {
		t.Fatalf("Parse(%q): %v", s, err)
	}
	return tab
}

func text(t *testing.T, tab *Table) string {
	t.Helper()
	var b strings.Builder
	n, err := tab.WriteTo(&b)
	if err != nil {
		t.Fatal(err)
	}
	if int(n) != b.Len() {
		t.Errorf("WriteTo returned %d, wrote %d bytes", n, b.Len())
	}
	return b.String()
}

// goodCases parse cleanly; they also seed FuzzParse.
var goodCases = []struct {
	name, in string
	want     []Assignment
}{
	{"empty", "", nil},
	{"blank lines", "\n\n \t\n", nil},
	{"comments", "# only\n  # indented\n", nil},
	{"one", "pi ssh 22\n", []Assignment{{"pi", "ssh", 22}}},
	{"tabs and runs", "pi\t\tssh  \t 22  \n", []Assignment{{"pi", "ssh", 22}}},
	{"trailing comment", "pi ssh 22 # the door\n", []Assignment{{"pi", "ssh", 22}}},
	{"comment glued", "pi ssh 22#x\n", []Assignment{{"pi", "ssh", 22}}},
	{"crlf", "# c\r\npi ssh 22\r\n", []Assignment{{"pi", "ssh", 22}}},
	{"no final newline", "pi ssh 65535", []Assignment{{"pi", "ssh", 65535}}},
	{"sorted", "b x 3\na y 2\na x 1\n", []Assignment{{"a", "x", 1}, {"a", "y", 2}, {"b", "x", 3}}},
}

func TestParseGood(t *testing.T) {
	for _, tc := range goodCases {
		t.Run(tc.name, func(t *testing.T) {
			tab := parseString(t, tc.in)
			if got := tab.All(); !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
			if got, want := tab.Len(), len(tc.want); got != want {
				t.Errorf("got Len %d, want %d", got, want)
			}
		})
	}
}

// badCases fail to parse with exactly this error text; they also seed
// FuzzParse.
var badCases = []struct {
	name, in, want string
}{
	{"two fields", "# c\npi ssh\n", "/data/portaliases:2: want 3 fields (PLAYNODE SERVICE PORTALIAS), got 2"},
	{"four fields", "pi ssh 22 x\n", "/data/portaliases:1: want 3 fields (PLAYNODE SERVICE PORTALIAS), got 4"},
	{"port too big", "\n\n\n\n\n\npi ssh 70000\n", `/data/portaliases:7: portalias "70000" is not a port number (1-65535)`},
	{"port zero", "pi ssh 0\n", `/data/portaliases:1: portalias "0" is not a port number (1-65535)`},
	{"port sign", "pi ssh +22\n", `/data/portaliases:1: portalias "+22" is not a port number (1-65535)`},
	{"port word", "pi ssh http\n", `/data/portaliases:1: portalias "http" is not a port number (1-65535)`},
	{"bad playnode", "-pi ssh 22\n", `/data/portaliases:1: playnode name "-pi": character '-' at offset 0 is not allowed (use A-Z a-z 0-9 . _ -, starting with a letter or digit)`},
	{"bad service", "pi s/h 22\n", `/data/portaliases:1: service name "s/h": character '/' at offset 1 is not allowed (use A-Z a-z 0-9 . _ -, starting with a letter or digit)`},
	{"duplicate", "pi ssh 22\n# c\npi ssh 23\n", "/data/portaliases:3: playnode pi service ssh is listed twice, first on line 1"},
	{"same port", "pi ssh 22\npo ssh 22\n", "/data/portaliases:2: portalias 22 is given to pi ssh on line 1 and to po ssh on line 2"},
	{"several", "a\npi ssh 22\nb c\n", "/data/portaliases:1: want 3 fields (PLAYNODE SERVICE PORTALIAS), got 1\n" +
		"/data/portaliases:3: want 3 fields (PLAYNODE SERVICE PORTALIAS), got 2"},
}

func TestParseBad(t *testing.T) {
	for _, tc := range badCases {
		t.Run(tc.name, func(t *testing.T) {
			tab, err := Parse(strings.NewReader(tc.in), "/data/portaliases")
			if err == nil {
				t.Fatalf("got table %v, want error %q", tab.All(), tc.want)
			}
			if got := err.Error(); got != tc.want {
				t.Errorf("got error\n%s\nwant\n%s", got, tc.want)
			}
			var pe *ParseError
			if !errors.As(err, &pe) || pe.File != "/data/portaliases" {
				t.Errorf("got %#v, want a *ParseError for /data/portaliases", err)
			}
		})
	}
}

func TestParseErrorLimit(t *testing.T) {
	_, err := Parse(strings.NewReader(strings.Repeat("x\n", 1000)), "f")
	var es ParseErrors
	if !errors.As(err, &es) || len(es) != maxErrors {
		t.Errorf("got %d errors, want %d", len(es), maxErrors)
	}
}

func TestRoundTripByteExact(t *testing.T) {
	in := "# portaliases of the lab\n\n" +
		"kitchen-pi   ssh\t2201   # back door\n" +
		"  # indented comment\n" +
		"kitchen-pi http 8001\r\n" +
		"garage ssh 2202\n\n"
	tab := parseString(t, in)
	if got := text(t, tab); got != in {
		t.Errorf("got\n%q\nwant\n%q", got, in)
	}
}

func TestEdits(t *testing.T) {
	const in = "# head\n" +
		"a ssh  2201   # keep me\n" +
		"\n" +
		"b ssh 2202\n" +
		"a http 8001\n"
	tests := []struct {
		name string
		edit func(*Table) error
		want string
	}{
		{"no-op set", func(t *Table) error { return t.Set(Assignment{"a", "ssh", 2201}) }, in},
		{"move keeps comment", func(t *Table) error { return t.Set(Assignment{"a", "ssh", 2299}) },
			"# head\na ssh 2299   # keep me\n\nb ssh 2202\na http 8001\n"},
		{"add appends", func(t *Table) error { return t.Set(Assignment{"c", "ssh", 2203}) },
			in + "c ssh 2203\n"},
		{"remove drops line", func(t *Table) error { t.Remove("b", "ssh"); return nil },
			"# head\na ssh  2201   # keep me\n\na http 8001\n"},
		{"remove playnode", func(t *Table) error { t.RemovePlaynode("a"); return nil },
			"# head\n\nb ssh 2202\n"},
		{"swap via free port", func(t *Table) error {
			for _, a := range []Assignment{{"a", "ssh", 1}, {"b", "ssh", 2201}, {"a", "ssh", 2202}} {
				if err := t.Set(a); err != nil {
					return err
				}
			}
			return nil
		}, "# head\na ssh 2202   # keep me\n\nb ssh 2201\na http 8001\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tab := parseString(t, in)
			if err := tc.edit(tab); err != nil {
				t.Fatal(err)
			}
			if got := text(t, tab); got != tc.want {
				t.Errorf("got\n%s\nwant\n%s", got, tc.want)
			}
			if again := text(t, parseString(t, text(t, tab))); again != tc.want {
				t.Errorf("reparsed: got\n%s\nwant\n%s", again, tc.want)
			}
		})
	}
}

func TestSetRemoveSemantics(t *testing.T) {
	tab := New()
	if err := tab.Set(Assignment{"pi", "ssh", 2201}); err != nil {
		t.Fatal(err)
	}
	if err := tab.Set(Assignment{"pi", "http", 8001}); err != nil {
		t.Fatal(err)
	}
	if err := tab.Set(Assignment{"po", "ssh", 2201}); !errors.Is(err, ErrPortaliasTaken) {
		t.Errorf("Set of a taken port: got %v, want ErrPortaliasTaken", err)
	}
	for _, a := range []Assignment{{"-x", "ssh", 1}, {"pi", "", 1}, {"pi", "ssh", 0}} {
		if err := tab.Set(a); err == nil {
			t.Errorf("Set(%v): got nil, want an error", a)
		}
	}
	if err := tab.Set(Assignment{"pi", "ssh", 2202}); err != nil {
		t.Fatalf("move: %v", err)
	}
	if p, ok := tab.Lookup("pi", "ssh"); !ok || p != 2202 {
		t.Errorf("Lookup after move: got %d %v, want 2202 true", p, ok)
	}
	if _, ok := tab.Owner(2201); ok {
		t.Errorf("Owner of the old port: got owned, want free")
	}
	if got, ok := tab.Owner(2202); !ok || got != (Assignment{"pi", "ssh", 2202}) {
		t.Errorf("Owner(2202): got %v %v, want pi ssh", got, ok)
	}
	if p, ok := tab.FirstFree(2202, 2203); !ok || p != 2203 {
		t.Errorf("FirstFree: got %d %v, want 2203 true", p, ok)
	}
	if _, ok := tab.FirstFree(2202, 2202); ok {
		t.Errorf("FirstFree of a full range: got ok, want none")
	}
	if !tab.Remove("pi", "ssh") || tab.Remove("pi", "ssh") {
		t.Errorf("Remove: want true then false")
	}
	if got := tab.RemovePlaynode("pi"); got != 1 {
		t.Errorf("RemovePlaynode: got %d, want 1", got)
	}
	if got := tab.Len(); got != 0 {
		t.Errorf("Len: got %d, want 0", got)
	}
	if got := text(t, tab); got != Header {
		t.Errorf("got\n%s\nwant the header only", got)
	}
}

// TestGolden pins the canonical format: a new table's bytes after a few
// Sets. Refresh with go test ./internal/store -update.
func TestGolden(t *testing.T) {
	tab := New()
	for _, a := range []Assignment{
		{"kitchen-pi", "ssh", 2201},
		{"kitchen-pi", "http", 8001},
		{"garage.cam", "rtsp", 8554},
	} {
		if err := tab.Set(a); err != nil {
			t.Fatal(err)
		}
	}
	got := text(t, tab)
	golden := filepath.Join("testdata", "portaliases.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	if again := text(t, parseString(t, string(want))); again != string(want) {
		t.Errorf("golden round trip: got\n%s\nwant\n%s", again, want)
	}
}

func FuzzParse(f *testing.F) {
	for _, tc := range goodCases {
		f.Add([]byte(tc.in))
	}
	for _, tc := range badCases {
		f.Add([]byte(tc.in))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		tab, err := Parse(bytes.NewReader(in), "fuzz")
		if err != nil {
			return
		}
		want := string(in)
		if len(in) > 0 && !strings.HasSuffix(want, "\n") {
			want += "\n"
		}
		got := text(t, tab)
		if got != want {
			t.Fatalf("round trip: got %q, want %q", got, want)
		}
		again := parseString(t, got)
		if !slices.Equal(again.All(), tab.All()) {
			t.Fatalf("reparse: got %v, want %v", again.All(), tab.All())
		}
		for _, a := range tab.All() {
			if p, ok := tab.Lookup(a.Playnode, a.Service); !ok || p != a.Portalias {
				t.Fatalf("Lookup(%s, %s): got %d %v, want %d", a.Playnode, a.Service, p, ok, a.Portalias)
			}
			if o, ok := tab.Owner(a.Portalias); !ok || o != a {
				t.Fatalf("Owner(%d): got %v %v, want %v", a.Portalias, o, ok, a)
			}
		}
	})
}
