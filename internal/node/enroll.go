package node

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh"

	"paradigm/internal/identity"
	"paradigm/internal/mux"
	"paradigm/internal/proto"
)

// DefaultMachineIDFile is where {machine-id} is read from.
const DefaultMachineIDFile = "/etc/machine-id"

// NameSources are what a name template may draw on; empty fields are looked
// up on first use (os.Hostname, MachineIDFile, the interfaces).
type NameSources struct {
	Hostname      string
	MachineIDFile string
	MAC           string
}

// ExpandName fills a playnode name template: {hostname}, {machine-id},
// {machine-id:N} (its first N characters) and {mac} (the first non-loopback
// interface's hardware address, without colons). 500 clones of one image
// share a hostname but not a machine id, provided each regenerates
// /etc/machine-id on first boot.
func ExpandName(tmpl string, src NameSources) (string, error) {
	var b strings.Builder
	rest := tmpl
	for {
		i := strings.IndexByte(rest, '{')
		if i < 0 {
			b.WriteString(rest)
			break
		}
		b.WriteString(rest[:i])
		j := strings.IndexByte(rest[i:], '}')
		if j < 0 {
			return "", fmt.Errorf("name template %q: { without }", tmpl)
		}
		v, err := src.value(rest[i+1 : i+j])
		if err != nil {
			return "", fmt.Errorf("name template %q: %w", tmpl, err)
		}
		b.WriteString(v)
		rest = rest[i+j+1:]
	}
	name := b.String()
	if err := proto.ValidateName("playnode", name); err != nil {
		return "", fmt.Errorf("name template %q gives %w", tmpl, err)
	}
	return name, nil
}

func (src NameSources) value(field string) (string, error) {
	key, arg, hasArg := strings.Cut(field, ":")
	var v string
	switch key {
	case "hostname":
		v = src.Hostname
		if v == "" {
			h, err := os.Hostname()
			if err != nil {
				return "", fmt.Errorf("{hostname}: %w", err)
			}
			v = h
		}
		v, _, _ = strings.Cut(v, ".")
	case "machine-id":
		p := src.MachineIDFile
		if p == "" {
			p = DefaultMachineIDFile
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return "", fmt.Errorf("{machine-id}: %w", err)
		}
		v = strings.TrimSpace(string(data))
		if v == "" {
			return "", fmt.Errorf("{machine-id}: %s is empty (a cloned image must regenerate it: systemd-machine-id-setup)", p)
		}
	case "mac":
		v = src.MAC
		if v == "" {
			var err error
			if v, err = primaryMAC(); err != nil {
				return "", err
			}
		}
		v = strings.ReplaceAll(v, ":", "")
	default:
		return "", fmt.Errorf("unknown field {%s} (want {hostname}, {machine-id}, {machine-id:N} or {mac})", field)
	}
	if hasArg {
		if key != "machine-id" {
			return "", fmt.Errorf("{%s}: only {machine-id:N} takes a length", field)
		}
		n, err := strconv.Atoi(arg)
		if err != nil || n < 1 {
			return "", fmt.Errorf("{%s}: want {machine-id:N} with N 1 or more", field)
		}
		v = v[:min(n, len(v))]
	}
	return v, nil
}

// primaryMAC is the hardware address of the first interface, by index, that
// is not loopback and has one.
func primaryMAC() (string, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return "", fmt.Errorf("{mac}: %w", err)
	}
	slices.SortFunc(ifs, func(a, b net.Interface) int { return a.Index - b.Index })
	for _, i := range ifs {
		if i.Flags&net.FlagLoopback == 0 && len(i.HardwareAddr) > 0 {
			return i.HardwareAddr.String(), nil
		}
	}
	return "", errors.New("{mac}: no network interface with a hardware address")
}

// loadOrCreateKey loads the node key, creating it when there is none and
// the node holds an enrollment token. An existing file is never replaced.
func loadOrCreateKey(path string, create bool, comment string) (ssh.Signer, bool, error) {
	key, err := identity.LoadKey(path)
	if err == nil || !create || !errors.Is(err, fs.ErrNotExist) {
		return key, false, err
	}
	key, err = identity.GenerateKey(path, comment)
	if errors.Is(err, fs.ErrExist) { // another instance made it first
		key, err = identity.LoadKey(path)
		return key, false, err
	}
	return key, err == nil, err
}

// enrollUser is the transport user a node sends: NAME, or NAME+enroll when
// it holds an enrollment token.
func (n *Node) enrollUser() string {
	if n.cfg.EnrollToken != "" {
		return n.cfg.Name + proto.EnrollUserSuffix
	}
	return n.cfg.Name
}

// refusedKey stands for a key refused during authentication (no Refuse
// message exists then).
const refusedKey proto.RefuseCode = "unknown-key"

// slowRetry reports whether err is a refusal that waits for the operator
// (unknown token, name taken, pending, rejected, revoked): retrying every
// few seconds would not change it.
func slowRetry(err error) (proto.RefuseCode, bool) {
	if errors.Is(err, mux.ErrKeyRefused) {
		return refusedKey, true
	}
	var r *proto.Refuse
	if !errors.As(err, &r) {
		return "", false
	}
	switch r.Code {
	case proto.RefuseToken, proto.RefuseNameTaken, proto.RefusePending, proto.RefuseRejected, proto.RefuseRate, proto.RefuseRevoked, proto.RefuseName:
		return r.Code, true
	}
	return "", false
}

// refusedHint says in plain words, as log attributes, why the relay
// refuses this node and what its operator can do.
func (n *Node) refusedHint(code proto.RefuseCode) []any {
	fp := identity.Fingerprint(n.key.PublicKey())
	switch code {
	case proto.RefusePending:
		return []any{"hint", "enrollment waits for the relay operator's approval", "key_fingerprint", fp, "on_relay", "paradigm-relay approve " + n.cfg.Name}
	case refusedKey:
		return []any{"hint", "the relay does not know this node's key", "key_fingerprint", fp,
			"on_relay", fmt.Sprintf("paradigm-relay authorize %s '%s'", n.cfg.Name, identity.PublicLine(n.key.PublicKey(), n.cfg.Name))}
	case proto.RefuseRevoked, proto.RefuseName:
		return []any{"hint", "the relay does not accept this key for this playnode", "key_fingerprint", fp,
			"on_relay", fmt.Sprintf("paradigm-relay authorize %s '%s'", n.cfg.Name, identity.PublicLine(n.key.PublicKey(), n.cfg.Name))}
	case proto.RefuseNameTaken:
		return []any{"hint", "another playnode has this name: give this one another --name", "key_fingerprint", fp}
	default:
		return []any{"hint", "enrollment refused: the token is wrong, expired or used up, or this key was rejected", "key_fingerprint", fp}
	}
}
