package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestLastSeenAfterRelayCrash: after a relay kill -9, ls shows the playnode
// offline with the last moment the relay heard from it, and a restarted
// relay keeps that time for a playnode that did not come back (it used to
// show the restart time).
func TestLastSeenAfterRelayCrash(t *testing.T) {
	t.Parallel()
	d := newDeployment(t)
	key := d.addPlaynode(t, playnode)
	r := d.serve(t, "ssh", "127.0.0.1:0")
	n := d.runNode(t, r, playnode, key, fmt.Sprintf("echo=%d", startEcho(t)))
	before := time.Now().Add(-time.Second) // ls rounds nothing, but clocks of two processes
	d.waitLs(t, playnode, "echo", true)
	// ls asks the live relay; what survives a kill is status.json, which
	// the relay writes within a second of a change: wait for it.
	waitUntil(t, "status.json to record the playnode online", func() bool {
		var doc struct {
			Playnodes map[string]struct {
				Online bool `json:"online"`
			} `json:"playnodes"`
		}
		b, err := os.ReadFile(filepath.Join(d.data, "status.json"))
		return err == nil && json.Unmarshal(b, &doc) == nil && doc.Playnodes[playnode].Online
	})
	r.stop(t, syscall.SIGKILL)
	killed := time.Now()
	n.stop(t, syscall.SIGTERM)

	row := d.waitLs(t, playnode, "echo", false)
	if row.LastSeen.Before(before) || row.LastSeen.After(killed) {
		t.Fatalf("after kill -9: last seen %v, want between the connection (%v) and the kill (%v)", row.LastSeen, before, killed)
	}
	d.serveOn(t, "ssh", r.addr, "") // returns once it logs "relay listening"
	restarted := time.Now()
	for range 3 { // ls reads what the restarted relay wrote
		got := d.waitLs(t, playnode, "echo", false)
		if !got.LastSeen.Equal(row.LastSeen) || got.State != "offline" {
			t.Fatalf("after the restart (%v): %+v, want offline and last seen %v as before", restarted, got, row.LastSeen)
		}
	}
}
