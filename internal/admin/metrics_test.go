package admin_test

import (
	"fmt"
	"paradigm/internal/relay"
	"strings"
	"testing"
)

func TestMetrics(t *testing.T) {
	f := newFixture(t, []string{"p1", "p2"}, nil)
	echo := echoService(t)
	f.startNode("p1", "web="+echo)
	stop2 := f.startNode("p2", "ssh="+echo)
	f.waitOnline("p1", true)
	f.waitOnline("p2", true)

	scrape := func() string {
		t.Helper()
		code, b := f.do("GET", "/metrics", "", "")
		if code != 200 {
			t.Fatalf("/metrics: got %d", code)
		}
		return string(b)
	}
	m := scrape()
	for _, want := range []string{
		"paradigm_relay_handshakes_total ",
		"paradigm_relay_playnodes_online 2",
		`paradigm_playnode_up{playnode="p1"} 1`,
		`paradigm_playnode_up{playnode="p2"} 1`,
		`paradigm_service_up{playnode="p2",service="ssh"} 1`,
		`paradigm_service_open_connections{playnode="p1",service="web"} 0`,
		`paradigm_service_bytes_to_playnode_total{playnode="p1",service="web"} 0`,
		`paradigm_playnode_last_seen_timestamp_seconds{playnode="p1"}`,
		`paradigm_playnode_connected_since_timestamp_seconds{playnode="p1"}`,
		"go_goroutines",
	} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics has no %q", want)
		}
	}

	// p2 goes offline: its series stay, down; once its portalias is removed
	// it is gone from the fleet, and so are its series.
	stop2()
	f.waitOnline("p2", false)
	if m := scrape(); !strings.Contains(m, `paradigm_playnode_up{playnode="p2"} 0`) {
		t.Errorf("offline p2: want paradigm_playnode_up 0 in\n%s", m)
	}
	code, b := f.do("DELETE", "/api/v1/playnodes/p2/portaliases", f.token, "")
	if code != 200 {
		t.Fatalf("alias rm: %d %s", code, b)
	}
	f.waitState("p2 without portalias", func(s relay.Snapshot) bool {
		p, _ := s.Playnode("p2")
		return len(p.Services) == 0
	})
	m = scrape()
	if strings.Contains(m, `playnode="p2"`) {
		t.Errorf("removed p2 still has series:\n%s", grep(m, "p2"))
	}
	if !strings.Contains(m, `paradigm_playnode_up{playnode="p1"} 1`) {
		t.Errorf("p1 lost its series")
	}
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return fmt.Sprint(strings.Join(out, "\n"))
}
