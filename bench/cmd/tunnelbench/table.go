package main

import (
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"time"
)

// target is what the team asked paradigm to reach on one row.
type target struct {
	text string
	met  func(ratio, paradigm, direct float64) bool
}

var targets = map[string]target{
	rowT1:        {">= 1.2x", func(r, _, _ float64) bool { return r >= 1.2 }},
	rowT1R:       {">= 1.2x", func(r, _, _ float64) bool { return r >= 1.2 }},
	rowT8:        {">= 1.2x", func(r, _, _ float64) bool { return r >= 1.2 }},
	rowT8R:       {">= 1.2x", func(r, _, _ float64) bool { return r >= 1.2 }},
	rowRTT50:     {"<= 0.5x", func(r, _, _ float64) bool { return r <= 0.5 }},
	rowConn50:    {"<= 2.5x direct", func(_, p, d float64) bool { return d > 0 && p/d <= 2.5 }},
	rowCPU1:      {"<= 1.0x", func(r, _, _ float64) bool { return r <= 1 }},
	rowCPU1R:     {"<= 1.0x", func(r, _, _ float64) bool { return r <= 1 }},
	rowSrvConn:   {"<= 24 KiB", func(_, p, _ float64) bool { return p <= 24 }},
	rowSrvNode:   {"<= 64 KiB", func(_, p, _ float64) bool { return p <= 64 }},
	rowSrvNode1k: {"<= 64 KiB", func(_, p, _ float64) bool { return p <= 64 }},
	rowD1:        {">= 1.0x", func(r, _, _ float64) bool { return r >= 1 }},
	rowD1R:       {">= 1.0x", func(r, _, _ float64) bool { return r >= 1 }},
	rowD8:        {">= 1.0x", func(r, _, _ float64) bool { return r >= 1 }},
	rowD8R:       {">= 1.0x", func(r, _, _ float64) bool { return r >= 1 }},
}

var rowOrder = []string{
	rowT1, rowT1R, rowT8, rowT8R, rowRTT50, rowRTT99, rowConn50, rowConn99, rowCPU1, rowCPU1R,
	rowSrvIdle, rowCliIdle, rowSrvConn, rowCliConn, rowSrvNode1k, rowNodeUp1k, rowSrvNode, rowListener, rowSimNode, rowNodeCPU, rowNodeUp,
	rowD1, rowD1R, rowD8, rowD8R,
}

var colOrder = []string{colDirect, colSSHDefault, colSSHAES, colParadigm, colQUIC}

func (r *results) print(w io.Writer, s *settings, v map[string]string, took time.Duration) {
	host, _ := os.Hostname()
	fmt.Fprintf(w, "\n## tunnelbench %s\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(w, "- command: `%s`\n", commandLine())
	fmt.Fprintf(w, "- machine: %s, nproc %s, CPU %q, kernel %s\n", host, v["nproc"], v["cpu"], v["kernel"])
	fmt.Fprintf(w, "- %s; %s; %s; paradigm %s\n", v["go"], v["openssh"], v["iperf3"], v["commit"])
	fmt.Fprintf(w, "- iperf3 -t %d; RTT n=%d; new conn n=%d; %d idle forwarded conns; %d simulated nodes; link delay %v each way; took %v\n\n",
		s.iperfSecs, s.rttN, s.connN, s.holdN, s.nodesN, s.delay, took.Round(time.Second))
	fmt.Fprintf(w, "| figure | %s | ratio paradigm / ssh aes128-gcm | ratio paradigm quic / ssh aes128-gcm | target | met |\n", strings.Join(colOrder, " | "))
	fmt.Fprintf(w, "|---|%s---:|---:|---|---|\n", strings.Repeat("---:|", len(colOrder)))
	for _, row := range rowOrder {
		if len(r.cells[row]) == 0 {
			continue
		}
		cells := make([]string, 0, len(colOrder))
		for _, col := range colOrder {
			if val, ok := r.get(row, col); ok {
				cells = append(cells, format(val))
			} else {
				cells = append(cells, "–")
			}
		}
		p, okP := r.get(row, colParadigm)
		a, okA := r.get(row, colSSHAES)
		d, _ := r.get(row, colDirect)
		ratio, ratioText := math.NaN(), "–"
		if okP && okA && a != 0 {
			ratio = p / a
			ratioText = fmt.Sprintf("%.2fx", ratio)
		}
		if row == rowConn50 && okP && d > 0 {
			ratioText += fmt.Sprintf(" (%.2fx direct)", p/d)
		}
		tgt, met := "", ""
		if t, ok := targets[row]; ok && okP {
			tgt, met = t.text, "no"
			if t.met(ratio, p, d) {
				met = "yes"
			}
		}
		q, okQ := r.get(row, colQUIC)
		quicText := "–"
		if okQ && okA && a != 0 {
			quicText = fmt.Sprintf("%.2fx", q/a)
		}
		if row == rowConn50 && okQ && d > 0 {
			quicText += fmt.Sprintf(" (%.2fx direct)", q/d)
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", row, strings.Join(cells, " | "), ratioText, quicText, tgt, met)
	}
	if len(r.notes) > 0 {
		fmt.Fprintf(w, "\nNotes:\n\n")
		for _, n := range r.notes {
			fmt.Fprintf(w, "- %s\n", n)
		}
	}
	if r.profile != "" {
		fmt.Fprintf(w, "\nCPU profile (perf, 1-stream run):\n\n```\n%s```\n", r.profile)
	}
}

func format(v float64) string {
	switch a := math.Abs(v); {
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// commandLine is how this run was started, with go run's temporary binary
// shown as the go run command.
func commandLine() string {
	prog := os.Args[0]
	if strings.Contains(prog, "go-build") {
		prog = "go run ./bench/cmd/tunnelbench"
	}
	return strings.Join(append([]string{prog}, os.Args[1:]...), " ")
}
