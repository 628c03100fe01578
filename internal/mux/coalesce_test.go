package mux

import (
	"bytes"
	"encoding/binary"
	"io"
	"testing"

	"golang.org/x/crypto/ssh"
)

// recordChannel is an ssh.Channel that records each Write as one packet.
type recordChannel struct {
	ssh.Channel
	writes [][]byte
	keep   bool
}

func (c *recordChannel) Write(b []byte) (int, error) {
	if c.keep {
		c.writes = append(c.writes, bytes.Clone(b))
	}
	return len(b), nil
}

func yamuxHeader(typ byte, flags uint16, id, length uint32) []byte {
	h := make([]byte, yamuxHeaderSize)
	h[1] = typ
	binary.BigEndian.PutUint16(h[2:], flags)
	binary.BigEndian.PutUint32(h[4:], id)
	binary.BigEndian.PutUint32(h[8:], length)
	return h
}

func TestFrameWriter(t *testing.T) {
	const typeWindowUpdate, typePing = 1, 2
	body := func(n int) []byte { return bytes.Repeat([]byte{0xab}, n) }
	big := body(100 << 10)
	head := sshMaxPayload - yamuxHeaderSize
	tests := []struct {
		name   string
		writes [][]byte
		want   [][]byte // what reaches the channel, one slice per Channel.Write
	}{{
		name:   "data frame is one write",
		writes: [][]byte{yamuxHeader(0, 0, 1, 64), body(64)},
		want:   [][]byte{append(yamuxHeader(0, 0, 1, 64), body(64)...)},
	}, {
		name:   "full splice buffer fits one packet",
		writes: [][]byte{yamuxHeader(0, 0, 1, uint32(spliceBufSize)), body(spliceBufSize)},
		want:   [][]byte{append(yamuxHeader(0, 0, 1, uint32(spliceBufSize)), body(spliceBufSize)...)},
	}, {
		name:   "non-data frames go out at once",
		writes: [][]byte{yamuxHeader(typeWindowUpdate, 0, 1, 4096), yamuxHeader(typePing, 1, 0, 7)},
		want:   [][]byte{yamuxHeader(typeWindowUpdate, 0, 1, 4096), yamuxHeader(typePing, 1, 0, 7)},
	}, {
		name:   "data header without body goes out at once",
		writes: [][]byte{yamuxHeader(0, 4, 3, 0), yamuxHeader(typeWindowUpdate, 0, 3, 1)},
		want:   [][]byte{yamuxHeader(0, 4, 3, 0), yamuxHeader(typeWindowUpdate, 0, 3, 1)},
	}, {
		name: "order kept across frames",
		writes: [][]byte{
			yamuxHeader(0, 1, 5, 3), []byte("abc"), yamuxHeader(typeWindowUpdate, 0, 5, 9),
			yamuxHeader(0, 0, 7, 2), []byte("de"),
		},
		want: [][]byte{
			append(yamuxHeader(0, 1, 5, 3), "abc"...), yamuxHeader(typeWindowUpdate, 0, 5, 9),
			append(yamuxHeader(0, 0, 7, 2), "de"...),
		},
	}, {
		name:   "body larger than a packet: header with its head, then the rest in packets",
		writes: [][]byte{yamuxHeader(0, 0, 1, uint32(len(big))), big},
		want: [][]byte{append(yamuxHeader(0, 0, 1, uint32(len(big))), big[:head]...),
			big[head : head+sshMaxPayload], big[head+sshMaxPayload : head+2*sshMaxPayload], big[head+2*sshMaxPayload:]},
	}, {
		name:   "header followed by a non-body write: both go out as they are",
		writes: [][]byte{yamuxHeader(0, 0, 1, 10), yamuxHeader(typePing, 0, 0, 1)},
		want:   [][]byte{yamuxHeader(0, 0, 1, 10), yamuxHeader(typePing, 0, 0, 1)},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ch := &recordChannel{keep: true}
			w := &frameWriter{ch: ch}
			var in []byte
			for _, b := range tt.writes {
				if n, err := w.Write(b); n != len(b) || err != nil {
					t.Fatalf("Write(%d bytes) = %d, %v, want %d, nil", len(b), n, err, len(b))
				}
				in = append(in, b...)
			}
			if len(ch.writes) != len(tt.want) {
				t.Fatalf("got %d channel writes, want %d", len(ch.writes), len(tt.want))
			}
			for i := range tt.want {
				if !bytes.Equal(ch.writes[i], tt.want[i]) {
					t.Errorf("channel write %d: got %d bytes %x..., want %d bytes %x...", i,
						len(ch.writes[i]), ch.writes[i][:min(16, len(ch.writes[i]))], len(tt.want[i]), tt.want[i][:min(16, len(tt.want[i]))])
				}
			}
			if got := bytes.Join(ch.writes, nil); !bytes.Equal(got, in) {
				t.Error("bytes on the channel differ from the bytes written")
			}
		})
	}
}

// TestFrameWriterPaced: on a slow link the pacer's smaller packets cut a
// bulk frame into pieces, so that another lane's frame waits for one small
// packet, not for a whole frame.
func TestFrameWriterPaced(t *testing.T) {
	p := newPacer(nil, nil)
	p.packet.Store(minPacket)
	ch := &recordChannel{keep: true}
	w := &frameWriter{ch: ch, pace: p}
	body := bytes.Repeat([]byte{0xcd}, spliceBufSize)
	w.Write(yamuxHeader(0, 0, 1, uint32(len(body))))
	if n, err := w.Write(body); n != len(body) || err != nil {
		t.Fatalf("Write(body) = %d, %v, want %d, nil", n, err, len(body))
	}
	for i, b := range ch.writes {
		if len(b) > minPacket {
			t.Errorf("channel write %d: got %d bytes, want at most %d", i, len(b), minPacket)
		}
	}
	if got, want := len(bytes.Join(ch.writes, nil)), yamuxHeaderSize+len(body); got != want {
		t.Errorf("got %d bytes on the channel, want %d", got, want)
	}
}

func TestFrameWriterNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items at random under the race detector")
	}
	w := &frameWriter{ch: &recordChannel{}}
	hdr, body := yamuxHeader(0, 0, 1, uint32(spliceBufSize)), make([]byte, spliceBufSize)
	w.Write(hdr) // warm the pool
	w.Write(body)
	if n := testing.AllocsPerRun(100, func() {
		w.Write(hdr)
		w.Write(body)
	}); n != 0 {
		t.Errorf("got %v allocs per data frame, want 0", n)
	}
}

var _ io.Writer = (*frameWriter)(nil)
