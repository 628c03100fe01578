package node

import (
	"bufio"
	"bytes"
	"io"
	"os"
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
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return 0, err
	}
	ranges, err := readOnlyFileRanges(f, exe)
	f.Close()
	if err != nil {
		return 0, err
	}
	released := 0
	for _, r := range ranges {
		if _, _, e := syscall.Syscall(syscall.SYS_MADVISE, r[0], r[1]-r[0], syscall.MADV_DONTNEED); e != 0 {
			return released, e
		}
		released += int(r[1] - r[0])
	}
	return released, nil
}

// readOnlyFileRanges lists the [start, end) address ranges of the private,
// non-writable mappings of file in /proc/PID/smaps. A mapping that holds
// anonymous pages (a private copy: relocations written before the range was
// made read-only, as in a position-independent executable) is left out,
// since dropping its pages would lose what was written; so is every mapping
// that is writable. It reads line by line without allocating per line: the
// idle node calls it, and its garbage would wait minutes for a collection.
func readOnlyFileRanges(smaps io.Reader, file string) ([][2]uintptr, error) {
	var out [][2]uintptr
	keep := false // whether the mapping being read qualifies so far
	var cur [2]uintptr
	sc := bufio.NewScanner(smaps)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 {
			continue
		}
		if c := line[0]; '0' <= c && c <= '9' || 'a' <= c && c <= 'f' {
			// A mapping's header: START-END PERMS OFFSET DEV INODE [PATH];
			// the other lines start with a capitalised key.
			if keep {
				out = append(out, cur)
			}
			keep = false
			var addrs, perms []byte
			addrs, line = nextField(line)
			perms, line = nextField(line)
			for range 3 { // offset, device, inode
				_, line = nextField(line)
			}
			lo, hi, ok := bytes.Cut(addrs, []byte("-"))
			start, ok1 := parseHex(lo)
			end, ok2 := parseHex(hi)
			keep = ok && ok1 && ok2 && end > start &&
				len(perms) == 4 && perms[1] == '-' && perms[3] == 'p' &&
				string(bytes.TrimSpace(line)) == file
			cur = [2]uintptr{uintptr(start), uintptr(end)}
			continue
		}
		if rest, ok := bytes.CutPrefix(line, []byte("Anonymous:")); ok {
			if n, _ := nextField(rest); string(n) != "0" {
				keep = false
			}
		}
	}
	if keep {
		out = append(out, cur)
	}
	return out, sc.Err()
}

// parseHex parses a hexadecimal address.
func parseHex(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 16 {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		default:
			return 0, false
		}
		v = v<<4 | uint64(c)
	}
	return v, true
}

// nextField splits the first space-separated field off b.
func nextField(b []byte) (field, rest []byte) {
	b = bytes.TrimLeft(b, " \t")
	if i := bytes.IndexAny(b, " \t"); i >= 0 {
		return b[:i], b[i:]
	}
	return b, nil
}
