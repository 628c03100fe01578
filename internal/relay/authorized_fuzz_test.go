package relay

import (
	"strings"
	"testing"

	"paradigm/internal/proto"
)

// FuzzParseAuthorized feeds the authorized-nodes parser arbitrary files: it
// must never panic, and what it accepts must be a one-to-one binding of
// valid playnode names to keys.
func FuzzParseAuthorized(f *testing.F) {
	const key1 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPWokUenIAu1/K1TvTFwuspivSJlRM9i2KfnKlM32wO7"
	const key2 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMkFkqoLFFwJgjAriAlC34l2MExfx2LFa+IlJYhb4yn"
	for _, s := range []string{
		"",
		"# comment\n\n",
		`playnode="signage-042" ` + key1 + " comment\n",
		`playnode="a" ` + key1 + "\n" + `playnode="b" ` + key2 + "\n",
		`playnode="a" ` + key1 + "\n" + `playnode="a" ` + key2 + "\n",
		`playnode="a" ` + key1 + "\n" + `playnode="b" ` + key1 + "\n",
		key1 + "\n",
		`command="sh",playnode="a" ` + key1 + "\n",
		`playnode=a ` + key1 + "\n",
		`playnode="../etc" ` + key1 + "\n",
		`playnode="" ` + key1 + "\n",
		`playnode="a" ssh-ed25519 AAAA` + "\n",
		strings.Repeat("x", 70000),
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		set, err := parseAuthorized(data, "authorized_nodes")
		if err != nil {
			if !strings.HasPrefix(err.Error(), "authorized_nodes") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		if len(set.byKey) != len(set.byName) {
			t.Fatalf("%d keys but %d names", len(set.byKey), len(set.byName))
		}
		for name, n := range set.byName {
			if err := proto.ValidateName("playnode", name); err != nil {
				t.Fatalf("accepted invalid name %q: %v", name, err)
			}
			if got, ok := set.lookup(n.key); !ok || got != name {
				t.Fatalf("lookup of %q's key: got %q %v", name, got, ok)
			}
		}
	})
}
