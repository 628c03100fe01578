// Package bench holds paradigm's performance evidence: Go benchmarks of
// forwarding through an in-process relay and node (forward_test.go); in
// cmd/tunnelbench, the side-by-side comparison with OpenSSH reverse
// forwarding and direct loopback TCP; in cmd/shapedbench, a device's
// requests while its shaped link is full; in cmd/clusterbench, three
// relays on one etcd: the mesh hop against the home relay, the failover of
// a killed relay's playnodes and the relays' memory. README.md records
// their results.
package bench
