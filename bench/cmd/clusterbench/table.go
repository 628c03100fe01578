package main

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"paradigm/bench/benchkit"
)

// Columns of the mesh hop table.
const (
	colDirect = "no relay"
	colHome   = "home relay A"
	colViaFmt = "via %s (one mesh hop)"
)

// results is everything the run prints.
type results struct {
	s            *settings
	load0, load1 string
	commit       string
	took         time.Duration
	connectTook  time.Duration // every playnode's session up (its own view)
	viewTook     time.Duration // every relay's admin API shows all online
	rssIdle      []float64     // MiB per relay, before any playnode
	rssNodes     []float64     // with every playnode connected
	homes        []int         // simulated playnodes at home per relay
	rssAfter     []float64     // B and C after the failover
	hop          *hopFigures
	failover     *failoverFigures
}

func (r *results) print(w io.Writer) {
	s := r.s
	host, _ := os.Hostname()
	fmt.Fprintf(w, "\n## clusterbench %s\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(w, "- command: `%s`\n", strings.Join(append([]string{"go run ./bench/cmd/clusterbench"}, os.Args[1:]...), " "))
	fmt.Fprintf(w, "- machine: %s, %d CPUs, load average %s at the start, %s at the end; paradigm %s\n", host, numCPU(), r.load0, r.load1, r.commit)
	fmt.Fprintf(w, "- 3 relays (`paradigm-relay serve` processes on 127.0.0.2-4, one etcd), %d simulated playnodes (in-process node.Run, own keys, one echo service each) + 1 measured playnode; keepalive %v (relays and playnodes), presence lease %v; failover: %s; took %v\n\n",
		s.nodes, s.keepalive, 2*s.keepalive, failoverMode(s), r.took.Round(time.Second))
	if r.hop != nil {
		r.printHop(w)
	}
	if r.failover != nil {
		r.printFailover(w)
	}
	r.printRSS(w)
}

func failoverMode(s *settings) string {
	if s.failover == failoverBench {
		return "-failover bench: the benchmark restarts each of the failed relay's playnodes against the survivors as soon as its session ended (no backoff step)"
	}
	return "by the playnodes themselves (`--relay` x 3, each relay first for a third, the other two in alternating order; node defaults: backoff from 0.5 s doubling to 30 s, jittered in [d/2, d], --prefer-first-after 5m)"
}

func (r *results) printHop(w io.Writer) {
	cols := []string{colDirect, colHome, fmt.Sprintf(colViaFmt, "B"), fmt.Sprintf(colViaFmt, "C")}
	fmt.Fprintf(w, "Mesh hop: the measured playnode at home on relay A; RTT n=%d, new conn n=%d per path, taken in %d rounds visiting every path in turn; bulk: %d MiB each way, median of %d.\n\n",
		r.s.rttN, r.s.connN, hopRounds, r.s.bulk>>20, r.s.bulkRounds)
	fmt.Fprintf(w, "| figure | %s | hop / home |\n|---|%s---:|\n", strings.Join(cols, " | "), strings.Repeat("---:|", len(cols)))
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	rows := []struct {
		name string
		val  func(col string) (float64, bool)
	}{
		{"RTT 64 B, kept connection, p50 (µs)", func(c string) (float64, bool) { d, ok := pct(r.hop.rtt[c], 0.50); return us(d), ok }},
		{"RTT 64 B, kept connection, p99 (µs)", func(c string) (float64, bool) { d, ok := pct(r.hop.rtt[c], 0.99); return us(d), ok }},
		{"new connection + 64 B round trip, p50 (µs)", func(c string) (float64, bool) { d, ok := pct(r.hop.conn[c], 0.50); return us(d), ok }},
		{"new connection + 64 B round trip, p99 (µs)", func(c string) (float64, bool) { d, ok := pct(r.hop.conn[c], 0.99); return us(d), ok }},
		{"bulk to the playnode (MiB/s)", func(c string) (float64, bool) { x := r.hop.upMiBs[c]; return benchkit.Median(x), len(x) > 0 }},
		{"bulk from the playnode (MiB/s)", func(c string) (float64, bool) { x := r.hop.downMiBs[c]; return benchkit.Median(x), len(x) > 0 }},
		{"bulk: CPU s/GiB, the three relays", func(c string) (float64, bool) { x, ok := r.hop.relayCPU[c]; return x, ok && c != colDirect }},
		{"bulk: CPU s/GiB, client + playnode + services (one process)", func(c string) (float64, bool) { x, ok := r.hop.selfCPU[c]; return x, ok }},
	}
	for _, row := range rows {
		cells := make([]string, len(cols))
		for i, c := range cols {
			cells[i] = "–"
			if v, ok := row.val(c); ok {
				cells[i] = format(v)
			}
		}
		home, _ := row.val(colHome)
		var ratios []string
		for _, c := range cols[2:] {
			if v, ok := row.val(c); ok && home > 0 {
				ratios = append(ratios, fmt.Sprintf("%.2fx", v/home))
			}
		}
		fmt.Fprintf(w, "| %s | %s | %s |\n", row.name, strings.Join(cells, " | "), strings.Join(ratios, ", "))
	}
	fmt.Fprintln(w)
}

func (r *results) printFailover(w io.Writer) {
	f := r.failover
	how := "kill -9 (SIGKILL: the kernel closes its connections at once)"
	if r.s.fail == failStop {
		how = fmt.Sprintf("SIGSTOP (a hung relay: its kernel still acknowledges, so a playnode leaves it once a keepalive request has gone unanswered for 12 x %v, internal/mux/liveness.go)", r.s.keepalive)
	}
	fmt.Fprintf(w, "Failover: %s of relay %s with %d of the %d simulated playnodes at home there; times from just before the signal.\n\n", how, f.killed, f.victims, r.s.nodes)
	fmt.Fprintf(w, "| figure | p50 (s) | p99 (s) | all (s) |\n|---|---:|---:|---:|\n")
	sec := func(d time.Duration) string { return format(d.Seconds()) }
	row := func(name string, ds []time.Duration) {
		if len(ds) < f.victims {
			fmt.Fprintf(w, "| %s | %s | %s | not all: %d of %d |\n", name, pctText(ds, 0.5), pctText(ds, 0.99), len(ds), f.victims)
			return
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", name, pctText(ds, 0.5), pctText(ds, 0.99), sec(ds[len(ds)-1]))
	}
	row("connected to another relay (the playnodes' view)", f.nodeBack)
	for _, name := range sortedKeys(f.adminGone) {
		fmt.Fprintf(w, "| relay %s's admin API shows none at home on %s any more (polled every 250 ms) | | | %s |\n", name, f.killed, sec(f.adminGone[name]))
	}
	for _, name := range sortedKeys(f.adminAll) {
		fmt.Fprintf(w, "| relay %s's admin API shows all online elsewhere (polled every 250 ms) | | | %s |\n", name, sec(f.adminAll[name]))
	}
	for _, name := range sortedKeys(f.echoBack) {
		row(fmt.Sprintf("portalias answers a 64 B echo through relay %s", name), f.echoBack[name])
	}
	row("after its connect: answers through the relay it is on", f.lagLocal)
	row("after its connect: answers through the other survivor (presence via etcd, one mesh hop)", f.lagRemote)
	if d, ok := f.allBack(); ok {
		fmt.Fprintf(w, "| **every portalias answers through every surviving relay** | | | **%s** |\n", sec(d))
	}
	fmt.Fprintln(w)
	var landed []string
	for _, name := range sortedKeys(f.landed) {
		landed = append(landed, fmt.Sprintf("%d on %s", f.landed[name], name))
	}
	fmt.Fprintf(w, "- the killed relay's playnodes are now: %s\n", strings.Join(landed, ", "))
	fmt.Fprintf(w, "- CPU from the signal until the last answer (%s s wall, this machine has %d CPUs): surviving relays %s s together, the benchmark process (simulated playnodes, probes) %s s\n",
		format(f.cpuWall), numCPU(), format(f.cpuSurvivors), format(f.cpuSelf))
	fmt.Fprintf(w, "- playnodes of the other relays sampled after the failover: %d of %d answer through every surviving relay\n", f.otherOK, f.otherSeen)
	for _, m := range f.missing {
		fmt.Fprintf(w, "- NOT BACK: %s\n", m)
	}
	fmt.Fprintln(w)
}

func (r *results) printRSS(w io.Writer) {
	fmt.Fprintf(w, "Relay RSS (VmRSS, MiB); every relay binds all %d portaliases; connecting all playnodes took %s s, every relay's admin API showed all online after %s s.\n\n",
		r.s.portHigh-r.s.portLow+1, format(r.connectTook.Seconds()), format(r.viewTook.Seconds()))
	fmt.Fprintf(w, "| relay | idle, no playnode | simulated playnodes at home | with all playnodes connected | after the failover |\n|---|---:|---:|---:|---:|\n")
	for i, name := range []string{"A", "B", "C"} {
		cell := func(xs []float64, j int) string {
			if j < 0 || j >= len(xs) {
				return "–"
			}
			return format(xs[j])
		}
		homes := "–"
		if i < len(r.homes) {
			homes = fmt.Sprint(r.homes[i])
		}
		after := "killed"
		if r.s.fail == failStop {
			after = "stopped"
		}
		if i > 0 {
			after = cell(r.rssAfter, i-1)
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", name, cell(r.rssIdle, i), homes, cell(r.rssNodes, i), after)
	}
	fmt.Fprintln(w)
}

func pct(sorted []time.Duration, q float64) (time.Duration, bool) {
	return benchkit.Percentile(sorted, q), len(sorted) > 0
}

func pctText(sorted []time.Duration, q float64) string {
	if len(sorted) == 0 {
		return "–"
	}
	return format(benchkit.Percentile(sorted, q).Seconds())
}

// format prints three significant digits.
func format(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	case v >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func sortDurations(ds []time.Duration) { slices.Sort(ds) }

// sortedNonZero is ds without its zeros, sorted.
func sortedNonZero(ds []time.Duration) []time.Duration {
	out := slices.DeleteFunc(slices.Clone(ds), func(d time.Duration) bool { return d == 0 })
	slices.Sort(out)
	return out
}
