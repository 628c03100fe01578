package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"

	"paradigm/bench/benchkit"
)

// link is the shaped link this run built: a network namespace for the
// playnode and a veth pair between it and the server side (this
// namespace), each end's egress shaped by tbf.
type link struct {
	ns       string // the playnode's network namespace
	srvIf    string // veth end on the server side: its egress is the downlink
	devIf    string // veth end in ns: its egress is the uplink
	srvIP    string // server side address on the veth /30
	devIP    string // playnode address on the veth /30
	prefix   string // the /30, for messages
	teardown []string
}

// shaping is one tbf configuration; the queue limit is given as latency,
// the time a full queue takes to drain at rate.
type shaping struct {
	upMbit, downMbit int
	queueMS          int
}

func (sh shaping) tbf(mbit int) []string {
	return []string{"root", "tbf", "rate", fmt.Sprintf("%dmbit", mbit), "burst", "32kbit", "latency", fmt.Sprintf("%dms", sh.queueMS)}
}

// ip runs ip(8) with args.
func ip(ctx context.Context, args ...string) error {
	out, err := benchkit.Command(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func tc(ctx context.Context, args ...string) error {
	out, err := benchkit.Command(ctx, "tc", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("tc %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// newLink builds the namespace, the veth pair and the shaping; names carry
// this process's PID so that concurrent runs never meet. On error whatever
// was built is removed again.
func newLink(ctx context.Context, sh shaping) (l *link, err error) {
	pid := os.Getpid()
	l = &link{ns: fmt.Sprintf("shaped%d", pid), srvIf: fmt.Sprintf("shs%d", pid), devIf: fmt.Sprintf("shd%d", pid)}
	if err := ip(ctx, "netns", "add", l.ns); err != nil {
		return nil, errNoNamespace{err}
	}
	l.teardown = append(l.teardown, l.ns)
	defer func() {
		if err != nil {
			l.close()
		}
	}()
	subnet, err := freeSubnet(pid)
	if err != nil {
		return nil, err
	}
	l.srvIP, l.devIP = subnet[0], subnet[1]
	l.prefix = subnet[2]
	for _, args := range [][]string{
		{"link", "add", l.srvIf, "type", "veth", "peer", "name", l.devIf, "netns", l.ns},
		{"addr", "add", l.srvIP + "/30", "dev", l.srvIf},
		{"link", "set", l.srvIf, "up"},
		{"-n", l.ns, "addr", "add", l.devIP + "/30", "dev", l.devIf},
		{"-n", l.ns, "link", "set", l.devIf, "up"},
		{"-n", l.ns, "link", "set", "lo", "up"},
	} {
		if err := ip(ctx, args...); err != nil {
			return nil, err
		}
	}
	if err := tc(ctx, append([]string{"qdisc", "add", "dev", l.srvIf}, sh.tbf(sh.downMbit)...)...); err != nil {
		return nil, err
	}
	if err := tc(ctx, append([]string{"-n", l.ns, "qdisc", "add", "dev", l.devIf}, sh.tbf(sh.upMbit)...)...); err != nil {
		return nil, err
	}
	return l, nil
}

// close deletes the namespace; the veth pair goes with it.
func (l *link) close() {
	for _, ns := range l.teardown {
		if err := ip(context.Background(), "netns", "del", ns); err != nil {
			benchkit.Logf("remove namespace: %v", err)
		}
	}
	l.teardown = nil
}

// errNoNamespace means the environment cannot build the setup (not root,
// no CAP_NET_ADMIN, a container without netns support): the benchmark
// skips instead of failing.
type errNoNamespace struct{ err error }

func (e errNoNamespace) Error() string { return e.err.Error() }

// freeSubnet picks a /30 in 10.231.0.0/16, starting at one derived from
// pid, that no interface of this namespace uses; it returns the server
// address, the playnode address and the /30.
func freeSubnet(pid int) ([3]string, error) {
	_, base, _ := net.ParseCIDR("10.231.0.0/16")
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return [3]string{}, err
	}
	for i := range 1 << 14 {
		k := (pid + i) % (1 << 14)
		n := net.IPv4(10, 231, byte(k>>6), byte(k&63)<<2)
		used := false
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && base.Contains(ipn.IP) && ipn.IP.Mask(net.CIDRMask(30, 32)).Equal(n.To4()) {
				used = true
			}
		}
		if !used {
			srv := net.IPv4(n[12], n[13], n[14], n[15]+1)
			dev := net.IPv4(n[12], n[13], n[14], n[15]+2)
			return [3]string{srv.String(), dev.String(), n.String() + "/30"}, nil
		}
	}
	return [3]string{}, fmt.Errorf("no free /30 in %v", base)
}
