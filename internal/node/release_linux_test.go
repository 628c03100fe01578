package node

import (
	"crypto/sha256"
	"fmt"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func TestReadOnlyFileRanges(t *testing.T) {
	const exe = "/opt/paradigm node/paradigm-node"
	smaps := `00400000-00900000 r-xp 00000000 fd:00 12 /opt/paradigm node/paradigm-node
Size:               5120 kB
Rss:                4208 kB
Anonymous:             0 kB
VmFlags: rd ex mr mw me
00900000-00a00000 r--p 00500000 fd:00 12 /opt/paradigm node/paradigm-node
Size:               1024 kB
Anonymous:             8 kB
VmFlags: rd mr mw me
00a00000-00b00000 r--p 00600000 fd:00 12 /opt/paradigm node/paradigm-node
Size:               1024 kB
Anonymous:             0 kB
00b00000-00b40000 rw-p 00700000 fd:00 12 /opt/paradigm node/paradigm-node
Anonymous:             0 kB
00b40000-00b50000 rw-p 00000000 00:00 0
Anonymous:            64 kB
7f0000000000-7f0000100000 r-xp 00000000 fd:00 99 /usr/lib/libc.so.6
Anonymous:             0 kB
7f0000200000-7f0000300000 r--s 00000000 fd:00 12 /opt/paradigm node/paradigm-node
Anonymous:             0 kB
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
Anonymous:           132 kB
`
	got, err := readOnlyFileRanges(strings.NewReader(smaps), exe)
	if err != nil {
		t.Fatal(err)
	}
	want := [][2]uintptr{{0x400000, 0x900000}, {0xa00000, 0xb00000}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %#x, want %#x", got, want)
	}
	if got, _ := readOnlyFileRanges(strings.NewReader("garbage\n-\nzz-yy r-xp 0 0 0 "+exe+"\nab r-xp 0 0 0 "+exe+"\n0-1 r-x\n"), exe); len(got) != 0 {
		t.Fatalf("from bad input got %#x, want none", got)
	}
}

// TestReadOnlyFileRangesAllocs: the idle node reads its smaps now and then;
// what it allocates stays garbage until the next collection, minutes later.
func TestReadOnlyFileRangesAllocs(t *testing.T) {
	smaps, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	r := strings.NewReader("")
	allocs := testing.AllocsPerRun(20, func() {
		r.Reset(string(smaps))
		if _, err := readOnlyFileRanges(r, exe); err != nil {
			t.Fatal(err)
		}
	})
	// The scanner, its buffer and the result; not one per line.
	if lines := strings.Count(string(smaps), "\n"); allocs > 10 {
		t.Fatalf("%.0f allocations for %d lines of smaps", allocs, lines)
	}
}

// TestReleaseExecutablePages drops the test binary's own read-only pages,
// then runs code that start-up did not run: it must work, and the process's
// file-backed resident set must have shrunk.
func TestReleaseExecutablePages(t *testing.T) {
	before := rssFileKiB(t)
	released, err := releaseExecutablePages()
	if err != nil {
		t.Fatal(err)
	}
	after := rssFileKiB(t)
	if released == 0 || after >= before {
		t.Fatalf("released %d bytes; RssFile %d KiB before, %d KiB after", released, before, after)
	}
	sum := sha256.Sum256([]byte(fmt.Sprintf("%d %x %v", released, before, t.Name())))
	if fmt.Sprintf("%x", sum) == "" {
		t.Fatal("no digest")
	}
	t.Logf("released %d KiB of mappings; RssFile %d -> %d KiB", released>>10, before, after)
}

func rssFileKiB(t *testing.T) int {
	t.Helper()
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "RssFile:"); ok {
			n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			if err != nil {
				t.Fatalf("RssFile line %q: %v", line, err)
			}
			return n
		}
	}
	t.Fatal("no RssFile in /proc/self/status")
	return 0
}
