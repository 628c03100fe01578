package main

import (
	"context"
	"fmt"
	"time"

	"paradigm/bench/benchkit"
)

// Row keys of the table.
const (
	rowT1        = "throughput 1 stream (Gbit/s)"
	rowT1R       = "throughput 1 stream -R (Gbit/s)"
	rowT8        = "throughput 8 streams (Gbit/s)"
	rowT8R       = "throughput 8 streams -R (Gbit/s)"
	rowRTT50     = "RTT 64 B p50 (µs)"
	rowRTT99     = "RTT 64 B p99 (µs)"
	rowConn50    = "new conn p50 (µs)"
	rowConn99    = "new conn p99 (µs)"
	rowCPU1      = "CPU s/GiB, 1 stream (server+device side)"
	rowCPU1R     = "CPU s/GiB, 1 stream -R"
	rowSrvIdle   = "server RSS idle (MiB)"
	rowCliIdle   = "device side RSS idle (MiB)"
	rowSrvConn   = "server KiB per idle forwarded conn"
	rowCliConn   = "device side KiB per idle forwarded conn"
	rowSrvNode   = "server KiB per idle connected node"
	rowSrvNode1k = "server KiB per idle connected node, 1,000 nodes"
	rowNodeUp1k  = "seconds to connect 1,000 nodes"
	rowSimNode   = "device side KiB per node (simulator, in-process)"
	rowListener  = "relay KiB per bound offline portalias"
	rowNodeCPU   = "relay CPU % idle with all nodes connected"
	rowNodeUp    = "seconds to connect all nodes"
	rowD1        = "25 ms link: 1 stream (Mbit/s)"
	rowD1R       = "25 ms link: 1 stream -R (Mbit/s)"
	rowD8        = "25 ms link: 8 streams (Mbit/s)"
	rowD8R       = "25 ms link: 8 streams -R (Mbit/s)"
)

// measureTunnel measures one configuration: memory first (as fresh as the
// tunnel gets), then bulk throughput with CPU, then latency.
func measureTunnel(ctx context.Context, s *settings, t *tunnel, res *results) error {
	logf("measuring %s", t.name)
	if t.server != nil {
		measureMemory(s, t, res)
	}
	for _, r := range []struct {
		row      string
		parallel int
		reverse  bool
		cpuRow   string
	}{{rowT1, 1, false, rowCPU1}, {rowT1R, 1, true, rowCPU1R}, {rowT8, 8, false, ""}, {rowT8R, 8, true, ""}} {
		srv0, cli0 := treeCPU(t.serverPID()), treeCPU(t.clientPID())
		ir, err := runIperfRetry(ctx, t.iperfAddr, s.iperfSecs, r.parallel, r.reverse, 0)
		if err != nil {
			res.note("%s %s: %v", t.name, r.row, err)
			continue
		}
		srv1, cli1 := treeCPU(t.serverPID()), treeCPU(t.clientPID())
		res.set(r.row, t.name, ir.bps/1e9)
		if r.cpuRow != "" && t.server != nil {
			gib := float64(ir.bytes) / (1 << 30)
			res.set(r.cpuRow, t.name, (srv1-srv0+cli1-cli0)/gib)
			res.note("%s %s: server %.2f CPU-s, device side %.2f CPU-s for %.2f GiB", t.name, r.row, srv1-srv0, cli1-cli0, gib)
		}
	}
	if lat, err := runRTT(t.echoAddr, s.rttN, time.Minute); err != nil {
		res.note("%s RTT: %v", t.name, err)
	} else {
		res.set(rowRTT50, t.name, lat.p50)
		res.set(rowRTT99, t.name, lat.p99)
	}
	if lat, err := runConnRTT(t.echoAddr, s.connN, time.Minute); err != nil {
		res.note("%s new conn: %v", t.name, err)
	} else {
		res.set(rowConn50, t.name, lat.p50)
		res.set(rowConn99, t.name, lat.p99)
	}
	return ctx.Err()
}

// measureMemory reads RSS idle and with holdN idle forwarded connections.
func measureMemory(s *settings, t *tunnel, res *results) {
	time.Sleep(s.settle)
	srv0, cli0 := treeRSS(t.serverPID()), treeRSS(t.clientPID())
	res.set(rowSrvIdle, t.name, srv0/1024)
	res.set(rowCliIdle, t.name, cli0/1024)
	if !isParadigm(t.name) {
		// sshd forks per connection: the session processes are what one
		// more connected device costs it.
		res.set(rowSrvNode, t.name, srv0-benchkit.RSSKiB(t.serverPID()))
	}
	conns, err := holdConns(t.echoAddr, s.holdN, time.Minute)
	if err != nil {
		res.note("%s: %v", t.name, err)
		return
	}
	defer closeAll(conns)
	time.Sleep(s.settle + time.Second)
	srv1, cli1 := treeRSS(t.serverPID()), treeRSS(t.clientPID())
	alive := verifyConns(conns)
	res.set(rowSrvConn, t.name, (srv1-srv0)/float64(s.holdN))
	res.set(rowCliConn, t.name, (cli1-cli0)/float64(s.holdN))
	res.note("%s: %d/%d idle forwarded connections alive after the hold; RSS server %.1f -> %.1f MiB, device side %.1f -> %.1f MiB",
		t.name, alive, s.holdN, srv0/1024, srv1/1024, cli0/1024, cli1/1024)
}

func runIperfRetry(ctx context.Context, addr string, secs, parallel int, reverse bool, omit int) (iperfResult, error) {
	ir, err := runIperf(ctx, addr, secs, parallel, reverse, omit)
	if err != nil && ctx.Err() == nil {
		time.Sleep(time.Second) // let iperf3 -s finish the failed test
		ir, err = runIperf(ctx, addr, secs, parallel, reverse, omit)
	}
	return ir, err
}

// measureDelayed runs the throughput tests through the 25 ms delay proxy,
// omitting the first second (slow start).
func measureDelayed(ctx context.Context, s *settings, t *tunnel, res *results) {
	logf("measuring %s over the %v link", t.name, s.delay)
	for _, r := range []struct {
		row      string
		parallel int
		reverse  bool
	}{{rowD1, 1, false}, {rowD1R, 1, true}, {rowD8, 8, false}, {rowD8R, 8, true}} {
		if r.reverse && !s.delayBoth {
			continue
		}
		ir, err := runIperfRetry(ctx, t.iperfAddr, s.iperfSecs, r.parallel, r.reverse, 1)
		if err != nil {
			res.note("%s %s: %v", t.name, r.row, err)
			continue
		}
		res.set(r.row, t.name, ir.bps/1e6)
	}
}

// results collects the table's cells and the notes printed under it.
type results struct {
	cells   map[string]map[string]float64
	notes   []string
	profile string
}

func newResults() *results { return &results{cells: map[string]map[string]float64{}} }

func (r *results) set(row, col string, v float64) {
	if r.cells[row] == nil {
		r.cells[row] = map[string]float64{}
	}
	r.cells[row][col] = v
}

func (r *results) get(row, col string) (float64, bool) {
	v, ok := r.cells[row][col]
	return v, ok
}

func (r *results) note(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	logf("%s", msg)
	r.notes = append(r.notes, msg)
}
