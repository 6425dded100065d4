package stream

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
)

// sample is a stream of a 10-byte device: data, two zero ranges (merged into one frame),
// data.
func sample() ([]byte, error) {
	var b bytes.Buffer
	w, err := NewWriter(&b, 10)
	if err != nil {
		return nil, err
	}
	err = errors.Join(w.Data(0, []byte("abc")), w.Zero(3, 2), w.Zero(5, 3), w.Data(8, []byte("yz")), w.Close())
	return b.Bytes(), err
}

func write(t *testing.T) []byte {
	t.Helper()
	b, err := sample()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestLayout(t *testing.T) {
	got := write(t)
	var want []byte
	want = append(want, "PVESNAPB"...)
	want = binary.BigEndian.AppendUint32(want, 1)
	want = binary.BigEndian.AppendUint32(want, 0)
	want = binary.BigEndian.AppendUint64(want, 10)
	frame := func(k byte, off, n uint64) {
		want = append(want, k, 0, 0, 0, 0, 0, 0, 0)
		want = binary.BigEndian.AppendUint64(want, off)
		want = binary.BigEndian.AppendUint64(want, n)
	}
	frame('D', 0, 3)
	want = append(want, "abc"...)
	frame('Z', 3, 5) // the two zero ranges, merged
	frame('D', 8, 2)
	want = append(want, "yz"...)
	frame('E', 10, 0)
	if !bytes.Equal(got, want) {
		t.Fatalf("stream\n% x\nwant\n% x", got, want)
	}
}

func TestRoundTrip(t *testing.T) {
	r, err := NewReader(bytes.NewReader(write(t)))
	if err != nil || r.Size != 10 {
		t.Fatal(r, err)
	}
	dev := bytes.Repeat([]byte{'?'}, 10)
	for {
		f, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		switch f.Kind {
		case Data:
			if err := r.ReadData(dev[f.Offset : f.Offset+f.Length]); err != nil {
				t.Fatal(err)
			}
		case Zero:
			copy(dev[f.Offset:], make([]byte, f.Length))
		}
	}
	if want := "abc\x00\x00\x00\x00\x00yz"; string(dev) != want {
		t.Fatalf("device %q, want %q", dev, want)
	}
}

// Every prefix of a stream is refused as truncated: a stream that breaks off never passes
// for a whole one.
func TestTruncatedAtEveryByte(t *testing.T) {
	full := write(t)
	for n := 0; n < len(full); n++ {
		err := drain(full[:n])
		if !errors.Is(err, ErrTruncated) {
			t.Fatalf("a stream cut at %d of %d bytes: %v", n, len(full), err)
		}
	}
	if err := drain(full); err != nil {
		t.Fatalf("the whole stream: %v", err)
	}
}

func drain(b []byte) error {
	r, err := NewReader(bytes.NewReader(b))
	if err != nil {
		return err
	}
	buf := make([]byte, MaxData)
	for {
		f, err := r.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if f.Kind == Data {
			if err := r.ReadData(buf[:f.Length]); err != nil {
				return err
			}
		}
	}
}

// A reader refuses frames a correct writer never makes: out of order, overlapping, beyond
// the device, larger than MaxData, an end before the device is covered.
func TestReaderRefuses(t *testing.T) {
	head := func(size uint64) []byte {
		b := append([]byte("PVESNAPB"), 0, 0, 0, 1, 0, 0, 0, 0)
		return binary.BigEndian.AppendUint64(b, size)
	}
	frame := func(b []byte, k byte, off, n uint64) []byte {
		b = append(b, k, 0, 0, 0, 0, 0, 0, 0)
		b = binary.BigEndian.AppendUint64(b, off)
		return binary.BigEndian.AppendUint64(b, n)
	}
	for name, c := range map[string]struct {
		b    []byte
		want string
	}{
		"gap":        {frame(head(10), 'Z', 2, 8), "out of order"},
		"beyond":     {frame(head(10), 'Z', 0, 11), "out of order"},
		"empty":      {frame(head(10), 'Z', 0, 0), "out of order"},
		"huge":       {frame(head(1<<40), 'D', 0, MaxData+1), "at most"},
		"early end":  {frame(frame(head(10), 'Z', 0, 4), 'E', 10, 0), "end frame"},
		"kind":       {frame(head(10), 'X', 0, 10), "unknown frame kind"},
		"magic":      {append([]byte("NOTMAGIC"), head(1)[8:]...), "not a pvesnap block stream"},
		"version":    {append(append([]byte("PVESNAPB"), 0, 0, 0, 2), make([]byte, 12)...), "version 2"},
		"wraparound": {frame(frame(head(10), 'Z', 0, 5), 'Z', 5, 1<<63), "out of order"},
	} {
		err := drain(c.b)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
	}
}

func TestWriterRefuses(t *testing.T) {
	w, _ := NewWriter(io.Discard, 10)
	if err := w.Data(1, []byte("x")); err == nil {
		t.Error("a frame that skips a range was written")
	}
	if err := w.Zero(0, 11); err == nil {
		t.Error("a range beyond the device was written")
	}
	if err := w.Close(); err == nil {
		t.Error("a stream that does not cover the device was closed")
	}
	big, _ := NewWriter(io.Discard, 2*MaxData)
	if err := big.Data(0, make([]byte, MaxData+1)); err == nil {
		t.Error("a data frame over MaxData was written")
	}
}

func FuzzReader(f *testing.F) {
	seed, _ := sample()
	f.Add(seed)
	// Whatever the bytes, what the reader accepts covers the device exactly once, in order,
	// in frames within the device and MaxData; and nothing is accepted past a bad frame.
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := NewReader(bytes.NewReader(b))
		if err != nil {
			return
		}
		buf := make([]byte, MaxData)
		var next int64
		for {
			fr, err := r.Next()
			if errors.Is(err, io.EOF) {
				t.Fatal("EOF before the end frame")
			}
			if err != nil {
				return
			}
			if fr.Kind == End {
				if next != r.Size {
					t.Fatalf("end frame after %d of %d bytes", next, r.Size)
				}
				if _, err := r.Next(); !errors.Is(err, io.EOF) {
					t.Fatalf("after the end frame: %v", err)
				}
				return
			}
			if fr.Offset != next || fr.Length <= 0 || fr.Offset+fr.Length > r.Size || (fr.Kind == Data && fr.Length > MaxData) {
				t.Fatalf("accepted frame %+v at %d of %d", fr, next, r.Size)
			}
			next += fr.Length
			if fr.Kind == Data {
				if err := r.ReadData(buf[:fr.Length]); err != nil {
					return
				}
			}
		}
	})
}

// A long zero range is not held back whole: a receiver hears a frame at least every
// MaxZeroRun bytes of it, so an empty stretch of GiBs never looks like a silent sender to the
// receiving daemon's inactivity timeout. The frames still cover it once, in order.
func TestLongZeroRunIsSentInPieces(t *testing.T) {
	const size = 5*MaxZeroRun/2 + 1<<20 // 2.5 runs of zeros, then 1 MiB of data
	var b bytes.Buffer
	w, err := NewWriter(&b, size)
	if err != nil {
		t.Fatal(err)
	}
	heard := []int{} // stream bytes written after each MiB read
	for off := int64(0); off < size-1<<20; off += 1 << 20 {
		if err := w.Zero(off, 1<<20); err != nil {
			t.Fatal(err)
		}
		heard = append(heard, b.Len())
	}
	if err := errors.Join(w.Data(size-1<<20, bytes.Repeat([]byte{1}, 1<<20)), w.Close()); err != nil {
		t.Fatal(err)
	}
	// Silence (no new byte) lasts at most MaxZeroRun/1 MiB reads.
	longest, run := 0, 0
	for i := 1; i < len(heard); i++ {
		if heard[i] == heard[i-1] {
			run++
		} else {
			run = 0
		}
		longest = max(longest, run)
	}
	if longest >= MaxZeroRun>>20 {
		t.Errorf("%d MiB of zeros read without a byte written (at most %d)", longest, MaxZeroRun>>20-1)
	}
	r, err := NewReader(&b)
	if err != nil {
		t.Fatal(err)
	}
	var zeroFrames int
	var next int64
	for {
		f, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if f.Offset != next {
			t.Fatalf("frame at %d, want %d", f.Offset, next)
		}
		next += f.Length
		if f.Kind == Zero {
			zeroFrames++
		} else if err := r.ReadData(make([]byte, f.Length)); err != nil {
			t.Fatal(err)
		}
	}
	if next != size || zeroFrames != 3 {
		t.Errorf("covered %d of %d bytes with %d zero frames, want all with 3", next, size, zeroFrames)
	}
}
