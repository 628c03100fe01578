package relay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"paradigm/internal/identity"
	"paradigm/internal/proto"
	"paradigm/internal/store"
)

// The operator's commands on a data folder, whether or not a relay runs on
// it: cmd/relay parses their flags and calls these.

// Fingerprint returns the relay's host key fingerprint, creating the key
// if there is none yet.
func Fingerprint(dataDir string) (string, error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", fmt.Errorf("create data folder: %w", err)
	}
	key, err := identity.LoadOrCreate(filepath.Join(dataDir, HostKeyFile), "paradigm-relay")
	if err != nil {
		return "", err
	}
	return identity.Fingerprint(key.PublicKey()), nil
}

// AuthorizeNode binds the public key given as a line or a .pub file (arg)
// to playnode, and returns what to tell the operator.
func AuthorizeNode(dataDir, playnode, arg string) (string, error) {
	key, comment, err := identity.ParsePublic(arg)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", fmt.Errorf("create data folder: %w", err)
	}
	err = Authorize(filepath.Join(dataDir, AuthorizedFile), playnode, key, comment)
	if errors.Is(err, ErrAlreadyAuthorized) {
		return err.Error(), nil
	}
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("authorized playnode %s with key %s", playnode, identity.Fingerprint(key)), nil
}

// ParsePortalias parses a portalias argument.
func ParsePortalias(s string) (uint16, error) {
	port, err := strconv.ParseUint(s, 10, 16)
	if err != nil || port == 0 {
		return 0, fmt.Errorf("portalias %q is not a port number (1-65535)", s)
	}
	return uint16(port), nil
}

// aliasChecked, when a test sets it, runs between AliasSet's check that
// the port is free and its commit: a test takes the port there, as another
// program could, to reach the path that puts the old assignment back.
var aliasChecked func(store.Assignment)

// aliasApplyTimeout bounds how long AliasSet waits for a running relay to
// bind the new portalias, beyond the relay's reload interval.
const aliasApplyTimeout = 10 * time.Second

// AliasSet pins or moves a playnode service's portalias. It refuses, and
// changes nothing, a port the relay cannot serve: the relay's own port, a
// port another program holds, or (unless force) a port outside the relay's
// --ports. When a relay runs on the folder, it returns only once the relay
// has bound the new port; if the relay cannot, the old assignment is put
// back and the error says why.
func AliasSet(ctx context.Context, dataDir string, st store.Store, a store.Assignment, force bool) error {
	if err := proto.ValidateName("playnode", a.Playnode); err != nil {
		return err
	}
	if err := proto.ValidateName("service", a.Service); err != nil {
		return err
	}
	info, running := relayInfo(dataDir)
	f, err := portaliasStore(dataDir, st, info)
	if err != nil {
		return err
	}
	if info.ListenPort != 0 && a.Portalias == info.ListenPort {
		return fmt.Errorf("portalias %d is the relay's own port (--listen)", a.Portalias)
	}
	if (a.Portalias < info.PortLow || a.Portalias > info.PortHigh) && !force {
		return fmt.Errorf("portalias %d is outside the relay's --ports %d-%d (add --force to pin it there anyway)", a.Portalias, info.PortLow, info.PortHigh)
	}
	var old uint16
	var had bool
	_, err = f.Update(ctx, func(t *store.Table) error {
		old, had = t.Lookup(a.Playnode, a.Service)
		if owner, taken := t.Owner(a.Portalias); taken {
			if owner == a {
				return nil
			}
			return t.Set(a) // names the owner in its error
		}
		// A port nobody in the table holds must be free on the server.
		ln, err := net.Listen("tcp", bindAddr(info.Bind, a.Portalias))
		if err != nil {
			return fmt.Errorf("portalias %d is in use on this server by another program: %w", a.Portalias, err)
		}
		ln.Close()
		if aliasChecked != nil {
			aliasChecked(a)
		}
		return t.Set(a)
	})
	if err != nil || !running {
		return err
	}
	state, why := waitApplied(ctx, dataDir, a, info.ReloadInterval+aliasApplyTimeout)
	switch state {
	case StateBindFailed:
		_, rerr := f.Update(ctx, func(t *store.Table) error {
			if cur, _ := t.Lookup(a.Playnode, a.Service); cur != a.Portalias {
				return nil // changed again meanwhile: leave it
			}
			if had {
				return t.Set(store.Assignment{Playnode: a.Playnode, Service: a.Service, Portalias: old})
			}
			t.Remove(a.Playnode, a.Service)
			return nil
		})
		return errors.Join(fmt.Errorf("the relay could not bind portalias %d (%s); the old assignment is kept", a.Portalias, why), rerr)
	case "":
		return fmt.Errorf("the relay did not confirm portalias %d within %v; it stays assigned, see the relay's log", a.Portalias, info.ReloadInterval+aliasApplyTimeout)
	}
	return nil
}

// waitApplied polls status.json until the running relay reports a's
// portalias bound or failed, or timeout passes; it returns the state ("" on
// timeout) and the bind error.
func waitApplied(ctx context.Context, dataDir string, a store.Assignment, timeout time.Duration) (state, why string) {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for time.Now().Before(deadline) {
		if doc, err := readStatus(filepath.Join(dataDir, StatusFile)); err == nil {
			if st := doc.Playnodes[a.Playnode]; st != nil && st.Portaliases[a.Service] == a.Portalias {
				if s := st.States[a.Service]; s != "" {
					return s, st.BindErrors[a.Service]
				}
			}
		}
		select {
		case <-ctx.Done():
			return "", ""
		case <-tick.C:
		}
	}
	return "", ""
}

// AliasRemove removes a playnode service's portalias, or all of the
// playnode's when service is empty, and returns how many it removed.
func AliasRemove(ctx context.Context, dataDir string, st store.Store, playnode, service string) (int, error) {
	removed := 0
	info, _ := relayInfo(dataDir)
	f, err := portaliasStore(dataDir, st, info)
	if err != nil {
		return 0, err
	}
	_, err = f.Update(ctx, func(t *store.Table) error {
		if service == "" {
			removed = t.RemovePlaynode(playnode)
		} else if t.Remove(playnode, service) {
			removed = 1
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	if removed == 0 {
		if service == "" {
			return 0, fmt.Errorf("playnode %s has no portalias", playnode)
		}
		return 0, fmt.Errorf("playnode %s has no portalias for service %s", playnode, service)
	}
	return removed, nil
}

// portaliasStore is where the operator's commands change portaliases: st
// (a shared store given with --store), else the data folder's file, unless
// the relay of that folder keeps them in a shared store: the file is then
// only its mirror, and a change there would be lost.
func portaliasStore(dataDir string, st store.Store, info RelayInfo) (store.Store, error) {
	if st != nil {
		return st, nil
	}
	if info.Store != "" {
		return nil, fmt.Errorf("the relay on %s keeps its portaliases in %s (%s is only a copy): give --store %s, with --store-ca, --store-cert and --store-key if it uses TLS",
			dataDir, info.Store, PortaliasFile, info.Store)
	}
	return &store.File{Path: filepath.Join(dataDir, PortaliasFile)}, nil
}

// SharedStoreOf names the shared store (--store) that the relay of
// dataDir keeps its state in, as it recorded in status.json; "" when it
// keeps it in the folder's files.
func SharedStoreOf(dataDir string) string {
	info, _ := relayInfo(dataDir)
	return info.Store
}

// relayInfo is what the relay running on a data folder (or the last one
// that ran) recorded of its settings in status.json, with the defaults for
// what it did not.
func relayInfo(dataDir string) (info RelayInfo, running bool) {
	info = RelayInfo{PortLow: DefaultLowPort, PortHigh: DefaultHiPort, Bind: DefaultBind, ReloadInterval: DefaultReloadInterval}
	if doc, err := readStatus(filepath.Join(dataDir, StatusFile)); err == nil && doc.Relay != nil {
		info = *doc.Relay
	}
	return info, isRunning(dataDir)
}

// AliasPrune removes the stale portaliases of the given playnodes (all when
// none is given): those of services their last hello did not register, as
// the relay recorded it in status.json. A playnode the relay never saw
// keeps everything. It returns what it removed.
func AliasPrune(ctx context.Context, dataDir string, st store.Store, playnodes []string) ([]store.Assignment, error) {
	doc, err := readStatus(filepath.Join(dataDir, StatusFile))
	if err != nil {
		return nil, fmt.Errorf("read the relay's status file (the relay records there what each playnode registered): %w", err)
	}
	info, _ := relayInfo(dataDir)
	f, err := portaliasStore(dataDir, st, info)
	if err != nil {
		return nil, err
	}
	want := map[string]bool{}
	for _, p := range playnodes {
		want[p] = true
	}
	var removed []store.Assignment
	_, err = f.Update(ctx, func(t *store.Table) error {
		removed = removed[:0]
		for _, a := range t.All() {
			st := doc.Playnodes[a.Playnode]
			if len(want) > 0 && !want[a.Playnode] || st == nil || st.Registered == nil || slices.Contains(st.Registered, a.Service) {
				continue
			}
			t.Remove(a.Playnode, a.Service)
			removed = append(removed, a)
		}
		return nil
	})
	return removed, err
}
