package node

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"paradigm/internal/identity"
)

// ErrHostKey marks a relay whose host key does not verify; retrying will not
// help until the operator fixes the pin or known_hosts.
var ErrHostKey = errors.New("relay host key not trusted")

// hostKeyCallback verifies the relay against the pinned fingerprint or the
// known_hosts file, recording the first key seen when trust-on-first-use is
// on. Each relay is looked up under its configured HOST:PORT (the hostname
// argument, SSHClientConfig.Addr), not the resolved address, so a relay
// whose IP changes keeps verifying and each of several relays is checked
// under its own name; a pinned fingerprint is trusted for any of them.
func hostKeyCallback(cfg *Config, log *slog.Logger) ssh.HostKeyCallback {
	var mu sync.Mutex // serialises first-use recording
	pins := slices.Clone(cfg.Fingerprints)
	if cfg.Fingerprint != "" && !slices.Contains(pins, cfg.Fingerprint) {
		pins = append(pins, cfg.Fingerprint)
	}
	return func(relay string, remote net.Addr, key ssh.PublicKey) error {
		fp := identity.Fingerprint(key)
		if learnedHostKey(cfg, relay, remote, key) { // rotation.go
			return nil
		}
		if len(pins) > 0 {
			if !slices.Contains(pins, fp) {
				return fmt.Errorf("%w: relay %s presented %s, the pinned fingerprint is %s", ErrHostKey, relay, fp, strings.Join(pins, " or "))
			}
			return nil
		}
		mu.Lock()
		defer mu.Unlock()
		if _, err := os.Stat(cfg.KnownHosts); errors.Is(err, os.ErrNotExist) && cfg.TrustOnFirstUse {
			return trustFirstUse(cfg, relay, key, log)
		}
		check, err := knownhosts.New(cfg.KnownHosts)
		if err != nil {
			return fmt.Errorf("%w: read known hosts: %v", ErrHostKey, err)
		}
		err = check(knownhosts.Normalize(relay), remote, key)
		var ke *knownhosts.KeyError
		switch {
		case err == nil:
			return nil
		case errors.As(err, &ke) && len(ke.Want) == 0 && cfg.TrustOnFirstUse:
			return trustFirstUse(cfg, relay, key, log)
		case errors.As(err, &ke) && len(ke.Want) > 0:
			return fmt.Errorf("%w: relay %s presented %s, which differs from the key recorded in %s:%d (a changed relay key or an impostor)",
				ErrHostKey, relay, fp, ke.Want[0].Filename, ke.Want[0].Line)
		case errors.As(err, &ke):
			return fmt.Errorf("%w: relay %s (%s) is not in %s", ErrHostKey, relay, fp, cfg.KnownHosts)
		default:
			return fmt.Errorf("%w: %v", ErrHostKey, err)
		}
	}
}

// trustFirstUse appends the relay's key to the known_hosts file.
func trustFirstUse(cfg *Config, relay string, key ssh.PublicKey, log *slog.Logger) error {
	f, err := os.OpenFile(cfg.KnownHosts, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("record relay key: %w", err)
	}
	line := knownhosts.Line([]string{knownhosts.Normalize(relay)}, key) + "\n"
	if _, err := f.WriteString(line); err != nil {
		f.Close()
		return fmt.Errorf("record relay key: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("record relay key: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("record relay key: %w", err)
	}
	log.Warn("trusting relay host key on first use", "relay", relay, "fingerprint", identity.Fingerprint(key), "known_hosts", cfg.KnownHosts)
	return nil
}
