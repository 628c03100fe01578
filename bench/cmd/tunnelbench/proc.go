package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"paradigm/bench/benchkit"
)

// clockTick is USER_HZ, the unit of the times in /proc/PID/stat (100 on
// every Linux architecture Go supports).
const clockTick = 100

// procStat reads a process's parent PID, its CPU seconds (utime+stime plus
// the cutime+cstime of reaped children) and its RSS in KiB.
func procStat(pid int) (ppid int, cpu float64, ok bool) {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, 0, false
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(s[i+1:]) // f[0] is state (field 3)
	if len(f) < 15 {
		return 0, 0, false
	}
	ppid, _ = strconv.Atoi(f[1])
	var ticks float64
	for _, k := range []int{11, 12, 13, 14} { // fields 14-17: utime stime cutime cstime
		v, _ := strconv.ParseFloat(f[k], 64)
		ticks += v
	}
	return ppid, ticks / clockTick, true
}

// tree lists pid and all its descendants.
func tree(pid int) []int {
	if pid == 0 {
		return nil
	}
	children := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pp, _, ok := procStat(p); ok {
			children[pp] = append(children[pp], p)
		}
	}
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

// treeCPU is the CPU seconds used so far by pid's process tree.
func treeCPU(pid int) float64 {
	var sum float64
	for _, p := range tree(pid) {
		if _, cpu, ok := procStat(p); ok {
			sum += cpu
		}
	}
	return sum
}

// treeRSS is VmRSS summed over pid's process tree, in KiB.
func treeRSS(pid int) float64 {
	var sum float64
	for _, p := range tree(pid) {
		sum += benchkit.RSSKiB(p)
	}
	return sum
}
