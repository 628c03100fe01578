package main

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// profileRun samples relay and node with perf during an extra 1-stream
// iperf3 run and returns the top symbols of each process.
func profileRun(ctx context.Context, s *settings, t *tunnel) string {
	if _, err := exec.LookPath("perf"); err != nil {
		return "perf not installed (apt-get install linux-perf): no profile\n"
	}
	logf("profiling %s with perf", t.name)
	out := filepath.Join(s.tmp, "perf.data")
	secs := s.iperfSecs
	rec := command(ctx, "perf", "record", "-F", "999", "-g", "-o", out,
		"-p", fmt.Sprintf("%d,%d", t.serverPID(), t.clientPID()), "--", "sleep", fmt.Sprint(secs))
	if err := startLogged(rec, s.tmp, "perf-record"); err != nil {
		return err.Error() + "\n"
	}
	time.Sleep(300 * time.Millisecond)
	ir, err := runIperf(ctx, t.iperfAddr, secs, 1, false, 0)
	rec.Wait()
	if err != nil {
		return fmt.Sprintf("iperf3 under perf: %v\n", err)
	}
	rep, err := command(ctx, "perf", "report", "-i", out, "--stdio", "--no-children", "-g", "none",
		"--sort", "comm,sym", "--percent-limit", "0.8").Output()
	if err != nil {
		return fmt.Sprintf("perf report: %v\n", err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "1 stream under perf: %.2f Gbit/s; %% of all samples of both processes, self time\n", ir.bps/1e9)
	per := map[string]int{}
	sc := bufio.NewScanner(strings.NewReader(string(rep)))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 3 || !strings.HasSuffix(f[0], "%") {
			continue
		}
		if per[f[1]] >= 15 {
			continue
		}
		per[f[1]]++
		fmt.Fprintln(&b, line)
	}
	return b.String()
}
