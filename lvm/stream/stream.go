// Package stream carries the contents of a block device (an LV) from one node to another as
// a stream that skips zero ranges: a header with the device's size, then data and zero frames
// in order, covering the device exactly once, then an end frame. A reader can tell a complete
// stream from one that broke off, and never has to allocate more than MaxData for a frame.
//
// Layout (integers big-endian):
//
//	header  "PVESNAPB" | version uint32 (1) | reserved uint32 | size uint64
//	frame   kind byte ('D' data, 'Z' zeros, 'E' end) | 7 reserved bytes | offset uint64 | length uint64
//	        a data frame is followed by its length bytes; an end frame has offset = size, length 0
package stream

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

const (
	magic      = "PVESNAPB"
	version    = 1
	headerSize = 24
	frameSize  = 24
	// MaxData is the largest data frame: a reader's buffer for one frame.
	MaxData = 4 << 20
	// MaxZeroRun is the longest zero range held back before its frame is written. Zero
	// ranges are merged to save frames, but a receiver hears nothing while a range grows:
	// over a long empty stretch of a volume (GiBs of a thin LV) that silence outlasts the
	// inactivity timeout of the receiving daemon's HTTP server (5 s, pveproxy's). A frame
	// per 64 MiB is 24 bytes in 64 MiB, and at least a frame a second from any reader of
	// more than 64 MiB/s.
	MaxZeroRun = 64 << 20
)

// Frame kinds.
const (
	Data = 'D'
	Zero = 'Z'
	End  = 'E'
)

// Frame is one frame's header.
type Frame struct {
	Kind   byte
	Offset int64
	Length int64
}

// Writer writes a stream.
type Writer struct {
	w    io.Writer
	size int64
	next int64 // the offset the next frame must start at
	zero Frame // a zero range not written yet (consecutive ones are merged)
	hdr  [frameSize]byte
}

// NewWriter writes the header of a stream of a device of size bytes.
func NewWriter(w io.Writer, size int64) (*Writer, error) {
	if size < 0 {
		return nil, fmt.Errorf("stream: size %d", size)
	}
	var h [headerSize]byte
	copy(h[:], magic)
	binary.BigEndian.PutUint32(h[8:], version)
	binary.BigEndian.PutUint64(h[16:], uint64(size))
	if _, err := w.Write(h[:]); err != nil {
		return nil, err
	}
	return &Writer{w: w, size: size}, nil
}

func (s *Writer) check(off, n int64) error {
	if off != s.next+s.zero.Length || n <= 0 || off+n > s.size {
		return fmt.Errorf("stream: range %d+%d out of order (next %d, size %d)", off, n, s.next+s.zero.Length, s.size)
	}
	return nil
}

func (s *Writer) frame(kind byte, off, n int64) error {
	s.hdr = [frameSize]byte{kind}
	binary.BigEndian.PutUint64(s.hdr[8:], uint64(off))
	binary.BigEndian.PutUint64(s.hdr[16:], uint64(n))
	_, err := s.w.Write(s.hdr[:])
	return err
}

func (s *Writer) flushZero() error {
	if s.zero.Length == 0 {
		return nil
	}
	z := s.zero
	s.zero = Frame{}
	s.next = z.Offset + z.Length
	return s.frame(Zero, z.Offset, z.Length)
}

// Data writes the bytes at off (the next offset of the stream); at most MaxData at once.
func (s *Writer) Data(off int64, b []byte) error {
	n := int64(len(b))
	if err := s.check(off, n); err != nil {
		return err
	}
	if n > MaxData {
		return fmt.Errorf("stream: data frame of %d bytes, at most %d", n, MaxData)
	}
	if err := s.flushZero(); err != nil {
		return err
	}
	if err := s.frame(Data, off, n); err != nil {
		return err
	}
	if _, err := s.w.Write(b); err != nil {
		return err
	}
	s.next = off + n
	return nil
}

// Zero records that n bytes at off read as zeros; nothing of them is sent but a frame for
// each run of them (at most MaxZeroRun long before it is written).
func (s *Writer) Zero(off, n int64) error {
	if err := s.check(off, n); err != nil {
		return err
	}
	if s.zero.Length == 0 {
		s.zero.Offset = off
	}
	s.zero.Length += n
	if s.zero.Length >= MaxZeroRun {
		return s.flushZero()
	}
	return nil
}

// Close writes the end frame; the stream must have covered the whole device.
func (s *Writer) Close() error {
	if err := s.flushZero(); err != nil {
		return err
	}
	if s.next != s.size {
		return fmt.Errorf("stream: ends at %d of %d bytes", s.next, s.size)
	}
	return s.frame(End, s.size, 0)
}

// ErrTruncated is a stream that ended before its end frame.
var ErrTruncated = errors.New("the stream ended before its end (truncated)")

// Reader reads a stream and checks it as it goes: frames in order, within the device,
// covering it exactly once.
type Reader struct {
	r    io.Reader
	Size int64
	next int64
	left int64 // bytes of the current data frame not read yet
	done bool
	hdr  [frameSize]byte
}

// NewReader reads and checks the header.
func NewReader(r io.Reader) (*Reader, error) {
	var h [headerSize]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, truncated(err)
	}
	if string(h[:8]) != magic {
		return nil, errors.New("stream: not a pvesnap block stream")
	}
	if v := binary.BigEndian.Uint32(h[8:]); v != version {
		return nil, fmt.Errorf("stream: version %d, this pvesnap reads version %d", v, version)
	}
	size := int64(binary.BigEndian.Uint64(h[16:]))
	if size < 0 {
		return nil, fmt.Errorf("stream: size %d", size)
	}
	return &Reader{r: r, Size: size}, nil
}

func truncated(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return ErrTruncated
	}
	return err
}

// Next returns the next frame. After a data frame, ReadData must read all of its bytes
// before Next is called again. After the end frame, Next returns io.EOF.
func (s *Reader) Next() (Frame, error) {
	if s.done {
		return Frame{}, io.EOF
	}
	if s.left > 0 {
		return Frame{}, fmt.Errorf("stream: %d bytes of the data frame not read", s.left)
	}
	if _, err := io.ReadFull(s.r, s.hdr[:]); err != nil {
		return Frame{}, truncated(err)
	}
	f := Frame{Kind: s.hdr[0], Offset: int64(binary.BigEndian.Uint64(s.hdr[8:])), Length: int64(binary.BigEndian.Uint64(s.hdr[16:]))}
	switch f.Kind {
	case End:
		if f.Offset != s.Size || f.Length != 0 || s.next != s.Size {
			return Frame{}, fmt.Errorf("stream: end frame at %d after %d of %d bytes", f.Offset, s.next, s.Size)
		}
		s.done = true
		return f, nil
	case Data, Zero:
	default:
		return Frame{}, fmt.Errorf("stream: unknown frame kind %q", f.Kind)
	}
	if f.Offset != s.next || f.Length <= 0 || f.Length > s.Size-f.Offset {
		return Frame{}, fmt.Errorf("stream: frame %c %d+%d out of order (next %d, size %d)", f.Kind, f.Offset, f.Length, s.next, s.Size)
	}
	if f.Kind == Data {
		if f.Length > MaxData {
			return Frame{}, fmt.Errorf("stream: data frame of %d bytes, at most %d", f.Length, MaxData)
		}
		s.left = f.Length
	}
	s.next = f.Offset + f.Length
	return f, nil
}

// ReadData reads the current data frame's bytes into b (len(b) must be the frame's length).
func (s *Reader) ReadData(b []byte) error {
	if int64(len(b)) != s.left {
		return fmt.Errorf("stream: read of %d bytes for a data frame of %d", len(b), s.left)
	}
	if _, err := io.ReadFull(s.r, b); err != nil {
		return truncated(err)
	}
	s.left = 0
	return nil
}
