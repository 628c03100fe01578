package admin_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"paradigm/internal/admin"
	"paradigm/internal/relay"
)

func TestPlaynodesAPI(t *testing.T) {
	f := newFixture(t, []string{"kiosk-1", "signage-1", "signage-2"}, nil)
	echo := echoService(t)
	f.startNode("signage-1", "ssh="+echo, "web="+echo)
	f.startNode("kiosk-1", "web="+echo)
	stop2 := f.startNode("signage-2", "web="+echo)
	f.waitOnline("signage-1", true)
	f.waitOnline("kiosk-1", true)
	f.waitOnline("signage-2", true)
	stop2()
	f.waitOnline("signage-2", false)

	names := func(path string) string {
		t.Helper()
		var l admin.PlaynodeList
		f.getJSON(path, &l)
		var out []string
		for _, p := range l.Playnodes {
			out = append(out, p.Name)
		}
		return strings.Join(out, ",")
	}
	for _, tt := range []struct{ query, want string }{
		{"", "kiosk-1,signage-1,signage-2"},
		{"?prefix=signage-", "signage-1,signage-2"},
		{"?online=true", "kiosk-1,signage-1"},
		{"?online=false", "signage-2"},
		{"?service=ssh", "signage-1"},
		{"?prefix=signage&online=1&service=web", "signage-1"},
		{"?prefix=nobody", ""},
	} {
		if got := names("/api/v1/playnodes" + tt.query); got != tt.want {
			t.Errorf("GET /api/v1/playnodes%s: got %q, want %q", tt.query, got, tt.want)
		}
	}

	var p relay.PlaynodeState
	f.getJSON("/api/v1/playnodes/signage-1", &p)
	if !p.Online || p.Transport != "ssh" || p.Fingerprint == "" || p.ClientVersion == "" || p.Connected.IsZero() || len(p.Services) != 2 {
		t.Errorf("GET /api/v1/playnodes/signage-1: got %+v", p)
	}
	if s := p.Services[0]; s.Name != "ssh" || s.Portalias == 0 || s.ServicePort == 0 || s.State != relay.StateOnline {
		t.Errorf("service ssh: got %+v", s)
	}

	var pa []admin.Portalias
	f.getJSON("/api/v1/portaliases", &pa)
	if len(pa) != 4 {
		t.Fatalf("GET /api/v1/portaliases: got %d, want 4: %+v", len(pa), pa)
	}
	for _, a := range pa {
		wantOnline := a.Playnode != "signage-2"
		if a.Online != wantOnline || a.Address != fmt.Sprintf("127.0.0.1:%d", a.Portalias) {
			t.Errorf("portalias %+v: want online %v at 127.0.0.1:%d", a, wantOnline, a.Portalias)
		}
	}

	for _, tt := range []struct {
		path     string
		code     int
		contains string
	}{
		{"/api/v1/playnodes/nobody", 404, "unknown playnode nobody"},
		{"/api/v1/playnodes?online=maybe", 400, `online: "maybe" is not true or false`},
		{"/api/v1/playnodes?colour=red", 400, `unknown query parameter "colour"`},
		{"/api/v1/playnodes?prefix=a&prefix=b", 400, "prefix given 2 times"},
		{"/api/v1/playnodes?service=no%20space", 400, "service"},
		{"/api/v1/nothing", 404, "no such endpoint"},
	} {
		code, b := f.do("GET", tt.path, "", "")
		wantError(t, "GET "+tt.path, code, b, tt.code, tt.contains)
	}

	code, b := f.do("POST", "/api/v1/playnodes", f.token, "")
	wantError(t, "POST /api/v1/playnodes", code, b, http.StatusMethodNotAllowed, "method not allowed (GET)")
	code, b = f.do("GET", "/api/v1/playnodes/signage-1/disconnect", "", "")
	wantError(t, "GET .../disconnect", code, b, http.StatusMethodNotAllowed, "(POST)")

	code, b = f.do("GET", "/healthz", "", "")
	if code != 200 {
		t.Errorf("/healthz: got %d %s", code, b)
	}
	var rd admin.Readiness
	f.getJSON("/readyz", &rd)
	if !rd.Ready {
		t.Errorf("/readyz: got %+v, want ready", rd)
	}
}

func TestAuth(t *testing.T) {
	f := newFixture(t, []string{"p1"}, nil)
	for _, tt := range []struct {
		name, method, path, token, body string
		header                          []string
		code                            int
	}{
		{"loopback read without token", "GET", "/api/v1/playnodes", "", "", nil, 200},
		{"forwarded read without token", "GET", "/api/v1/playnodes", "", "", []string{"X-Forwarded-For", "203.0.113.9"}, 401},
		{"forwarded read with token", "GET", "/api/v1/playnodes", f.token, "", []string{"X-Forwarded-For", "203.0.113.9"}, 200},
		{"forwarded read with a wrong token", "GET", "/api/v1/playnodes", "wrong-token-0123456789", "", []string{"Forwarded", "for=203.0.113.9"}, 401},
		{"forwarded metrics without token", "GET", "/metrics", "", "", []string{"X-Forwarded-For", "203.0.113.9"}, 401},
		{"loopback write without token", "POST", "/api/v1/playnodes/p1/disconnect", "", "", nil, 401},
		{"loopback write with a wrong token", "DELETE", "/api/v1/playnodes/p1/portaliases", "wrong-token-0123456789", "", nil, 401},
		{"write with token, playnode never seen", "POST", "/api/v1/playnodes/p1/disconnect", f.token, "", nil, 404},
		{"loopback read under another host name (DNS rebinding)", "GET", "/api/v1/playnodes", "", "", []string{"Host", "evil.example:4480"}, 401},
		{"loopback read as localhost", "GET", "/api/v1/playnodes", "", "", []string{"Host", "localhost:4480"}, 200},
		{"health without token, forwarded", "GET", "/healthz", "", "", []string{"X-Forwarded-For", "203.0.113.9"}, 200},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, b := f.do(tt.method, tt.path, tt.token, tt.body, tt.header...)
			if code != tt.code {
				t.Fatalf("got %d %s, want %d", code, b, tt.code)
			}
			if code >= 400 {
				var e struct{ Error string }
				if err := json.Unmarshal(b, &e); err != nil || e.Error == "" {
					t.Fatalf("error body %q is not {\"error\": ...}", b)
				}
			}
		})
	}
}

func TestAuthWithoutTokenFile(t *testing.T) {
	f := newFixture(t, []string{"p1"}, func(c *admin.Config) { c.TokenFile = "" })
	code, b := f.do("POST", "/api/v1/playnodes/p1/disconnect", "", "")
	wantError(t, "write without a token file", code, b, http.StatusForbidden, "--admin-token-file")
}

func TestNonLoopbackNeedsToken(t *testing.T) {
	r, err := relay.New(relay.Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	_, err = admin.New(admin.Config{Relay: r, Listen: "0.0.0.0:0"})
	if err == nil || !strings.Contains(err.Error(), "--admin-token-file") {
		t.Fatalf("non-loopback admin without a token file: got %v, want an error naming --admin-token-file", err)
	}
}

func TestWriteActions(t *testing.T) {
	f := newFixture(t, []string{"p1"}, nil)
	echo := echoService(t)
	f.startNode("p1", "web="+echo)
	before := f.waitOnline("p1", true)

	_, sub := f.relay.Subscribe(64)
	defer sub.Close()
	code, b := f.do("POST", "/api/v1/playnodes/p1/disconnect", f.token, "")
	if code != 200 {
		t.Fatalf("disconnect: got %d %s", code, b)
	}
	for e := range sub.C {
		if e.Kind == relay.EventDown && e.Playnode == "p1" {
			if e.Reason != relay.ReasonDisconnected {
				t.Fatalf("down reason: got %q, want %q", e.Reason, relay.ReasonDisconnected)
			}
			break
		}
	}
	after := f.waitOnline("p1", true) // the node comes back after its backoff
	if !after.Connected.After(before.Connected) {
		t.Errorf("connected since: got %v, want after %v", after.Connected, before.Connected)
	}

	low, high := f.relay.PortRange()
	port := high - 1
	code, b = f.do("PUT", "/api/v1/playnodes/p1/services/web/portalias", f.token, fmt.Sprintf(`{"portalias": %d}`, port))
	if code != 200 {
		t.Fatalf("alias set: got %d %s", code, b)
	}
	f.waitState("p1 web on its new portalias", func(s relay.Snapshot) bool {
		p, _ := s.Playnode("p1")
		return len(p.Services) == 1 && p.Services[0].Portalias == port && p.Services[0].State == relay.StateOnline
	})
	for _, tt := range []struct {
		method, path, body string
		code               int
		contains           string
	}{
		{"PUT", "/api/v1/playnodes/p1/services/web/portalias", fmt.Sprintf(`{"portalias": %d}`, low-1), 409, "outside the relay's --ports"},
		{"PUT", "/api/v1/playnodes/p1/services/web/portalias", `{"portalias": "x"}`, 400, "request body"},
		{"PUT", "/api/v1/playnodes/p1/services/web/portalias", `{"port": 1}`, 400, "unknown field"},
		{"PUT", "/api/v1/playnodes/p1/services/web/portalias", `{}`, 400, "portalias is missing"},
		{"PUT", "/api/v1/playnodes/p1/services/web/portalias", `{"portalias": 1, "pad": "` + strings.Repeat("x", admin.MaxBodyBytes) + `"}`, 413, "larger than"},
		{"PUT", "/api/v1/playnodes/bad%20name/services/web/portalias", fmt.Sprintf(`{"portalias": %d}`, port), 400, "playnode"},
		{"DELETE", "/api/v1/playnodes/p1/services/nope/portalias", "", 404, "no portalias for service nope"},
		{"POST", "/api/v1/playnodes/nobody/disconnect", "", 404, "unknown playnode nobody"},
	} {
		code, b := f.do(tt.method, tt.path, f.token, tt.body)
		wantError(t, tt.method+" "+tt.path, code, b, tt.code, tt.contains)
	}
	code, b = f.do("DELETE", "/api/v1/playnodes/p1/services/web/portalias", f.token, "")
	if code != 200 {
		t.Fatalf("alias rm: got %d %s", code, b)
	}
}

func TestOversizedHeaders(t *testing.T) {
	f := newFixture(t, nil, nil)
	req, _ := http.NewRequest("GET", f.url+"/api/v1/playnodes", nil)
	req.Header.Set("X-Padding", strings.Repeat("x", 64<<10))
	resp, err := http.DefaultClient.Do(req)
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("64 KiB of headers: got %d, want 431 or the connection closed", resp.StatusCode)
		}
	}
	// The server answered 431 and closed: the client may see the close
	// before the answer, while it was still sending.
	if code, _ := f.do("GET", "/healthz", "", ""); code != 200 {
		t.Fatalf("after oversized headers: /healthz got %d", code)
	}
}
