package node

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// lastRelease paces releaseExecutablePagesPaced: the mappings are the
// process's, and a process may run many nodes (the benchmark's simulator
// runs thousands), each releasing when its session comes up.
var lastRelease struct {
	sync.Mutex
	at time.Time // guarded by the mutex
}

// releaseExecutablePagesPaced is releaseExecutablePages at most once a
// second in the process; a call within a second of the last release does
// nothing and returns 0.
func releaseExecutablePagesPaced() (int, error) {
	lastRelease.Lock()
	defer lastRelease.Unlock()
	if !lastRelease.at.IsZero() && time.Since(lastRelease.at) < time.Second {
		return 0, nil
	}
	lastRelease.at = time.Now()
	return releaseExecutablePages()
}

// releaseExecutablePages unmaps from this process the read-only pages of its
// own executable (code, read-only data, the function table), once a session
// is up. On a page fault Linux maps the 64 KiB around the faulting page
// (fault-around), and start-up (package initialisation, flags, key loading,
// the handshake) touches most 64 KiB windows of a Go executable: without
// this the idle node keeps about 8.5 of its 10 MB executable resident while
// it uses under 1 MiB of it. The pages stay in the page cache; the ones the
// node runs again are mapped again by their next use, at the cost of a minor
// fault. It returns how many bytes of mappings it released.
func releaseExecutablePages() (int, error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return 0, err
	}
	smaps, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		return 0, err
	}
	released := 0
	for _, r := range readOnlyFileRanges(smaps, exe) {
		if _, _, e := syscall.Syscall(syscall.SYS_MADVISE, r[0], r[1]-r[0], syscall.MADV_DONTNEED); e != 0 {
			return released, e
		}
		released += int(r[1] - r[0])
	}
	return released, nil
}

// readOnlyFileRanges lists the [start, end) address ranges of the private,
// non-writable mappings of file in the /proc/PID/smaps text. A mapping that
// holds anonymous pages (a private copy: relocations written before the
// range was made read-only, as in a position-independent executable) is left
// out, since dropping its pages would lose what was written; so is every
// mapping that is or was writable by its permissions.
func readOnlyFileRanges(smaps []byte, file string) [][2]uintptr {
	var out [][2]uintptr
	keep := false // whether the mapping being read qualifies so far
	var cur [2]uintptr
	flush := func() {
		if keep {
			out = append(out, cur)
		}
		keep = false
	}
	sc := bufio.NewScanner(bytes.NewReader(smaps))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if lo, hi, ok := strings.Cut(f[0], "-"); ok && !strings.HasSuffix(f[0], ":") {
			// A mapping's header: START-END PERMS OFFSET DEV INODE [PATH].
			flush()
			start, err1 := strconv.ParseUint(lo, 16, 64)
			end, err2 := strconv.ParseUint(hi, 16, 64)
			perms := ""
			if len(f) > 1 {
				perms = f[1]
			}
			keep = err1 == nil && err2 == nil && end > start && len(f) > 5 &&
				strings.Join(f[5:], " ") == file && len(perms) == 4 && perms[1] == '-' && perms[3] == 'p'
			cur = [2]uintptr{uintptr(start), uintptr(end)}
			continue
		}
		if f[0] == "Anonymous:" && len(f) > 1 && f[1] != "0" {
			keep = false
		}
	}
	flush()
	return out
}
