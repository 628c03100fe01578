//go:build !linux

package node

// releaseExecutablePagesPaced does nothing outside Linux.
func releaseExecutablePagesPaced() (int, error) { return 0, nil }
