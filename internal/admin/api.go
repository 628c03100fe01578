package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"paradigm/internal/proto"
	"paradigm/internal/relay"
	"paradigm/internal/store"
)

// routes is the endpoint's whole surface.
func (s *Server) routes() http.Handler {
	m := http.NewServeMux()
	read := func(pattern string, h http.HandlerFunc) { m.Handle(pattern, s.auth(false, h)) }
	write := func(pattern string, h http.HandlerFunc) { m.Handle(pattern, s.auth(true, h)) }
	read("GET /api/v1/playnodes", s.listPlaynodes)
	read("GET /api/v1/playnodes/{name}", s.getPlaynode)
	read("GET /api/v1/portaliases", s.listPortaliases)
	read("GET /api/v1/events", s.events)
	write("POST /api/v1/playnodes/{name}/disconnect", s.disconnect)
	read("GET /api/v1/pending", s.listPending)
	write("POST /api/v1/pending/{name}/approve", s.decidePending(relay.Site.ApprovePending))
	write("POST /api/v1/pending/{name}/reject", s.decidePending(relay.Site.RejectPending))
	write("PUT /api/v1/playnodes/{name}/services/{service}/portalias", s.aliasSet)
	write("DELETE /api/v1/playnodes/{name}/services/{service}/portalias", s.aliasRemove)
	write("DELETE /api/v1/playnodes/{name}/portaliases", s.aliasRemove)
	read("GET /metrics", s.metrics().ServeHTTP)
	m.HandleFunc("GET /healthz", s.healthz)
	m.HandleFunc("GET /readyz", s.readyz)
	read("GET /{$}", s.statusPage)
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		// A path that another method serves is a 405, naming the methods.
		var allowed []string
		for _, method := range []string{"GET", "POST", "PUT", "DELETE"} {
			probe := r.Clone(r.Context())
			probe.Method = method
			if _, pattern := m.Handler(probe); pattern != "/" && pattern != "" {
				allowed = append(allowed, method)
			}
		}
		if len(allowed) > 0 {
			w.Header().Set("Allow", strings.Join(allowed, ", "))
			writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("%s %s: method not allowed (%s)", r.Method, r.URL.Path, strings.Join(allowed, ", ")))
			return
		}
		writeError(w, http.StatusNotFound, fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path))
	})
	return m
}

// auth lets a request through when it may do what h does: reads from
// loopback need nothing, everything else a bearer token.
func (s *Server) auth(write bool, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.hasToken(r) {
			switch {
			case write && len(s.tokens) == 0:
				writeError(w, http.StatusForbidden, "write actions need a bearer token: start the relay with --admin-token-file")
				return
			case write || !s.fromLoopback(r):
				w.Header().Set("WWW-Authenticate", `Bearer realm="paradigm-relay"`)
				writeError(w, http.StatusUnauthorized, "a bearer token is required (Authorization: Bearer TOKEN)")
				return
			}
		}
		if r.URL.Path != "/api/v1/events" {
			http.NewResponseController(w).SetWriteDeadline(time.Now().Add(writeTimeout))
		}
		r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
		h(w, r)
	})
}

// apiError is every error's body.
type apiError struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, apiError{Error: msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// PlaynodeFilter selects playnodes of a Snapshot: names starting with
// Prefix, Online or not (nil: both), with a service named Service.
type PlaynodeFilter struct {
	Prefix  string
	Online  *bool
	Service string
}

// parseFilter reads the query of GET /api/v1/playnodes; an unknown or
// malformed parameter is an error naming it.
func parseFilter(r *http.Request) (PlaynodeFilter, error) {
	var f PlaynodeFilter
	q := r.URL.Query()
	for k, v := range q {
		if len(v) != 1 {
			return f, fmt.Errorf("query parameter %s given %d times", k, len(v))
		}
		switch k {
		case "prefix":
			f.Prefix = v[0]
		case "service":
			if err := proto.ValidateName("service", v[0]); err != nil {
				return f, fmt.Errorf("query parameter service: %w", err)
			}
			f.Service = v[0]
		case "online":
			b, err := strconv.ParseBool(v[0])
			if err != nil {
				return f, fmt.Errorf("query parameter online: %q is not true or false", v[0])
			}
			f.Online = &b
		default:
			return f, fmt.Errorf("unknown query parameter %q (prefix, online, service)", k)
		}
	}
	return f, nil
}

// Apply returns the playnodes f selects, in the snapshot's order (by name).
func (f PlaynodeFilter) Apply(ps []relay.PlaynodeState) []relay.PlaynodeState {
	out := []relay.PlaynodeState{}
	for _, p := range ps {
		if !strings.HasPrefix(p.Name, f.Prefix) || (f.Online != nil && p.Online != *f.Online) {
			continue
		}
		if f.Service != "" && !hasService(p, f.Service) {
			continue
		}
		out = append(out, p)
	}
	return out
}

func hasService(p relay.PlaynodeState, name string) bool {
	for _, s := range p.Services {
		if s.Name == name {
			return true
		}
	}
	return false
}

// PlaynodeList is the body of GET /api/v1/playnodes.
type PlaynodeList struct {
	Time time.Time `json:"time"`
	Seq  uint64    `json:"seq"`
	// PortLow and PortHigh are the relay's --ports.
	PortLow   uint16                `json:"port_low"`
	PortHigh  uint16                `json:"port_high"`
	Playnodes []relay.PlaynodeState `json:"playnodes"`
}

func (s *Server) listPlaynodes(w http.ResponseWriter, r *http.Request) {
	f, err := parseFilter(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	snap := s.relay.Snapshot()
	low, high := s.relay.PortRange()
	writeJSON(w, http.StatusOK, PlaynodeList{Time: snap.Time, Seq: snap.Seq, PortLow: low, PortHigh: high, Playnodes: f.Apply(snap.Playnodes)})
}

func (s *Server) getPlaynode(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := proto.ValidateName("playnode", name); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	p, ok := s.relay.Snapshot().Playnode(name)
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("unknown playnode %s", name))
		return
	}
	writeJSON(w, http.StatusOK, p)
}

// Portalias is one line of GET /api/v1/portaliases: where a web app on
// this server reaches a playnode's service.
type Portalias struct {
	Playnode  string `json:"playnode"`
	Service   string `json:"service"`
	Portalias uint16 `json:"portalias"`
	Address   string `json:"address"` // HOST:PORT on the relay's server
	Online    bool   `json:"online"`  // the portalias reaches the service now
	State     string `json:"state"`
	// OutsideRange: pinned outside the relay's --ports.
	OutsideRange bool `json:"outside_range,omitempty"`
}

// Portaliases lists the portaliases of snap, by playnode then service.
func Portaliases(snap relay.Snapshot, bind string, low, high uint16) []Portalias {
	out := []Portalias{}
	for _, p := range snap.Playnodes {
		for _, svc := range p.Services {
			if svc.Portalias == 0 {
				continue
			}
			out = append(out, Portalias{Playnode: p.Name, Service: svc.Name, Portalias: svc.Portalias,
				Address: net.JoinHostPort(bind, strconv.Itoa(int(svc.Portalias))),
				Online:  svc.State == relay.StateOnline, State: svc.State,
				OutsideRange: svc.Portalias < low || svc.Portalias > high})
		}
	}
	return out
}

func (s *Server) listPortaliases(w http.ResponseWriter, r *http.Request) {
	if len(r.URL.Query()) > 0 {
		writeError(w, http.StatusBadRequest, "GET /api/v1/portaliases takes no query parameters")
		return
	}
	low, high := s.relay.PortRange()
	writeJSON(w, http.StatusOK, Portaliases(s.relay.Snapshot(), s.relay.Bind(), low, high))
}

func (s *Server) disconnect(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := proto.ValidateName("playnode", name); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if _, ok := s.relay.Snapshot().Playnode(name); !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("unknown playnode %s", name))
		return
	}
	if err := s.relay.Disconnect(name); err != nil {
		code := http.StatusInternalServerError
		if errors.Is(err, relay.ErrNotOnline) {
			code = http.StatusConflict
		}
		writeError(w, code, err.Error())
		return
	}
	s.log.Info("playnode disconnected by the operator", "playnode", name, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, map[string]string{"playnode": name, "result": "disconnected"})
}

// AliasRequest is the body of PUT .../services/{service}/portalias.
type AliasRequest struct {
	Portalias uint16 `json:"portalias"`
	Force     bool   `json:"force,omitempty"` // allow a portalias outside --ports
}

func (s *Server) aliasSet(w http.ResponseWriter, r *http.Request) {
	var req AliasRequest
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", MaxBodyBytes))
			return
		}
		writeError(w, http.StatusBadRequest, fmt.Sprintf("request body: %v (want {\"portalias\": PORT, \"force\": false})", err))
		return
	}
	if req.Portalias == 0 {
		writeError(w, http.StatusBadRequest, "request body: portalias is missing or 0 (1-65535)")
		return
	}
	a := store.Assignment{Playnode: r.PathValue("name"), Service: r.PathValue("service"), Portalias: req.Portalias}
	if err := errors.Join(proto.ValidateName("playnode", a.Playnode), proto.ValidateName("service", a.Service)); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := relay.AliasSet(r.Context(), s.relay.DataDir(), s.relay.Store(), a, req.Force); err != nil {
		writeError(w, http.StatusConflict, err.Error())
		return
	}
	s.log.Info("portalias set by the operator", "playnode", a.Playnode, "service", a.Service, "portalias", a.Portalias, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, Portalias{Playnode: a.Playnode, Service: a.Service, Portalias: a.Portalias,
		Address: net.JoinHostPort(s.relay.Bind(), strconv.Itoa(int(a.Portalias)))})
}

func (s *Server) aliasRemove(w http.ResponseWriter, r *http.Request) {
	name, service := r.PathValue("name"), r.PathValue("service")
	if err := proto.ValidateName("playnode", name); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	n, err := relay.AliasRemove(r.Context(), s.relay.DataDir(), s.relay.Store(), name, service)
	if err != nil {
		writeError(w, http.StatusNotFound, err.Error())
		return
	}
	s.log.Info("portalias removed by the operator", "playnode", name, "service", service, "removed", n, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, map[string]any{"playnode": name, "removed": n})
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// Readiness is the body of /readyz: ready once every portalias the relay
// knows is bound (no service in state bind-failed) and, in a cluster, while
// the shared store answers.
// The count only: the endpoint needs no token, so it names no playnode.
type Readiness struct {
	Ready      bool `json:"ready"`
	BindFailed int  `json:"bind_failed"`
	// ClusterStore is "ok" or "unreachable" for a relay of a cluster:
	// while unreachable, sessions and portaliases keep working but new
	// portaliases, enrollments and takeovers across relays wait.
	ClusterStore string `json:"cluster_store,omitempty"`
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	low, high := s.relay.PortRange()
	var rd Readiness
	snap := s.relay.Snapshot()
	for _, p := range Portaliases(snap, s.relay.Bind(), low, high) {
		if p.State == relay.StateBindFailed {
			rd.BindFailed++
		}
	}
	rd.Ready = rd.BindFailed == 0
	if c := snap.Cluster; c != nil {
		rd.ClusterStore = "ok"
		if !c.StoreOK {
			rd.ClusterStore, rd.Ready = "unreachable", false
		}
	}
	code := http.StatusOK
	if !rd.Ready {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, rd)
}

// PendingList is the body of GET /api/v1/pending: enrollments waiting for
// approval, and rejected keys.
type PendingList struct {
	Pending []relay.PendingNode `json:"pending"`
}

func (s *Server) listPending(w http.ResponseWriter, _ *http.Request) {
	ps, err := s.relay.Site().ListPending()
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	if ps == nil {
		ps = []relay.PendingNode{}
	}
	writeJSON(w, http.StatusOK, PendingList{Pending: ps})
}

// decidePending is POST /api/v1/pending/{name}/approve or /reject: the
// same as `paradigm-relay approve|reject NAME`, on the relay's own Site
// (the cluster's documents when it shares a store).
func (s *Server) decidePending(decide func(site relay.Site, name string) (string, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		if err := proto.ValidateName("playnode", name); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		msg, err := decide(s.relay.Site(), name)
		switch {
		case errors.Is(err, relay.ErrNotPending):
			writeError(w, http.StatusNotFound, err.Error())
		case err != nil:
			writeError(w, http.StatusConflict, err.Error())
		default:
			s.log.Info("enrollment decided by the operator", "playnode", name, "result", msg, "remote", r.RemoteAddr)
			writeJSON(w, http.StatusOK, map[string]string{"playnode": name, "result": msg})
		}
	}
}
