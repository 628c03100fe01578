package proto

import (
	"fmt"
	"io"
	"sync"
	"unicode/utf8"
)

// StreamVersion is the first byte of every stream header. Bump it whenever
// the stream header or status layout changes.
const StreamVersion = 1

// maxReasonLen bounds a stream status reason: its length travels in one byte.
const maxReasonLen = 255

// scratch is the buffer the stream functions read into and write from. A
// local array would escape to the heap through io.Reader and io.Writer, one
// allocation per forwarded stream; the pool makes the OK path allocation-free.
type scratch = [2 + maxReasonLen]byte

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

// StreamStatus is the playnode's first byte back on a forwarded stream. The
// numbers are wire format.
type StreamStatus uint8

const (
	StatusOK             StreamStatus = 0 // dialled; raw bytes follow
	StatusUnknownService StreamStatus = 1 // the playnode's config has no such service
	StatusDialFailed     StreamStatus = 2 // the local dial failed
	StatusRefused        StreamStatus = 3 // the playnode will not serve it (limits, shutting down)
)

func (s StreamStatus) String() string {
	switch s {
	case StatusOK:
		return "ok"
	case StatusUnknownService:
		return "unknown service"
	case StatusDialFailed:
		return "dial failed"
	case StatusRefused:
		return "refused"
	}
	return fmt.Sprintf("status %d", uint8(s))
}

// StreamError is a non-OK stream status as the relay received it.
type StreamError struct {
	Status StreamStatus
	Reason string
}

func (e *StreamError) Error() string {
	if e.Reason == "" {
		return "service unavailable on playnode: " + e.Status.String()
	}
	return "service unavailable on playnode: " + e.Status.String() + ": " + e.Reason
}

// AppendStreamHeader appends the stream header for service to dst. It is the
// allocation-free form for the relay's per-connection path, so it does not
// validate: service must already satisfy ValidateName, and a name longer than
// 255 bytes, which cannot be encoded, panics.
func AppendStreamHeader(dst []byte, service string) []byte {
	if len(service) > 255 {
		panic("proto: stream header service name longer than 255 bytes")
	}
	dst = append(dst, StreamVersion, byte(len(service)))
	return append(dst, service...)
}

// WriteStreamHeader validates service and writes its stream header in a
// single Write.
func WriteStreamHeader(w io.Writer, service string) error {
	if err := ValidateName("service", service); err != nil {
		return fmt.Errorf("write stream header: %w", err)
	}
	buf := scratchPool.Get().(*scratch)
	defer scratchPool.Put(buf)
	if _, err := w.Write(AppendStreamHeader(buf[:0], service)); err != nil {
		return fmt.Errorf("write stream header: %w", err)
	}
	return nil
}

// ReadStreamHeader reads exactly one stream header and nothing past it, so
// the bytes that follow stay in r for the splice.
func ReadStreamHeader(r io.Reader) (service string, err error) {
	buf := scratchPool.Get().(*scratch)
	defer scratchPool.Put(buf)
	if _, err := io.ReadFull(r, buf[:2]); err != nil {
		return "", fmt.Errorf("read stream header: %w", err)
	}
	if buf[0] != StreamVersion {
		return "", fmt.Errorf("read stream header: version %d unsupported, want %d", buf[0], StreamVersion)
	}
	n := int(buf[1])
	if n == 0 || n > MaxNameLen {
		return "", fmt.Errorf("read stream header: service name length %d out of range 1..%d", n, MaxNameLen)
	}
	if _, err := io.ReadFull(r, buf[2:2+n]); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return "", fmt.Errorf("read stream header: service name: %w", err)
	}
	service = string(buf[2 : 2+n])
	if err := ValidateName("service", service); err != nil {
		return "", fmt.Errorf("read stream header: %w", err)
	}
	return service, nil
}

// WriteStreamStatus writes the playnode's answer in a single Write. The
// reason is dropped for StatusOK and otherwise cut to 255 bytes on a UTF-8
// boundary.
func WriteStreamStatus(w io.Writer, st StreamStatus, reason string) error {
	buf := scratchPool.Get().(*scratch)
	defer scratchPool.Put(buf)
	frame := append(buf[:0], byte(st))
	if st != StatusOK {
		if len(reason) > maxReasonLen {
			cut := maxReasonLen
			for cut > 0 && !utf8.RuneStart(reason[cut]) {
				cut--
			}
			reason = reason[:cut]
		}
		frame = append(frame, byte(len(reason)))
		frame = append(frame, reason...)
	}
	if _, err := w.Write(frame); err != nil {
		return fmt.Errorf("write stream status: %w", err)
	}
	return nil
}

// ReadStreamStatus reads the playnode's answer: nil for StatusOK, else a
// *StreamError. A status number this version does not know is still an
// error carrying that number, so a newer playnode's refusal stays a refusal.
func ReadStreamStatus(r io.Reader) error {
	buf := scratchPool.Get().(*scratch)
	defer scratchPool.Put(buf)
	if _, err := io.ReadFull(r, buf[:1]); err != nil {
		return fmt.Errorf("read stream status: %w", err)
	}
	st := StreamStatus(buf[0])
	if st == StatusOK {
		return nil
	}
	if _, err := io.ReadFull(r, buf[:1]); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("read stream status %s: reason length: %w", st, err)
	}
	n := int(buf[0])
	if _, err := io.ReadFull(r, buf[:n]); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("read stream status %s: reason: %w", st, err)
	}
	return &StreamError{Status: st, Reason: string(buf[:n])}
}
