package store_test

import (
	"path/filepath"
	"testing"
	"time"

	"paradigm/internal/store"
	"paradigm/internal/store/storetest"
)

// TestFileConformance runs the Store suite over the flat file; each Store
// value is another File on the same path, as the relay and the CLI are.
// The poll interval is short so Watch's tests take real milliseconds.
func TestFileConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Open {
		path := filepath.Join(t.TempDir(), "portaliases")
		return func(*testing.T) store.Store {
			return &store.File{Path: path, PollInterval: 10 * time.Millisecond}
		}
	})
}
