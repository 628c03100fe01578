package relay

import (
	"bytes"
	"crypto/ed25519"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"paradigm/internal/identity"
	"paradigm/internal/store/etcdstore"
	"paradigm/internal/store/etcdstore/etcdtest"
)

// TestSiteSameTextOnEither: the operator's functions write the same text
// through the flat files and through etcd, byte for byte: the format is
// the relay's, the store only keeps it.
func TestSiteSameTextOnEither(t *testing.T) {
	e := etcdtest.Start(t)
	sh, err := etcdstore.OpenShared(fmt.Sprintf("etcd://%s/same", e.Client), "", "", "")
	if err != nil {
		t.Fatal(err)
	}
	defer sh.Close()
	dir := t.TempDir()
	sites := map[string]Site{"files": {DataDir: dir}, "etcd": {DataDir: t.TempDir(), Docs: sh.Docs()}}
	keys := make([]ssh.PublicKey, 3)
	for i := range keys {
		k, err := ssh.NewPublicKey(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{byte(i + 1)}, 32)).Public())
		if err != nil {
			t.Fatal(err)
		}
		keys[i] = k
	}
	text := map[string][]byte{}
	for name, s := range sites {
		for i, k := range keys {
			if err := s.Authorize(fmt.Sprint("dev", i), k, ""); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
		}
		if _, err := s.Revoke("dev1"); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		ctx, cancel := docCtx()
		data, err := s.docs().Read(ctx, AuthorizedFile)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		text[name] = data
	}
	if !bytes.Equal(text["files"], text["etcd"]) {
		t.Errorf("authorized nodes differ:\nfiles:\n%s\netcd:\n%s", text["files"], text["etcd"])
	}
	for name, s := range sites {
		line := identity.PublicLine(keys[1], "re-keyed by hand")
		msg, err := s.AuthorizeNode("dev1", line)
		if err != nil || !strings.HasPrefix(msg, "authorized playnode dev1") {
			t.Errorf("%s: AuthorizeNode: %q, %v; want it authorized", name, msg, err)
		}
		msg, err = s.AuthorizeNode("dev1", line)
		if err != nil || !strings.Contains(msg, "already authorized") {
			t.Errorf("%s: AuthorizeNode again: %q, %v; want already authorized, no error", name, msg, err)
		}
	}
	want := authorizedHeader +
		`playnode="dev0" ` + identity.PublicLine(keys[0], "dev0") + "\n" +
		`playnode="dev2" ` + identity.PublicLine(keys[2], "dev2") + "\n" +
		`playnode="dev1" ` + identity.PublicLine(keys[1], "re-keyed by hand") + "\n"
	if onDisk, _ := os.ReadFile(filepath.Join(dir, AuthorizedFile)); string(onDisk) != want {
		t.Errorf("the flat file:\n%s\nwant:\n%s", onDisk, want)
	}
}
