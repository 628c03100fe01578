package admin

import (
	"maps"
	"net/http"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"paradigm/internal/relay"
)

// collector turns the relay's Snapshot into metrics at scrape time: no
// series outlives its playnode, and the label sets are bounded by the fleet
// (playnodes times their services) and the fixed sets of refusal codes and
// peer event reasons.
type collector struct {
	relay *relay.Relay

	handshakes, handshakeFailed, authFailed, replaced    *prometheus.Desc
	probes                                               *prometheus.Desc
	refused, connsRefused, forwarded, toNodes, fromNodes *prometheus.Desc
	peerEvents, playnodes, online                        *prometheus.Desc

	up, lastSeen, connected                               *prometheus.Desc
	svcUp, portalias, open, total, svcToNode, svcFromNode *prometheus.Desc
}

func newCollector(r *relay.Relay) *collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	pn := []string{"playnode"}
	ps := []string{"playnode", "service"}
	return &collector{
		relay:           r,
		handshakes:      d("paradigm_relay_handshakes_total", "Playnode sessions that completed the handshake."),
		handshakeFailed: d("paradigm_relay_handshakes_failed_total", "Connections whose SSH or QUIC handshake failed."),
		probes:          d("paradigm_relay_probes_total", "Connections that authenticated and hung up before a hello: nodes checking that this relay is up (failover)."),
		authFailed:      d("paradigm_relay_auth_failures_total", "Connections refused because the key is not authorized."),
		replaced:        d("paradigm_relay_sessions_replaced_total", "Sessions ended because a newer session of the same playnode connected."),
		refused:         d("paradigm_relay_refused_total", "Hellos refused after authentication, by refusal code.", "code"),
		connsRefused:    d("paradigm_relay_connections_refused_total", "Connections to portaliases refused (limits, playnode offline)."),
		forwarded:       d("paradigm_relay_connections_forwarded_total", "Connections to portaliases forwarded to a playnode."),
		toNodes:         d("paradigm_relay_bytes_to_playnodes_total", "Bytes forwarded to playnodes."),
		fromNodes:       d("paradigm_relay_bytes_from_playnodes_total", "Bytes forwarded from playnodes."),
		peerEvents:      d("paradigm_relay_peer_events_total", "Peer-caused events the log rate-limits, by reason.", "reason"),
		playnodes:       d("paradigm_relay_playnodes", "Playnodes online or with a portalias."),
		online:          d("paradigm_relay_playnodes_online", "Playnodes online now."),
		up:              d("paradigm_playnode_up", "1 if the playnode is online.", pn...),
		lastSeen:        d("paradigm_playnode_last_seen_timestamp_seconds", "When the relay last heard from the playnode (now while online).", pn...),
		connected:       d("paradigm_playnode_connected_since_timestamp_seconds", "Start of the playnode's current (or last) session.", pn...),
		svcUp:           d("paradigm_service_up", "1 if the service's portalias reaches it now.", ps...),
		portalias:       d("paradigm_service_portalias", "The service's portalias (port number on the relay).", ps...),
		open:            d("paradigm_service_open_connections", "Connections forwarded to the service now.", ps...),
		total:           d("paradigm_service_connections_total", "Connections forwarded to the service since the relay started.", ps...),
		svcToNode:       d("paradigm_service_bytes_to_playnode_total", "Bytes forwarded to the service.", ps...),
		svcFromNode:     d("paradigm_service_bytes_from_playnode_total", "Bytes forwarded from the service.", ps...),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.handshakes, c.handshakeFailed, c.probes, c.authFailed, c.replaced, c.refused,
		c.connsRefused, c.forwarded, c.toNodes, c.fromNodes, c.peerEvents, c.playnodes, c.online,
		c.up, c.lastSeen, c.connected, c.svcUp, c.portalias, c.open, c.total, c.svcToNode, c.svcFromNode} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	snap := c.relay.Snapshot()
	cn := snap.Counters
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter(c.handshakes, cn.Handshakes)
	counter(c.handshakeFailed, cn.HandshakeFailed)
	counter(c.probes, cn.Probes)
	counter(c.authFailed, cn.AuthFailed)
	counter(c.replaced, cn.SessionsReplaced)
	for _, code := range slices.Sorted(maps.Keys(cn.Refused)) {
		counter(c.refused, cn.Refused[code], code)
	}
	counter(c.connsRefused, cn.ConnsRefused)
	counter(c.forwarded, cn.Forwarded)
	counter(c.toNodes, cn.BytesToPlaynodes)
	counter(c.fromNodes, cn.BytesFromNodes)
	for _, reason := range slices.Sorted(maps.Keys(cn.PeerEvents)) {
		counter(c.peerEvents, cn.PeerEvents[reason], reason)
	}
	online, listed := 0, 0
	for _, p := range snap.Playnodes {
		if !p.Online && len(p.Services) == 0 {
			continue // removed (no portalias left) or only seen once: no series
		}
		listed++
		up := 0.0
		if p.Online {
			up, online = 1, online+1
		}
		gauge(c.up, up, p.Name)
		if !p.LastSeen.IsZero() {
			gauge(c.lastSeen, float64(p.LastSeen.UnixMilli())/1e3, p.Name)
		}
		if !p.Connected.IsZero() {
			gauge(c.connected, float64(p.Connected.UnixMilli())/1e3, p.Name)
		}
		for _, s := range p.Services {
			svcUp := 0.0
			if s.State == relay.StateOnline {
				svcUp = 1
			}
			gauge(c.svcUp, svcUp, p.Name, s.Name)
			if s.Portalias != 0 {
				gauge(c.portalias, float64(s.Portalias), p.Name, s.Name)
			}
			gauge(c.open, float64(s.OpenConns), p.Name, s.Name)
			counter(c.total, s.TotalConns, p.Name, s.Name)
			counter(c.svcToNode, s.BytesToPlaynode, p.Name, s.Name)
			counter(c.svcFromNode, s.BytesFromPlaynode, p.Name, s.Name)
		}
	}
	gauge(c.playnodes, float64(listed))
	gauge(c.online, float64(online))
}

// metrics is the /metrics handler: the relay's collector and the Go
// runtime's and process's standard ones, on a registry of its own.
func (s *Server) metrics() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(newCollector(s.relay), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: nil, MaxRequestsInFlight: 4})
}
