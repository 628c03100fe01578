package relay

import (
	"log/slog"
	"maps"
	"slices"
)

// logEvents writes the relay's lifecycle log from its events, until sub
// closes: the log is a subscriber like the status file and the tests.
func logEvents(log *slog.Logger, sub *Subscription) {
	for e := range sub.C {
		switch e.Kind {
		case EventUp:
			attrs := []any{"playnode", e.Playnode, "transport", e.Transport, "remote", e.Remote,
				"key_fingerprint", e.Fingerprint, "client", e.ClientVersion, "services", len(e.Portaliases)}
			if e.Relay != "" {
				attrs = append(attrs, "relay", e.Relay)
			}
			for _, svc := range slices.Sorted(maps.Keys(e.Portaliases)) {
				attrs = append(attrs, svc, e.Portaliases[svc])
			}
			log.Info("playnode connected", attrs...)
		case EventDown:
			attrs := []any{"playnode", e.Playnode, "transport", e.Transport, "remote", e.Remote, "reason", e.Reason}
			if e.Relay != "" {
				attrs = append(attrs, "relay", e.Relay)
			}
			log.Info("playnode disconnected", attrs...)
		case EventPortaliasAssigned:
			log.Info("portalias assigned", "playnode", e.Playnode, "service", e.Service, "portalias", e.Portalias)
		case EventPortaliasMoved:
			log.Info("portalias moved", "playnode", e.Playnode, "service", e.Service, "portalias", e.Portalias, "from", e.From)
		case EventPortaliasRemoved:
			log.Info("portalias removed", "playnode", e.Playnode, "service", e.Service, "portalias", e.Portalias)
		case EventPortaliasBindFailed:
			log.Error("bind portalias, retrying until it is free", "playnode", e.Playnode, "service", e.Service, "portalias", e.Portalias, "err", e.Reason)
		case EventPortaliasLimit:
			log.Warn("playnode reached its portalias limit, services left without one", "playnode", e.Playnode, "limit", e.Reason)
		case EventPortaliasBound:
			log.Info("portalias bound", "playnode", e.Playnode, "service", e.Service, "portalias", e.Portalias)
		case EventLost:
			log.Warn("log fell behind the relay's events", "missed", e.Missed)
		}
	}
}
