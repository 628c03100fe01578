//go:build !linux

package node

// releaseExecutablePages does nothing outside Linux.
func releaseExecutablePages() (int, error) { return 0, nil }
