package relay_test

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"paradigm/internal/identity"
	"paradigm/internal/mux"
	"paradigm/internal/proto"
	"paradigm/internal/relay"
)

// enrollRaw dials r as an enrolling node with a fresh key and sends msgs on
// the control stream, returning the relay's answer.
func enrollRaw(t *testing.T, r *testRelay, keyFile, user string, msgs ...proto.Message) proto.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	sess := rawDial(ctx, t, r, keyFile, user)
	defer sess.Close()
	ctrl, err := sess.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if proto.WriteMessage(ctrl, m) != nil {
			break // refused at once; the answer is buffered
		}
	}
	m, err := proto.ReadMessage(ctrl)
	if err != nil {
		t.Fatalf("read answer: %v", err)
	}
	return m
}

func newKey(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name+".key")
	if _, err := identity.GenerateKey(p, name); err != nil {
		t.Fatal(err)
	}
	return p
}

var enrollHello = func(name string) *proto.Hello {
	return &proto.Hello{Version: proto.Version, Playnode: name, Services: []proto.Service{{Name: "ssh", Port: 22}}}
}

// TestEnrollProtocol: the relay side of Enroll over each transport: a good
// token binds the key and publishes EventEnrolled; a wrong token, a taken
// name, a missing Enroll are refused with their codes, each an event; a
// known key's Enroll is ignored.
func TestEnrollProtocol(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr string) {
		cfg := relayConfig(t)
		knownKey, _ := authorize(t, cfg, "dev1")
		tok, _, err := relay.CreateToken(cfg.DataDir, relay.TokenOptions{Uses: 1}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		r := startRelay(t, cfg, tr)
		_, sub := r.Subscribe(64)
		defer sub.Close()
		next := func(kind relay.EventKind) relay.Event {
			t.Helper()
			timeout := time.After(waitTimeout)
			for {
				select {
				case e := <-sub.C:
					if e.Kind == kind {
						return e
					}
				case <-timeout:
					t.Fatalf("no %s event", kind)
				}
			}
		}
		enroll := func(name, token string) *proto.Enroll {
			return &proto.Enroll{Version: proto.Version, Playnode: name, Token: token}
		}

		// Without an Enroll first: refused.
		m := enrollRaw(t, r, newKey(t, "a"), "a"+proto.EnrollUserSuffix, enrollHello("a"))
		wantRefuse(t, m, proto.RefuseProtocol)
		if e := next(relay.EventEnrollRefused); e.Reason != string(proto.RefuseProtocol) {
			t.Errorf("event %+v, want reason protocol", e)
		}

		// A wrong token.
		m = enrollRaw(t, r, newKey(t, "b"), "b"+proto.EnrollUserSuffix, enroll("b", tok+"x"), enrollHello("b"))
		wantRefuse(t, m, proto.RefuseToken)
		if e := next(relay.EventEnrollRefused); e.Reason != string(proto.RefuseToken) || e.Fingerprint == "" {
			t.Errorf("event %+v, want reason token and the key's fingerprint", e)
		}

		// A taken name costs no use: the good token still enrolls next.
		m = enrollRaw(t, r, newKey(t, "c"), "c"+proto.EnrollUserSuffix, enroll("dev1", tok), enrollHello("dev1"))
		wantRefuse(t, m, proto.RefuseNameTaken)

		m = enrollRaw(t, r, newKey(t, "d"), "d"+proto.EnrollUserSuffix, enroll("dev2", tok), enrollHello("dev2"))
		if _, ok := m.(*proto.Welcome); !ok {
			t.Fatalf("enrollment answered %#v, want a welcome", m)
		}
		if e := next(relay.EventEnrolled); e.Playnode != "dev2" {
			t.Errorf("event %+v, want dev2 enrolled", e)
		}

		// Used up now.
		m = enrollRaw(t, r, newKey(t, "e"), "e"+proto.EnrollUserSuffix, enroll("dev3", tok), enrollHello("dev3"))
		wantRefuse(t, m, proto.RefuseToken)

		// A known key's Enroll is ignored, whatever its token.
		m = enrollRaw(t, r, knownKey, "dev1"+proto.EnrollUserSuffix, enroll("dev1", "pdt_00000000_x"), enrollHello("dev1"))
		if _, ok := m.(*proto.Welcome); !ok {
			t.Fatalf("known key with an enroll answered %#v, want a welcome", m)
		}
	})
}

// TestEnrollRateLimited attacks the enrollment rate: from one address, past
// EnrollPerMinute attempts, an unknown key is refused during
// authentication, before it can present a token; a known key is not
// affected.
func TestEnrollRateLimited(t *testing.T) {
	cfg := relayConfig(t)
	cfg.EnrollPerMinute = 3
	knownKey, _ := authorize(t, cfg, "dev1")
	r := startRelay(t, cfg, "ssh")
	dial := func(keyFile, user string) error {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		key, err := identity.LoadKey(keyFile)
		if err != nil {
			t.Fatal(err)
		}
		conn, err := net.Dial("tcp", r.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		sess, err := mux.DialSSH(ctx, conn, &mux.SSHClientConfig{Key: key, User: user, HostKeyCallback: ssh.FixedHostKey(r.HostKey())})
		if err == nil {
			sess.Close()
		}
		return err
	}
	for i := range 20 {
		err := dial(newKey(t, "x"), "x"+proto.EnrollUserSuffix)
		switch {
		case i < 3 && err != nil:
			t.Fatalf("attempt %d refused: %v, want it let through to enroll", i+1, err)
		case i >= 3 && !errors.Is(err, mux.ErrKeyRefused):
			t.Fatalf("attempt %d: got %v, want the key refused", i+1, err)
		}
	}
	if err := dial(knownKey, "dev1"+proto.EnrollUserSuffix); err != nil {
		t.Fatalf("a known key from the same address: %v", err)
	}
}

// TestPendingListBounded fills the pending list with enrollments that need
// approval: past --max-pending they are refused, and the token keeps the
// uses they would have taken.
func TestPendingListBounded(t *testing.T) {
	cfg := relayConfig(t)
	cfg.MaxPending = 2
	cfg.EnrollPerMinute = 100
	tok, _, err := relay.CreateToken(cfg.DataDir, relay.TokenOptions{Uses: 10, Approve: true}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	r := startRelay(t, cfg, "ssh")
	for i, name := range []string{"p1", "p2", "p3"} {
		m := enrollRaw(t, r, newKey(t, name), name+proto.EnrollUserSuffix,
			&proto.Enroll{Version: proto.Version, Playnode: name, Token: tok}, enrollHello(name))
		ref, ok := m.(*proto.Refuse)
		switch {
		case i < 2 && (!ok || ref.Code != proto.RefusePending):
			t.Errorf("enrollment %d: %#v, want it held as pending", i+1, m)
		case i == 2 && (!ok || ref.Code != proto.RefuseRate || !strings.Contains(ref.Reason, "pending list is full")):
			t.Errorf("enrollment past the bound: %#v, want a refusal saying the pending list is full", m)
		}
	}
}
