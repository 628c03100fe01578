package relay

import (
	"os"
	"path/filepath"
	"testing"
)

func TestEphemeralOverlap(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ip_local_port_range")
	for _, tc := range []struct {
		file      string
		low, high uint16
		overlap   bool
		bad       bool
	}{
		{"32768\t60999\n", 20000, 29999, false, false},
		{"32768\t60999\n", 20000, 40000, true, false},
		{"32768 60999", 60999, 65000, true, false},
		{"10000 20000", 20000, 29999, true, false},
		{"10000 19999", 20000, 29999, false, false},
		{"garbage", 20000, 29999, false, true},
		{"5 4", 20000, 29999, false, true},
	} {
		if err := os.WriteFile(path, []byte(tc.file), 0o644); err != nil {
			t.Fatal(err)
		}
		_, _, overlap, err := ephemeralOverlap(path, tc.low, tc.high)
		if overlap != tc.overlap || (err != nil) != tc.bad {
			t.Errorf("%q vs %d-%d: overlap %v, err %v; want %v, error %v", tc.file, tc.low, tc.high, overlap, err, tc.overlap, tc.bad)
		}
	}
}
