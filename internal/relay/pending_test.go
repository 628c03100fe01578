package relay

import (
	"bytes"
	"crypto/ed25519"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

func pendingSample(t testing.TB) []PendingNode {
	pub := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, 32)).Public()
	key, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return []PendingNode{
		{Playnode: "signage-3f9a1c2e", Token: "3f9a1c2e", From: "203.0.113.7", At: tokenT0, State: StatePending, key: key},
		{Playnode: "signage-77aa0b1c", Token: "revoked", From: "-", At: tokenT0, State: StateRejected, key: key},
	}
}

func TestPendingRoundTrip(t *testing.T) {
	data := marshalPending(pendingSample(t))
	ps, err := parsePending(data, "f")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(marshalPending(ps), data) {
		t.Fatalf("round trip differs:\n%s\n%s", data, marshalPending(ps))
	}
	for _, c := range []struct{ in, want string }{
		{`state="maybe",playnode="a" ` + strings.Fields(string(data[len(pendingHeader):]))[1] + " AAAA", ""},
		{"garbage", "f:1:"},
	} {
		if _, err := parsePending([]byte(c.in), "f"); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: got %v, want an error containing %q", c.in, err, c.want)
		}
	}
}

func FuzzParsePending(f *testing.F) {
	f.Add(marshalPending(pendingSample(f)))
	f.Add([]byte(`playnode="a",state="pending" ssh-ed25519 AAAA`))
	f.Fuzz(func(t *testing.T, in []byte) {
		ps, err := parsePending(in, "f")
		if err != nil {
			return
		}
		for _, p := range ps {
			if p.key == nil {
				t.Fatal("accepted a line without a key")
			}
		}
	})
}
