package relay

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"paradigm/internal/store"
)

// TokensFile is the enrollment-tokens file inside the data folder: one line
// per token, key=value fields, holding only a hash of each token:
//
//	token id=3f9a1c2e sha256=... uses=10 expires=2026-12-01T00:00:00Z names=signage-* approve=no created=2026-11-29T03:00:00Z comment="shop rollout"
//
// A token is "pdt_" ID "_" SECRET, SECRET being 32 random bytes in base64url.
// The relay finds the line by ID and compares SHA-256(SECRET) in constant
// time. A plain SHA-256 is enough, no slow password hash: the secret has 256
// bits of entropy, so the stored hash cannot be brute-forced backwards, and
// nothing a person chose is being protected.
const TokensFile = "enroll_tokens"

const tokensHeader = `# paradigm-relay enrollment tokens: one line per token, only a SHA-256 of each
# secret is kept. uses is what is left; expires=never for no expiry; names is a
# glob the enrolling playnode's name must match; approve=yes holds enrollments
# in the pending list. Delete a line (or paradigm-relay token rm ID) to remove
# a token; playnodes it enrolled stay enrolled.
`

// tokenPrefix starts every token, so a leaked one is recognisable.
const tokenPrefix = "pdt_"

// maxTokenLen bounds a presented token; real ones are 56 bytes.
const maxTokenLen = 128

// Token is one line of the tokens file.
type Token struct {
	ID      string    `json:"id"`
	Hash    [32]byte  `json:"-"`
	Uses    int       `json:"uses"`              // left
	Expires time.Time `json:"expires,omitzero"`  // zero: never
	Names   string    `json:"names"`             // glob (path.Match)
	Approve bool      `json:"approve"`           // enrollments wait in the pending list
	Created time.Time `json:"created"`           //
	Comment string    `json:"comment,omitempty"` //
}

// Token errors; an enrolling node is told which.
var (
	ErrTokenUnknown = errors.New("enrollment token not known to this relay")
	ErrTokenExpired = errors.New("enrollment token expired")
	ErrTokenUsedUp  = errors.New("enrollment token has no uses left")
	ErrTokenName    = errors.New("playnode name does not match the token's name pattern")
)

// check reports whether the token admits name at now.
func (t *Token) check(name string, now time.Time) error {
	if !t.Expires.IsZero() && !now.Before(t.Expires) {
		return fmt.Errorf("%w (token %s, %s)", ErrTokenExpired, t.ID, t.Expires.Format(time.RFC3339))
	}
	if t.Uses <= 0 {
		return fmt.Errorf("%w (token %s)", ErrTokenUsedUp, t.ID)
	}
	if ok, _ := path.Match(t.Names, name); !ok {
		return fmt.Errorf("%w (%q does not match %q)", ErrTokenName, name, t.Names)
	}
	return nil
}

// splitToken returns the ID and the SHA-256 of the secret of a presented
// token.
func splitToken(tok string) (id string, hash [32]byte, err error) {
	if len(tok) > maxTokenLen {
		return "", hash, ErrTokenUnknown
	}
	rest, ok := strings.CutPrefix(tok, tokenPrefix)
	if !ok {
		return "", hash, ErrTokenUnknown
	}
	id, secret, ok := strings.Cut(rest, "_")
	if !ok || validTokenID(id) != nil || secret == "" {
		return "", hash, ErrTokenUnknown
	}
	return id, sha256.Sum256([]byte(secret)), nil
}

func validTokenID(id string) error {
	if len(id) != 8 {
		return fmt.Errorf("token id %q: want 8 hex digits", id)
	}
	if _, err := hex.DecodeString(id); err != nil {
		return fmt.Errorf("token id %q: want 8 hex digits", id)
	}
	return nil
}

// newToken draws a token and its line.
func newToken(now time.Time) (string, Token, error) {
	var idb [4]byte
	var secret [32]byte
	if _, err := rand.Read(idb[:]); err != nil {
		return "", Token{}, err
	}
	if _, err := rand.Read(secret[:]); err != nil {
		return "", Token{}, err
	}
	id := hex.EncodeToString(idb[:])
	s := base64.RawURLEncoding.EncodeToString(secret[:])
	return tokenPrefix + id + "_" + s, Token{ID: id, Hash: sha256.Sum256([]byte(s)), Created: now.UTC().Truncate(time.Second)}, nil
}

// tokenSet is the parsed tokens file, in file order.
type tokenSet struct {
	tokens []Token
}

func (s *tokenSet) find(id string) *Token {
	for i := range s.tokens {
		if s.tokens[i].ID == id {
			return &s.tokens[i]
		}
	}
	return nil
}

// parseTokens reads a tokens file; errors name file:line.
func parseTokens(data []byte, name string) (*tokenSet, error) {
	set := &tokenSet{}
	err := eachLine(data, name, func(lineNo int, text string) error {
		t, err := parseTokenLine(text)
		if err != nil {
			return err
		}
		if set.find(t.ID) != nil {
			return fmt.Errorf("token id %s listed twice", t.ID)
		}
		set.tokens = append(set.tokens, t)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return set, nil
}

// parseTokenLine parses `token k=v ...`; comment="..." is Go-quoted and
// comes last.
func parseTokenLine(text string) (Token, error) {
	rest, ok := strings.CutPrefix(text, "token ")
	if !ok {
		return Token{}, errors.New(`line does not start with "token "`)
	}
	var t Token
	seen := map[string]bool{}
	for rest = strings.TrimLeft(rest, " "); rest != ""; rest = strings.TrimLeft(rest, " ") {
		key, after, ok := strings.Cut(rest, "=")
		if !ok || key == "" || strings.Contains(key, " ") {
			return Token{}, fmt.Errorf("field %q: want key=value", strings.Fields(rest)[0])
		}
		var val string
		if key == "comment" {
			q, err := strconv.QuotedPrefix(after)
			if err != nil {
				return Token{}, fmt.Errorf("comment: want a double-quoted string: %v", err)
			}
			val, _ = strconv.Unquote(q)
			rest = after[len(q):]
			if rest != "" && rest[0] != ' ' {
				return Token{}, errors.New("comment: text after the closing quote")
			}
		} else {
			val, rest, _ = strings.Cut(after, " ")
		}
		if seen[key] {
			return Token{}, fmt.Errorf("field %s given twice", key)
		}
		seen[key] = true
		if err := t.set(key, val); err != nil {
			return Token{}, err
		}
	}
	for _, k := range []string{"id", "sha256", "uses", "expires", "names", "approve", "created"} {
		if !seen[k] {
			return Token{}, fmt.Errorf("field %s missing", k)
		}
	}
	return t, nil
}

func (t *Token) set(key, val string) error {
	var err error
	switch key {
	case "id":
		err = validTokenID(val)
		t.ID = val
	case "sha256":
		var b []byte
		if b, err = hex.DecodeString(val); err == nil && len(b) != 32 {
			err = errors.New("want 64 hex digits")
		}
		copy(t.Hash[:], b)
	case "uses":
		t.Uses, err = strconv.Atoi(val)
		if err == nil && t.Uses < 0 {
			err = errors.New("negative")
		}
	case "expires":
		if val != "never" {
			t.Expires, err = time.Parse(time.RFC3339, val)
		}
	case "names":
		t.Names = val
		if val == "" {
			err = errors.New("empty pattern (use * for any name)")
		} else {
			_, err = path.Match(val, "")
		}
	case "approve":
		switch val {
		case "yes":
			t.Approve = true
		case "no":
		default:
			err = errors.New("want yes or no")
		}
	case "created":
		t.Created, err = time.Parse(time.RFC3339, val)
	case "comment":
		t.Comment = val
	default:
		return fmt.Errorf("unknown field %q", key)
	}
	if err != nil {
		return fmt.Errorf("field %s=%q: %v", key, val, err)
	}
	return nil
}

// format is the token's line, without newline.
func (t *Token) format() string {
	exp := "never"
	if !t.Expires.IsZero() {
		exp = t.Expires.UTC().Format(time.RFC3339)
	}
	approve := "no"
	if t.Approve {
		approve = "yes"
	}
	line := fmt.Sprintf("token id=%s sha256=%s uses=%d expires=%s names=%s approve=%s created=%s",
		t.ID, hex.EncodeToString(t.Hash[:]), t.Uses, exp, t.Names, approve, t.Created.UTC().Format(time.RFC3339))
	if t.Comment != "" {
		line += " comment=" + strconv.Quote(t.Comment)
	}
	return line
}

func (s *tokenSet) marshal() []byte {
	var b bytes.Buffer
	b.WriteString(tokensHeader)
	for i := range s.tokens {
		b.WriteString(s.tokens[i].format())
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// updateTokens runs fn on the tokens of d and writes the result when fn
// returns write=true; fn may run more than once.
func updateTokens(d store.Docs, fn func(*tokenSet) (write bool, err error)) error {
	ctx, cancel := docCtx()
	defer cancel()
	return d.Update(ctx, []string{TokensFile}, func(cur map[string][]byte) (map[string][]byte, error) {
		set, err := parseTokens(cur[TokensFile], d.Where(TokensFile))
		if err != nil {
			return nil, err
		}
		write, err := fn(set)
		if err != nil || !write {
			return nil, err
		}
		return map[string][]byte{TokensFile: set.marshal()}, nil
	})
}

func readTokens(d store.Docs) (*tokenSet, error) {
	ctx, cancel := docCtx()
	defer cancel()
	data, err := d.Read(ctx, TokensFile)
	if err != nil {
		return nil, fmt.Errorf("read enrollment tokens: %w", err)
	}
	return parseTokens(data, d.Where(TokensFile))
}

// TokenOptions are the settings of a new token.
type TokenOptions struct {
	Uses    int           // default 1
	TTL     time.Duration // 0: never expires
	Names   string        // glob; default *
	Approve bool
	Comment string
}

// CreateToken adds a token to dataDir's tokens file: the flat-file form of
// Site.CreateToken.
func CreateToken(dataDir string, o TokenOptions, now time.Time) (string, Token, error) {
	return Site{DataDir: dataDir}.CreateToken(o, now)
}

// CreateToken adds a token and returns it: the only time it is ever shown.
func (s Site) CreateToken(o TokenOptions, now time.Time) (string, Token, error) {
	if o.Uses < 0 {
		return "", Token{}, fmt.Errorf("--uses %d: want 1 or more", o.Uses)
	}
	if o.Uses == 0 {
		o.Uses = 1
	}
	if o.TTL < 0 {
		return "", Token{}, fmt.Errorf("--ttl %s: negative", o.TTL)
	}
	if o.Names == "" {
		o.Names = "*"
	}
	if strings.ContainsAny(o.Names, " \t\n") {
		return "", Token{}, fmt.Errorf("--names %q: no spaces", o.Names)
	}
	if _, err := path.Match(o.Names, ""); err != nil {
		return "", Token{}, fmt.Errorf("--names %q: %v", o.Names, err)
	}
	if strings.ContainsAny(o.Comment, "\n\r") {
		return "", Token{}, errors.New("--comment: one line only")
	}
	tok, t, err := newToken(now)
	if err != nil {
		return "", Token{}, err
	}
	t.Uses, t.Names, t.Approve, t.Comment = o.Uses, o.Names, o.Approve, o.Comment
	if o.TTL > 0 {
		t.Expires = now.Add(o.TTL).UTC().Truncate(time.Second)
	}
	err = updateTokens(s.docs(), func(set *tokenSet) (bool, error) {
		set.tokens = append(set.tokens, t)
		return true, nil
	})
	return tok, t, err
}

// ListTokens returns the tokens of dataDir: the flat-file form of
// Site.ListTokens.
func ListTokens(dataDir string) ([]Token, error) { return Site{DataDir: dataDir}.ListTokens() }

// ListTokens returns the tokens.
func (s Site) ListTokens() ([]Token, error) {
	set, err := readTokens(s.docs())
	if err != nil {
		return nil, err
	}
	return set.tokens, nil
}

// RemoveToken deletes a token of dataDir: the flat-file form of
// Site.RemoveToken.
func RemoveToken(dataDir, id string) error { return Site{DataDir: dataDir}.RemoveToken(id) }

// RemoveToken deletes the token with id (or the token whose ID a full token
// string carries).
func (s Site) RemoveToken(id string) error {
	if tid, _, err := splitToken(id); err == nil {
		id = tid
	}
	if err := validTokenID(id); err != nil {
		return err
	}
	d := s.docs()
	return updateTokens(d, func(set *tokenSet) (bool, error) {
		for i := range set.tokens {
			if set.tokens[i].ID == id {
				set.tokens = slices.Delete(set.tokens, i, i+1)
				return true, nil
			}
		}
		return false, fmt.Errorf("no token %s in %s", id, d.Where(TokensFile))
	})
}

// lookupToken finds the presented token in s and checks its secret in
// constant time (hash, then compare) and that it admits name.
func (s *tokenSet) lookupToken(tok, name string, now time.Time) (*Token, error) {
	id, hash, err := splitToken(tok)
	if err != nil {
		return nil, err
	}
	t := s.find(id)
	if t == nil || subtle.ConstantTimeCompare(t.Hash[:], hash[:]) != 1 {
		return nil, ErrTokenUnknown
	}
	if err := t.check(name, now); err != nil {
		return nil, err
	}
	return t, nil
}
