package relay

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var updateGolden = flag.Bool("update", false, "rewrite the golden files under testdata/")

var tokenT0 = time.Date(2026, 11, 29, 3, 0, 0, 0, time.UTC)

func goldenTokens() *tokenSet {
	return &tokenSet{tokens: []Token{
		{ID: "3f9a1c2e", Hash: [32]byte{1, 2, 3}, Uses: 10, Expires: tokenT0.Add(24 * time.Hour), Names: "signage-*", Approve: false, Created: tokenT0, Comment: `shop "north" rollout`},
		{ID: "00ff00ff", Hash: [32]byte{9}, Uses: 1, Names: "*", Approve: true, Created: tokenT0},
	}}
}

func TestTokensGolden(t *testing.T) {
	got := goldenTokens().marshal()
	p := filepath.Join("testdata", "enroll_tokens.golden")
	if *updateGolden {
		if err := os.WriteFile(p, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("tokens file:\ngot\n%s\nwant\n%s", got, want)
	}
	back, err := parseTokens(want, p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(back.marshal(), want) {
		t.Errorf("round trip differs:\n%s", back.marshal())
	}
}

var tokenParseErrors = []struct {
	name, in, want string
}{
	{"not a token line", "tok id=1", "line does not start"},
	{"unknown field", "token id=3f9a1c2e foo=1", `unknown field "foo"`},
	{"bad id", "token id=xyz", "8 hex digits"},
	{"short hash", "token id=3f9a1c2e sha256=00", "64 hex digits"},
	{"negative uses", "token uses=-1", "negative"},
	{"bad expiry", "token expires=tomorrow", "field expires"},
	{"bad approve", "token approve=maybe", "yes or no"},
	{"bad pattern", "token names=[", "syntax error"},
	{"missing field", "token id=3f9a1c2e", "missing"},
	{"twice", "token id=3f9a1c2e id=3f9a1c2e", "twice"},
	{"unterminated comment", `token comment="abc`, "double-quoted"},
	{"after comment", `token comment="abc"x`, "after the closing quote"},
	{"no value", "token id", "key=value"},
}

func TestParseTokensErrors(t *testing.T) {
	for _, c := range tokenParseErrors {
		t.Run(c.name, func(t *testing.T) {
			_, err := parseTokens([]byte("# c\n"+c.in+"\n"), "f")
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error containing %q", err, c.want)
			}
			if !strings.HasPrefix(err.Error(), "f:2: ") {
				t.Errorf("got %v, want it to name f:2", err)
			}
		})
	}
	dup := string(goldenTokens().marshal()) + goldenTokens().tokens[0].format() + "\n"
	if _, err := parseTokens([]byte(dup), "f"); err == nil || !strings.Contains(err.Error(), "listed twice") {
		t.Errorf("duplicate id: got %v", err)
	}
}

func FuzzParseTokens(f *testing.F) {
	f.Add(goldenTokens().marshal())
	for _, c := range tokenParseErrors {
		f.Add([]byte(c.in))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		set, err := parseTokens(in, "f")
		if err != nil {
			return
		}
		out := set.marshal()
		again, err := parseTokens(out, "f")
		if err != nil {
			t.Fatalf("re-parse of %q: %v", out, err)
		}
		if !bytes.Equal(again.marshal(), out) {
			t.Fatalf("not stable:\n%s\n%s", out, again.marshal())
		}
	})
}

func TestTokenLifecycle(t *testing.T) {
	dir := t.TempDir()
	tok, tk, err := CreateToken(dir, TokenOptions{Uses: 2, TTL: time.Hour, Names: "kiosk-*"}, tokenT0)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok, "pdt_"+tk.ID+"_") {
		t.Fatalf("token %q does not carry id %s", tok, tk.ID)
	}
	data, _ := os.ReadFile(filepath.Join(dir, TokensFile))
	if bytes.Contains(data, []byte(tok[len("pdt_"+tk.ID+"_"):])) {
		t.Fatal("the tokens file holds the secret")
	}
	set, err := readTokens(fileDocs(dir, 0))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		tok, name string
		at        time.Time
		want      error
	}{
		{tok, "kiosk-1", tokenT0, nil},
		{tok, "signage-1", tokenT0, ErrTokenName},
		{tok, "kiosk-1", tokenT0.Add(time.Hour), ErrTokenExpired},
		{tampered(tok), "kiosk-1", tokenT0, ErrTokenUnknown},
		{"pdt_00000000_x", "kiosk-1", tokenT0, ErrTokenUnknown},
		{"garbage", "kiosk-1", tokenT0, ErrTokenUnknown},
	} {
		_, err := set.lookupToken(c.tok, c.name, c.at)
		if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
			t.Errorf("lookup %q %s at %s: got %v, want %v", c.tok, c.name, c.at, err, c.want)
		}
	}
	if err := RemoveToken(dir, tk.ID); err != nil {
		t.Fatal(err)
	}
	if l, _ := ListTokens(dir); len(l) != 0 {
		t.Fatalf("after rm: %d tokens left", len(l))
	}
	if err := RemoveToken(dir, tk.ID); err == nil {
		t.Fatal("removing a removed token succeeded")
	}
}

// tampered changes the token's last character.
func tampered(tok string) string {
	c := byte('A')
	if tok[len(tok)-1] == c {
		c = 'B'
	}
	return tok[:len(tok)-1] + string(c)
}
