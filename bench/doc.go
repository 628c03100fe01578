// Package bench holds paradigm's performance evidence: Go benchmarks of
// forwarding through an in-process relay and node (forward_test.go) and, in
// cmd/tunnelbench, the side-by-side comparison with OpenSSH reverse
// forwarding and direct loopback TCP whose results README.md records.
package bench
