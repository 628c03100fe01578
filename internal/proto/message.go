package proto

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Version is the control protocol version a playnode sends in Hello. Bump it
// whenever the wire changes incompatibly.
const Version = 1

// MaxMessageSize bounds a control frame's payload. It is checked before the
// payload is allocated, so a peer cannot make us allocate more.
const MaxMessageSize = 64 << 10

// MaxServices bounds the services one playnode may register, and with them
// the portaliases the relay hands out per playnode.
const MaxServices = 64

// headerLen is type (1 byte) plus length (4 bytes).
const headerLen = 5

// MsgType is the first byte of a control frame. The numbers are wire format.
type MsgType uint8

const (
	TypeHello    MsgType = 1 // playnode -> relay, first message on the control stream
	TypeWelcome  MsgType = 2 // relay -> playnode, the current portalias assignments
	TypeRefuse   MsgType = 3 // relay -> playnode, last message before the relay closes
	TypeEnroll   MsgType = 4 // playnode -> relay, before Hello, only from a node holding an enrollment token
	TypeHostKeys MsgType = 5 // relay -> playnode, after Welcome, only if Hello.HostKeys: the relay's next host key
)

func (t MsgType) String() string {
	switch t {
	case TypeHello:
		return "hello"
	case TypeWelcome:
		return "welcome"
	case TypeRefuse:
		return "refuse"
	case TypeEnroll:
		return "enroll"
	case TypeHostKeys:
		return "host-keys"
	}
	return fmt.Sprintf("type %d", uint8(t))
}

// Message is one control message: *Hello, *Welcome, *Refuse or *Enroll.
type Message interface {
	Type() MsgType
}

// Service is one service a playnode offers.
type Service struct {
	Name string `json:"name"`
	// Port is the service's port on the device. It is informational, shown
	// by the relay; the playnode alone decides what it dials.
	Port uint16 `json:"port"`
}

// Hello opens the control stream: who the playnode is and what it offers.
type Hello struct {
	Version  int       `json:"version"`
	Playnode string    `json:"playnode"`
	Services []Service `json:"services"`
	Software string    `json:"software,omitempty"` // free text such as "paradigm-node/1.2", for operators
	// HostKeys says the node takes HostKeys messages; a relay sends none
	// to a node that does not (an older one would end the session).
	HostKeys bool `json:"host_keys,omitempty"`
}

// HostKeys tells a node the relay's next host key(s), in authorized_keys
// form ("ssh-ed25519 AAAA..."), so that it trusts them once the operator
// promotes one: it arrives over the session the node has authenticated,
// so it is as trustworthy as the relay itself. Sent after the Welcome and
// whenever the next key changes; an empty Next says there is none.
type HostKeys struct {
	Next []string `json:"next"`
}

// MaxHostKeys bounds HostKeys.Next.
const MaxHostKeys = 4

// Portalias is the relay port assigned to one service of the playnode.
type Portalias struct {
	Service   string `json:"service"`
	Portalias uint16 `json:"portalias"`
}

// Welcome accepts a Hello, and is sent again whenever the assignments change.
// It always carries the full set, never a delta.
type Welcome struct {
	Version     int         `json:"version"`
	Playnode    string      `json:"playnode"`
	Portaliases []Portalias `json:"portaliases"`
}

// RefuseCode says why the relay refused or ended a session, so a playnode
// can decide whether to retry. Unknown codes must be treated as final.
type RefuseCode string

const (
	RefuseVersion  RefuseCode = "version"  // Hello.Version is not Version
	RefuseName     RefuseCode = "name"     // playnode name not bound to this key
	RefuseServices RefuseCode = "services" // invalid, too many or duplicate services
	RefusePorts    RefuseCode = "ports"    // portalias range exhausted
	RefuseReplaced RefuseCode = "replaced" // a newer session of this playnode took over
	RefuseRevoked  RefuseCode = "revoked"  // the key was revoked
	RefuseShutdown RefuseCode = "shutdown" // the relay is stopping
	RefuseProtocol RefuseCode = "protocol" // the playnode broke the protocol

	// Enrollment refusals; the node retries slowly (see Enroll).
	RefuseToken     RefuseCode = "token"      // the token is unknown, expired, used up, or does not admit the name
	RefuseNameTaken RefuseCode = "name-taken" // the name is bound to another key; the token was not used
	RefusePending   RefuseCode = "pending"    // the enrollment waits for the operator's approval
	RefuseRejected  RefuseCode = "rejected"   // the operator rejected this key's enrollment
	RefuseRate      RefuseCode = "rate"       // too many enrollment attempts from this address
)

// EnrollUserSuffix ends the SSH user name (or the QUIC certificate's
// CommonName) of a node that holds an enrollment token: NAME+enroll. A relay
// that does not know the node's key accepts the key only for such a user,
// and then expects an Enroll before the Hello. '+' is not allowed in names,
// so the suffix cannot be part of one.
const EnrollUserSuffix = "+enroll"

// MeshUser is the SSH user name a relay of a cluster authenticates with
// when it dials another relay of the same cluster (the relay mesh), with
// its own host key. '+' is not allowed in names, so no playnode has it.
const MeshUser = "relay+mesh"

// MaxTokenLen bounds Enroll.Token.
const MaxTokenLen = 128

// Enroll asks the relay to bind the session's key to Playnode with an
// enrollment token. A node holding a token sends it before its Hello on
// every connection; a relay that already knows the key ignores it. On
// success the relay says nothing and reads the Hello; otherwise it sends a
// Refuse (RefuseToken, RefuseNameTaken, RefusePending, ...). It travels only
// inside the transport's encryption, after the node verified the relay's
// host key.
type Enroll struct {
	Version  int    `json:"version"`
	Playnode string `json:"playnode"`
	Token    string `json:"token"`
}

// Refuse is the relay's last word before it closes the session. It is an
// error, so a node can return it as is and callers can match it with
// errors.As.
type Refuse struct {
	Code   RefuseCode `json:"code"`
	Reason string     `json:"reason"`
}

func (*Hello) Type() MsgType    { return TypeHello }
func (*Welcome) Type() MsgType  { return TypeWelcome }
func (*Refuse) Type() MsgType   { return TypeRefuse }
func (*Enroll) Type() MsgType   { return TypeEnroll }
func (*HostKeys) Type() MsgType { return TypeHostKeys }

// Validate checks an Enroll before the relay acts on it.
func (e *Enroll) Validate() error {
	if e.Version != Version {
		return fmt.Errorf("enroll version %d, relay speaks version %d", e.Version, Version)
	}
	if err := ValidateName("playnode", e.Playnode); err != nil {
		return err
	}
	if e.Token == "" || len(e.Token) > MaxTokenLen {
		return fmt.Errorf("enrollment token of %d bytes: want 1 to %d", len(e.Token), MaxTokenLen)
	}
	return nil
}

func (r *Refuse) Error() string {
	return fmt.Sprintf("relay refused: %s: %s", r.Code, r.Reason)
}

// Validate checks what the relay must check before acting on a Hello. The
// error words the problem for the Refuse reason.
func (h *Hello) Validate() error {
	if h.Version != Version {
		return fmt.Errorf("hello version %d, relay speaks version %d", h.Version, Version)
	}
	if err := ValidateName("playnode", h.Playnode); err != nil {
		return err
	}
	switch n := len(h.Services); {
	case n == 0:
		return errors.New("hello lists no services")
	case n > MaxServices:
		return fmt.Errorf("hello lists %d services, the limit is %d", n, MaxServices)
	}
	seen := make(map[string]bool, len(h.Services))
	for _, s := range h.Services {
		if err := ValidateName("service", s.Name); err != nil {
			return err
		}
		if seen[s.Name] {
			return fmt.Errorf("service %q listed twice", s.Name)
		}
		seen[s.Name] = true
		if s.Port == 0 {
			return fmt.Errorf("service %q has port 0", s.Name)
		}
	}
	return nil
}

// ErrMessageTooLarge matches (errors.Is) a control frame whose payload is
// over MaxMessageSize, read or written.
var ErrMessageTooLarge = errors.New("control message exceeds size limit")

type sizeError struct{ n uint64 }

func (e sizeError) Error() string {
	return fmt.Sprintf("control message of %d bytes exceeds limit %d", e.n, MaxMessageSize)
}

func (sizeError) Is(target error) bool { return target == ErrMessageTooLarge }

// WriteMessage writes m as one frame in a single Write, so concurrent
// writers serialised by the caller never interleave partial frames.
func WriteMessage(w io.Writer, m Message) error {
	if m == nil {
		return errors.New("write control message: nil message")
	}
	var buf bytes.Buffer
	buf.Write(make([]byte, headerLen))
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(m); err != nil {
		return fmt.Errorf("write control message %s: %w", m.Type(), err)
	}
	buf.Truncate(buf.Len() - 1) // Encode appends a newline
	frame := buf.Bytes()
	n := len(frame) - headerLen
	if n > MaxMessageSize {
		return fmt.Errorf("write control message %s: %w", m.Type(), sizeError{uint64(n)})
	}
	frame[0] = byte(m.Type())
	binary.BigEndian.PutUint32(frame[1:headerLen], uint32(n))
	if _, err := w.Write(frame); err != nil {
		return fmt.Errorf("write control message %s: %w", m.Type(), err)
	}
	return nil
}

// ReadMessage reads one frame. The error wraps io.EOF when r ends cleanly
// between frames and io.ErrUnexpectedEOF when it ends inside one.
func ReadMessage(r io.Reader) (Message, error) {
	var hdr [headerLen]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, fmt.Errorf("read control message: %w", err)
	}
	var m Message
	switch t := MsgType(hdr[0]); t {
	case TypeHello:
		m = new(Hello)
	case TypeWelcome:
		m = new(Welcome)
	case TypeRefuse:
		m = new(Refuse)
	case TypeEnroll:
		m = new(Enroll)
	case TypeHostKeys:
		m = new(HostKeys)
	default:
		return nil, fmt.Errorf("read control message: %s unknown", t)
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > MaxMessageSize {
		return nil, fmt.Errorf("read control message %s: %w", m.Type(), sizeError{uint64(n)})
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("read control message %s: payload of %d bytes: %w", m.Type(), n, err)
	}
	if err := json.Unmarshal(payload, m); err != nil {
		return nil, fmt.Errorf("read control message %s: %w", m.Type(), err)
	}
	return m, nil
}
