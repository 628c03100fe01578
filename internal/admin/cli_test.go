package admin_test

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"paradigm/internal/admin"
	"paradigm/internal/relay"
)

func TestListLiveThenFiles(t *testing.T) {
	f := newFixture(t, []string{"p1"}, nil)
	f.startNode("p1", "ssh="+echoService(t))
	f.waitOnline("p1", true)
	rows, running, err := admin.List(context.Background(), f.cfg.DataDir, "")
	if err != nil || !running || len(rows) != 1 || !rows[0].Online || rows[0].Remote == "" || rows[0].ServicePort == 0 {
		t.Fatalf("List with the relay running: got %+v running=%v err=%v", rows, running, err)
	}
	var b strings.Builder
	if err := admin.WriteSSHConfig(&b, rows, "ops@relay.example.com:2222"); err != nil {
		t.Fatal(err)
	}
	want := admin.SSHConfigBegin + "\nHost p1\n    HostName 127.0.0.1\n    Port " + strconv.Itoa(int(rows[0].Portalias)) +
		"\n    HostKeyAlias p1\n    ProxyJump ops@relay.example.com:2222\n" + admin.SSHConfigEnd + "\n"
	if b.String() != want {
		t.Fatalf("ssh-config: got\n%s\nwant\n%s", b.String(), want)
	}
	f.stop()
	rows, running, err = admin.List(context.Background(), f.cfg.DataDir, "")
	if err != nil || running || len(rows) != 1 || rows[0].Online {
		t.Fatalf("List with the relay stopped: got %+v running=%v err=%v, want p1 offline from the files", rows, running, err)
	}
}

func TestSSHConfigRefusesInjection(t *testing.T) {
	rows := []relay.Row{{Playnode: "p1", Service: "ssh", Portalias: 20001}, {Playnode: "p2", Service: "web", Portalias: 20002}}
	for _, pj := range []string{"a b", "host\nProxyCommand sh", `"x"`, "a#b"} {
		if err := admin.WriteSSHConfig(&strings.Builder{}, rows, pj); err == nil {
			t.Errorf("--proxy-jump %q: accepted", pj)
		}
	}
	var b strings.Builder
	admin.WriteSSHConfig(&b, rows, "")
	if strings.Contains(b.String(), "p2") || strings.Contains(b.String(), "ProxyJump") {
		t.Errorf("got\n%s\nwant only p1 (the playnode with an ssh service), no ProxyJump", b.String())
	}
}
