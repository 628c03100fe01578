package relay

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"paradigm/internal/identity"
	"paradigm/internal/lockfile"
	"paradigm/internal/proto"
	"paradigm/internal/store"
)

// PendingFile holds the enrollments waiting for the operator (tokens made
// with --approve) and the keys the operator rejected, in authorized_keys
// syntax:
//
//	playnode="signage-3f9a",token="3f9a1c2e",from="203.0.113.7",at="2026-11-29T03:00:00Z",state="pending" ssh-ed25519 AAAA...
//
// The relay appends to it; paradigm-relay approve and reject edit it beside
// a running relay (both under PendingFile.lock).
const PendingFile = "pending_nodes"

// DefaultMaxPending is Config.MaxPending's default: the entries of the
// pending file (pending and rejected); once full, further enrollments that
// need approval are refused (code rate) until the operator approves,
// rejects or deletes some.
const DefaultMaxPending = 1000

const pendingHeader = `# paradigm-relay enrollments waiting for approval (state="pending") and
# rejected keys (state="rejected"). Use paradigm-relay approve NAME / reject NAME;
# deleting a rejected line lets that key ask again.
`

// Pending states.
const (
	StatePending  = "pending"
	StateRejected = "rejected"
)

// PendingNode is one line of the pending file.
type PendingNode struct {
	Playnode    string    `json:"playnode"`
	Fingerprint string    `json:"fingerprint"`
	Token       string    `json:"token"` // the token's id
	From        string    `json:"from"`
	At          time.Time `json:"at"`
	State       string    `json:"state"`
	key         ssh.PublicKey
}

func (p *PendingNode) format() string {
	return fmt.Sprintf("playnode=%q,token=%q,from=%q,at=%q,state=%q %s", p.Playnode, p.Token, p.From,
		p.At.UTC().Format(time.RFC3339), p.State, identity.PublicLine(p.key, p.Playnode))
}

func parsePending(data []byte, name string) ([]PendingNode, error) {
	var out []PendingNode
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	for lineNo := 1; sc.Scan(); lineNo++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || text[0] == '#' {
			continue
		}
		key, _, options, _, err := ssh.ParseAuthorizedKey([]byte(text))
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %v", name, lineNo, err)
		}
		p := PendingNode{key: key, Fingerprint: identity.Fingerprint(key)}
		for _, opt := range options {
			k, v, ok := strings.Cut(opt, "=")
			if !ok || len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
				return nil, fmt.Errorf("%s:%d: option %q: want key=\"value\"", name, lineNo, opt)
			}
			v = v[1 : len(v)-1]
			switch k {
			case "playnode":
				p.Playnode = v
			case "token":
				p.Token = v
			case "from":
				p.From = v
			case "at":
				if p.At, err = time.Parse(time.RFC3339, v); err != nil {
					return nil, fmt.Errorf("%s:%d: at: %v", name, lineNo, err)
				}
			case "state":
				p.State = v
			default:
				return nil, fmt.Errorf("%s:%d: unknown option %q", name, lineNo, k)
			}
		}
		if err := proto.ValidateName("playnode", p.Playnode); err != nil {
			return nil, fmt.Errorf("%s:%d: %v", name, lineNo, err)
		}
		if p.State != StatePending && p.State != StateRejected {
			return nil, fmt.Errorf("%s:%d: state %q: want pending or rejected", name, lineNo, p.State)
		}
		out = append(out, p)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return out, nil
}

func marshalPending(ps []PendingNode) []byte {
	var b bytes.Buffer
	b.WriteString(pendingHeader)
	for i := range ps {
		b.WriteString(ps[i].format())
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// updatePending runs fn on the pending file under its lock, writing the
// result atomically when fn says so.
func updatePending(dataDir string, fn func([]PendingNode) ([]PendingNode, bool, error)) error {
	p := filepath.Join(dataDir, PendingFile)
	lock, err := lockfile.AcquireFor(p, "pending nodes")
	if err != nil {
		return err
	}
	defer lock.Release()
	ps, err := readPending(p)
	if err != nil {
		return err
	}
	ps, write, err := fn(ps)
	if err != nil || !write {
		return err
	}
	return store.WriteAtomic(p, marshalPending(ps), 0o644)
}

func readPending(p string) ([]PendingNode, error) {
	data, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read pending nodes: %w", err)
	}
	return parsePending(data, p)
}

// ListPending returns the pending and rejected enrollments of dataDir.
func ListPending(dataDir string) ([]PendingNode, error) {
	return readPending(filepath.Join(dataDir, PendingFile))
}

// ApprovePending moves name's pending enrollment to the authorized-nodes
// file; a running relay admits the node at its next attempt, once it has
// reloaded the file.
func ApprovePending(dataDir, name string) (string, error) {
	var msg string
	err := updatePending(dataDir, func(ps []PendingNode) ([]PendingNode, bool, error) {
		for i, p := range ps {
			if p.Playnode != name || p.State != StatePending {
				continue
			}
			comment := fmt.Sprintf("%s enrolled with token %s from %s at %s, approved %s", name, p.Token, p.From,
				p.At.UTC().Format(time.RFC3339), time.Now().UTC().Format(time.RFC3339))
			if err := Authorize(filepath.Join(dataDir, AuthorizedFile), name, p.key, comment); err != nil {
				return nil, false, err
			}
			msg = fmt.Sprintf("approved %s (key %s)", name, p.Fingerprint)
			return append(ps[:i], ps[i+1:]...), true, nil
		}
		return nil, false, fmt.Errorf("%w for playnode %q (see paradigm-relay pending)", ErrNotPending, name)
	})
	return msg, err
}

// ErrNotPending is wrapped by ApprovePending and RejectPending when no
// enrollment of that name waits for approval.
var ErrNotPending = errors.New("no pending enrollment")

// RejectPending marks name's pending enrollment rejected: that key is
// refused from then on (code rejected) until its line is deleted.
func RejectPending(dataDir, name string) (string, error) {
	var msg string
	err := updatePending(dataDir, func(ps []PendingNode) ([]PendingNode, bool, error) {
		for i := range ps {
			if ps[i].Playnode == name && ps[i].State == StatePending {
				ps[i].State = StateRejected
				msg = fmt.Sprintf("rejected %s (key %s)", name, ps[i].Fingerprint)
				return ps, true, nil
			}
		}
		return nil, false, fmt.Errorf("%w for playnode %q (see paradigm-relay pending)", ErrNotPending, name)
	})
	return msg, err
}

// pendingOf returns key's entry in the pending file, if any.
func pendingOf(dataDir string, key ssh.PublicKey) (*PendingNode, error) {
	ps, err := readPending(filepath.Join(dataDir, PendingFile))
	if err != nil {
		return nil, err
	}
	k := string(key.Marshal())
	for i := range ps {
		if string(ps[i].key.Marshal()) == k {
			return &ps[i], nil
		}
	}
	return nil, nil
}

// rejectKey records key as rejected in the pending file (revoke), so that
// the device's enrollment token cannot bind it again. The caller holds no
// other lock of ours.
func rejectKey(dataDir, name string, key ssh.PublicKey) error {
	return updatePending(dataDir, func(ps []PendingNode) ([]PendingNode, bool, error) {
		k := string(key.Marshal())
		for i := range ps {
			if string(ps[i].key.Marshal()) == k {
				ps[i].State = StateRejected
				return ps, true, nil
			}
		}
		return append(ps, PendingNode{Playnode: name, Token: "revoked", From: "-", At: time.Now(), State: StateRejected, key: key}), true, nil
	})
}
