package relay

import (
	"fmt"
	"os"
	"strings"

	"paradigm/internal/store"
)

// ephemeralRangeFile is where Linux keeps the range of ports it gives
// outgoing connections.
const ephemeralRangeFile = "/proc/sys/net/ipv4/ip_local_port_range"

// ephemeralOverlap reads the kernel's ephemeral port range from path and
// reports whether it overlaps low-high: an outgoing connection of any
// program on the server can then hold a portalias's port.
func ephemeralOverlap(path string, low, high uint16) (lo, hi int, overlap bool, err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, false, err
	}
	if n, _ := fmt.Sscanf(strings.TrimSpace(string(data)), "%d %d", &lo, &hi); n != 2 || lo > hi {
		return 0, 0, false, fmt.Errorf("%s: %q is not LOW HIGH", path, strings.TrimSpace(string(data)))
	}
	return lo, hi, lo <= int(high) && int(low) <= hi, nil
}

// checkPortRange logs what an operator should know about --ports at start:
// an overlap with the kernel's ephemeral ports, and portaliases outside the
// range (kept and served, but not where new ones come from).
func (r *Relay) checkPortRange(t *store.Table) {
	if lo, hi, overlap, err := ephemeralOverlap(ephemeralRangeFile, r.cfg.PortLow, r.cfg.PortHigh); err == nil && overlap {
		r.log.Warn("--ports overlaps the kernel's ephemeral port range: outgoing connections may hold a portalias's port; move --ports or reserve it with sysctl net.ipv4.ip_local_reserved_ports",
			"ports", fmt.Sprintf("%d-%d", r.cfg.PortLow, r.cfg.PortHigh), "ephemeral", fmt.Sprintf("%d-%d", lo, hi))
	}
	for _, a := range t.All() {
		if a.Portalias < r.cfg.PortLow || a.Portalias > r.cfg.PortHigh {
			r.log.Warn("portalias outside --ports, kept", "playnode", a.Playnode, "service", a.Service, "portalias", a.Portalias,
				"ports", fmt.Sprintf("%d-%d", r.cfg.PortLow, r.cfg.PortHigh))
		}
	}
}
