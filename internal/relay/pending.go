package relay

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"paradigm/internal/identity"
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
// a running relay (both under PendingFile.lock, or in etcd: see Site).
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
	err := eachLine(data, name, func(lineNo int, text string) error {
		key, _, options, _, err := ssh.ParseAuthorizedKey([]byte(text))
		if err != nil {
			return err
		}
		p := PendingNode{key: key, Fingerprint: identity.Fingerprint(key)}
		for _, opt := range options {
			k, v, ok := strings.Cut(opt, "=")
			if !ok || len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
				return fmt.Errorf("option %q: want key=\"value\"", opt)
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
					return fmt.Errorf("at: %v", err)
				}
			case "state":
				p.State = v
			default:
				return fmt.Errorf("unknown option %q", k)
			}
		}
		if err := proto.ValidateName("playnode", p.Playnode); err != nil {
			return err
		}
		if p.State != StatePending && p.State != StateRejected {
			return fmt.Errorf("state %q: want pending or rejected", p.State)
		}
		out = append(out, p)
		return nil
	})
	if err != nil {
		return nil, err
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

// updatePending runs fn on the pending list of d, writing the result
// when fn says so; fn may run more than once.
func updatePending(d store.Docs, fn func([]PendingNode) ([]PendingNode, bool, error)) error {
	ctx, cancel := docCtx()
	defer cancel()
	return d.Update(ctx, []string{PendingFile}, func(cur map[string][]byte) (map[string][]byte, error) {
		ps, err := parsePending(cur[PendingFile], d.Where(PendingFile))
		if err != nil {
			return nil, err
		}
		ps, write, err := fn(ps)
		if err != nil || !write {
			return nil, err
		}
		return map[string][]byte{PendingFile: marshalPending(ps)}, nil
	})
}

func readPending(d store.Docs) ([]PendingNode, error) {
	ctx, cancel := docCtx()
	defer cancel()
	data, err := d.Read(ctx, PendingFile)
	if err != nil {
		return nil, fmt.Errorf("read pending nodes: %w", err)
	}
	return parsePending(data, d.Where(PendingFile))
}

// ListPending returns the pending and rejected enrollments of dataDir: the
// flat-file form of Site.ListPending.
func ListPending(dataDir string) ([]PendingNode, error) { return Site{DataDir: dataDir}.ListPending() }

// ListPending returns the pending and rejected enrollments.
func (s Site) ListPending() ([]PendingNode, error) { return readPending(s.docs()) }

// ApprovePending approves name's enrollment in dataDir: the flat-file form
// of Site.ApprovePending.
func ApprovePending(dataDir, name string) (string, error) {
	return Site{DataDir: dataDir}.ApprovePending(name)
}

// ApprovePending moves name's pending enrollment to the authorized nodes,
// in one update of both; a running relay admits the node at its next
// attempt.
func (s Site) ApprovePending(name string) (string, error) {
	d := s.docs()
	ctx, cancel := docCtx()
	defer cancel()
	var msg string
	err := d.Update(ctx, []string{PendingFile, AuthorizedFile}, func(cur map[string][]byte) (map[string][]byte, error) {
		ps, err := parsePending(cur[PendingFile], d.Where(PendingFile))
		if err != nil {
			return nil, err
		}
		for i, p := range ps {
			if p.Playnode != name || p.State != StatePending {
				continue
			}
			comment := fmt.Sprintf("%s enrolled with token %s from %s at %s, approved %s", name, p.Token, p.From,
				p.At.UTC().Format(time.RFC3339), time.Now().UTC().Format(time.RFC3339))
			auth, err := addAuthorized(cur[AuthorizedFile], d.Where(AuthorizedFile), name, p.key, comment)
			if err != nil {
				return nil, err
			}
			msg = fmt.Sprintf("approved %s (key %s)", name, p.Fingerprint)
			return map[string][]byte{PendingFile: marshalPending(slices.Delete(ps, i, i+1)), AuthorizedFile: auth}, nil
		}
		return nil, fmt.Errorf("%w for playnode %q (see paradigm-relay pending)", ErrNotPending, name)
	})
	return msg, err
}

// ErrNotPending is wrapped by ApprovePending and RejectPending when no
// enrollment of that name waits for approval.
var ErrNotPending = errors.New("no pending enrollment")

// RejectPending rejects name's enrollment in dataDir: the flat-file form of
// Site.RejectPending.
func RejectPending(dataDir, name string) (string, error) {
	return Site{DataDir: dataDir}.RejectPending(name)
}

// RejectPending marks name's pending enrollment rejected: that key is
// refused from then on (code rejected) until its line is deleted.
func (s Site) RejectPending(name string) (string, error) {
	var msg string
	err := updatePending(s.docs(), func(ps []PendingNode) ([]PendingNode, bool, error) {
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

// pendingOf returns key's entry in ps, if any.
func pendingOf(ps []PendingNode, key ssh.PublicKey) *PendingNode {
	k := string(key.Marshal())
	for i := range ps {
		if string(ps[i].key.Marshal()) == k {
			return &ps[i]
		}
	}
	return nil
}

// rejectKey returns ps with key marked rejected (revoke), so that the
// device's enrollment token cannot bind it again.
func rejectKey(ps []PendingNode, name string, key ssh.PublicKey, now time.Time) []PendingNode {
	if p := pendingOf(ps, key); p != nil {
		p.State = StateRejected
		return ps
	}
	return append(ps, PendingNode{Playnode: name, Token: "revoked", From: "-", At: now, State: StateRejected, key: key})
}
