package relay_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"paradigm/internal/identity"
	"paradigm/internal/mux"
	"paradigm/internal/proto"
	"paradigm/internal/relay"
	"paradigm/internal/store"
	"paradigm/internal/store/etcdstore"
	"paradigm/internal/store/etcdstore/etcdtest"
)

// sharedDocs opens the documents under prefix in e over a connection of
// its own (one relay, or the operator's command), closed at cleanup.
func sharedDocs(t *testing.T, e *etcdtest.Server, prefix string) store.Docs {
	t.Helper()
	sh, err := etcdstore.OpenShared(fmt.Sprintf("etcd://%s/%s", e.Client, prefix), "", "", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sh.Close() })
	return sh.Docs()
}

// sharedRelays starts two relays, each with its own data folder and its
// own etcd connection, sharing the authorization documents under prefix.
// Their portaliases stay in their own flat files: this is about
// authorization only.
func sharedRelays(t *testing.T, e *etcdtest.Server, prefix string) (a, b *testRelay) {
	t.Helper()
	start := func() *testRelay {
		cfg := relayConfig(t)
		cfg.Docs = sharedDocs(t, e, prefix)
		cfg.EnrollPerMinute = 100
		return startRelay(t, cfg, "ssh")
	}
	return start(), start()
}

// TestSharedAuthorization: two relays share etcd. A playnode authorized
// with the operator's function against etcd (while both relays run) is
// admitted by the other relay; revoked the same way, its session on that
// relay ends at once (its down event says revoked), and its key is marked
// rejected in the shared pending list.
func TestSharedAuthorization(t *testing.T) {
	e := etcdtest.Start(t)
	a, b := sharedRelays(t, e, "auth")
	site := relay.Site{DataDir: t.TempDir(), Docs: sharedDocs(t, e, "auth")}

	keyFile := filepath.Join(t.TempDir(), "dev1.key")
	key, err := identity.GenerateKey(keyFile, "dev1")
	if err != nil {
		t.Fatal(err)
	}
	if err := site.Authorize("dev1", key.PublicKey(), ""); err != nil {
		t.Fatal(err)
	}
	startNode(t, b.nodeConfig(t, "dev1", keyFile, "svc="+replyServer(t, "x")))
	waitOnline(t, b, "dev1", 1)
	for name, r := range map[string]*testRelay{"A": a, "B": b} {
		rows, err := r.Site().Nodes()
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) != 1 || rows[0].Playnode != "dev1" {
			t.Errorf("relay %s's Nodes: %+v, want dev1 only", name, rows)
		}
	}

	_, sub := b.Subscribe(64)
	defer sub.Close()
	msg, err := site.Revoke("dev1")
	if err != nil {
		t.Fatal(err)
	}
	revoked := time.Now()
	if d := nextEvent(t, sub, "dev1's down on relay B", kind(relay.EventDown, "dev1")); d.Reason != relay.ReasonRevoked {
		t.Errorf("down after the revocation: reason %q, want %q", d.Reason, relay.ReasonRevoked)
	}
	t.Logf("%s; relay B's down event came %v after", msg, time.Since(revoked)) // a figure, not a threshold
	ps, err := a.Site().ListPending()
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 1 || ps[0].Playnode != "dev1" || ps[0].State != relay.StateRejected {
		t.Errorf("pending list after the revocation, read through relay A: %+v, want dev1 rejected", ps)
	}
	if _, err := site.Revoke("dev1"); err == nil {
		t.Error("revoking dev1 twice: no error")
	}
}

// TestSharedEnrollment: a token created against etcd enrolls through
// either relay and its uses are shared: two uses, one through each relay,
// then refused on both. A token needing approval holds the enrollment in
// the shared pending list; approved through one relay's Site (as the
// admin API does), the key is admitted by the other.
func TestSharedEnrollment(t *testing.T) {
	e := etcdtest.Start(t)
	a, b := sharedRelays(t, e, "enroll")
	site := relay.Site{DataDir: t.TempDir(), Docs: sharedDocs(t, e, "enroll")}
	enroll := func(r *testRelay, keyFile, name, token string) proto.Message {
		t.Helper()
		return enrollRaw(t, r, keyFile, name+proto.EnrollUserSuffix,
			&proto.Enroll{Version: proto.Version, Playnode: name, Token: token}, enrollHello(name))
	}

	tok, tk, err := site.CreateToken(relay.TokenOptions{Uses: 2}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	usesLeft := func() int {
		t.Helper()
		ts, err := site.ListTokens()
		if err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(ts, func(x relay.Token) bool { return x.ID == tk.ID })
		if i < 0 {
			t.Fatalf("token %s is gone from %v", tk.ID, ts)
		}
		return ts[i].Uses
	}
	if m := enroll(b, newKey(t, "e1"), "e1", tok); !isWelcome(m) {
		t.Fatalf("enrollment of e1 through relay B: %#v, want a welcome", m)
	}
	if n := usesLeft(); n != 1 {
		t.Errorf("after one enrollment through B: %d uses left, want 1", n)
	}
	if m := enroll(a, newKey(t, "e2"), "e2", tok); !isWelcome(m) {
		t.Fatalf("enrollment of e2 through relay A: %#v, want a welcome", m)
	}
	if n := usesLeft(); n != 0 {
		t.Errorf("after two enrollments: %d uses left, want 0", n)
	}
	for name, r := range map[string]*testRelay{"A": a, "B": b} {
		wantRefuse(t, enroll(r, newKey(t, "e3"), "e3", tok), proto.RefuseToken)
		// A name enrolled through the other relay is taken here too.
		tok2, _, err := site.CreateToken(relay.TokenOptions{}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if m := enroll(r, newKey(t, "x"), map[string]string{"A": "e1", "B": "e2"}[name], tok2); !isRefusal(m, proto.RefuseNameTaken) {
			t.Errorf("relay %s, a name the other relay enrolled: %#v, want name taken", name, m)
		}
	}
	rows, err := site.Nodes()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[0].Playnode != "e1" || rows[1].Playnode != "e2" {
		t.Errorf("Nodes after the enrollments: %+v, want e1 and e2", rows)
	}

	// Approval, across relays.
	held, _, err := site.CreateToken(relay.TokenOptions{Approve: true}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	pKey := newKey(t, "p1")
	wantRefuse(t, enroll(a, pKey, "p1", held), proto.RefusePending)
	ps, err := b.Site().ListPending()
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 1 || ps[0].Playnode != "p1" || ps[0].State != relay.StatePending {
		t.Fatalf("pending list through relay B: %+v, want p1 pending", ps)
	}
	if _, err := b.Site().ApprovePending("p1"); err != nil {
		t.Fatal(err)
	}
	startNode(t, a.nodeConfig(t, "p1", pKey, "svc="+replyServer(t, "x")))
	waitOnline(t, a, "p1", 1)
}

func isWelcome(m proto.Message) bool {
	_, ok := m.(*proto.Welcome)
	return ok
}

func isRefusal(m proto.Message, code proto.RefuseCode) bool {
	r, ok := m.(*proto.Refuse)
	return ok && r.Code == code
}

// TestSharedBadDocument: a malformed authorized-nodes document in etcd (a
// bad etcdctl put) stops relay.New with an error naming the key and the
// line, as a bad flat file names file:line; a running relay keeps its
// previous set when the document goes bad, and its playnodes stay.
func TestSharedBadDocument(t *testing.T) {
	e := etcdtest.Start(t)
	docs := sharedDocs(t, e, "bad")
	put := func(text string) {
		t.Helper()
		if err := docs.Update(t.Context(), []string{relay.AuthorizedFile}, func(map[string][]byte) (map[string][]byte, error) {
			return map[string][]byte{relay.AuthorizedFile: []byte(text)}, nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	put("# a comment\nplaynode=\"a\" ssh-ed25519 AAAAnotakey\n")
	cfg := relayConfig(t)
	cfg.Docs = docs
	_, err := relay.New(cfg)
	if want := "etcd key /bad/docs/authorized_nodes:2:"; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("relay.New over a bad document: got %v, want an error containing %q", err, want)
	}

	put("")
	a, _ := sharedRelays(t, e, "bad")
	site := relay.Site{Docs: docs}
	keyFile := filepath.Join(t.TempDir(), "dev1.key")
	key, err := identity.GenerateKey(keyFile, "dev1")
	if err != nil {
		t.Fatal(err)
	}
	if err := site.Authorize("dev1", key.PublicKey(), ""); err != nil {
		t.Fatal(err)
	}
	startNode(t, a.nodeConfig(t, "dev1", keyFile, "svc="+replyServer(t, "x")))
	waitOnline(t, a, "dev1", 1)
	put("garbage\n")
	waitFor(t, "relay A to log the bad document", func() bool { return a.log.Contains("etcd key /bad/docs/authorized_nodes:1:") })
	if _, ok := a.Online("dev1"); !ok {
		t.Error("dev1 went offline when the document went bad")
	}
	if _, err := site.Nodes(); err == nil || !strings.Contains(err.Error(), "etcd key /bad/docs/authorized_nodes:1:") {
		t.Errorf("Nodes over the bad document: got %v, want an error naming the key and line", err)
	}
}

// enrollOver enrolls a fresh key as name through r over SSH and returns
// the relay's answer; it reports failures as errors, so that it can run
// in goroutines of its own.
func enrollOver(r *testRelay, keyFile, name, token string) (proto.Message, error) {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	key, err := identity.LoadKey(keyFile)
	if err != nil {
		return nil, err
	}
	conn, err := net.Dial("tcp", r.Addr().String())
	if err != nil {
		return nil, err
	}
	sess, err := mux.DialSSH(ctx, conn, &mux.SSHClientConfig{Key: key, User: name + proto.EnrollUserSuffix, HostKeyCallback: ssh.FixedHostKey(r.HostKey())})
	if err != nil {
		return nil, fmt.Errorf("dial relay: %w", err)
	}
	defer sess.Close()
	ctrl, err := sess.OpenStream(ctx)
	if err != nil {
		return nil, err
	}
	if err := proto.WriteMessage(ctrl, &proto.Enroll{Version: proto.Version, Playnode: name, Token: token}); err != nil {
		return nil, err
	}
	proto.WriteMessage(ctrl, enrollHello(name)) // refused at once: the answer is buffered
	return proto.ReadMessage(ctrl)
}

// TestSharedTokenRace attacks the shared use count: a token with one use
// is presented through both relays at the same moment, several times;
// each time exactly one enrollment is admitted and the other refused,
// and the token has no use left.
func TestSharedTokenRace(t *testing.T) {
	e := etcdtest.Start(t)
	a, b := sharedRelays(t, e, "race")
	site := relay.Site{DataDir: t.TempDir(), Docs: sharedDocs(t, e, "race")}
	for round := range 5 {
		tok, _, err := site.CreateToken(relay.TokenOptions{Uses: 1}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		relays := []*testRelay{a, b}
		answers := make([]proto.Message, len(relays))
		errs := make([]error, len(relays))
		keys := make([]string, len(relays))
		for i := range relays {
			keys[i] = newKey(t, fmt.Sprint("k", i))
		}
		var wg sync.WaitGroup
		for i, r := range relays {
			wg.Go(func() { answers[i], errs[i] = enrollOver(r, keys[i], fmt.Sprintf("r%d-%d", round, i), tok) })
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		welcomes := 0
		for i, m := range answers {
			switch {
			case isWelcome(m):
				welcomes++
			case !isRefusal(m, proto.RefuseToken):
				t.Errorf("round %d, relay %d: %#v, want a welcome or a token refusal", round, i, m)
			}
		}
		if welcomes != 1 {
			t.Errorf("round %d: %d enrollments admitted with a one-use token, want 1", round, welcomes)
		}
	}
	rows, err := site.Nodes()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 5 {
		t.Errorf("after 5 rounds: %d playnodes authorized, want 5: %+v", len(rows), rows)
	}
	ts, err := site.ListTokens()
	if err != nil {
		t.Fatal(err)
	}
	for _, tk := range ts {
		if tk.Uses != 0 {
			t.Errorf("token %s has %d uses left, want 0", tk.ID, tk.Uses)
		}
	}
}
