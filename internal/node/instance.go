package node

import (
	"context"
	"errors"

	"paradigm/internal/lockfile"
)

// RunSingle runs the node unless another instance holds lockPath, in which
// case it returns nil at once: the legacy deployment starts the node from
// cron every minute, and a running instance is success, not an error, and
// not worth a line in the cron log every minute unless verbose asks for it.
func (n *Node) RunSingle(ctx context.Context, lockPath string, verbose bool) error {
	lock, err := lockfile.TryAcquire(lockPath)
	if errors.Is(err, lockfile.ErrLocked) {
		if verbose {
			n.log.Info("instance already running", "err", err)
		}
		return nil
	}
	if err != nil {
		return err
	}
	defer lock.Release()
	return n.Run(ctx)
}
