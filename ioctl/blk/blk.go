// Package blk wraps the block-device ioctls pvesnap needs: size and block sizes, flushing the
// page cache (the array writes behind the kernel's back), zeroing and discarding ranges.
package blk

import (
	"encoding/binary"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/pvesnap/pvesnap/ioctl"
)

// Size is BLKGETSIZE64: the device size in bytes.
func Size(f *os.File) (int64, error) {
	b := make([]byte, 8)
	if _, err := ioctl.Ioctl(f.Fd(), unix.BLKGETSIZE64, b); err != nil {
		return 0, &os.PathError{Op: "BLKGETSIZE64", Path: f.Name(), Err: err}
	}
	return int64(binary.NativeEndian.Uint64(b)), nil
}

// LogicalBlockSize is BLKSSZGET.
func LogicalBlockSize(f *os.File) (int, error) {
	n, err := unix.IoctlGetInt(int(f.Fd()), unix.BLKSSZGET)
	if err != nil {
		return 0, &os.PathError{Op: "BLKSSZGET", Path: f.Name(), Err: err}
	}
	return n, nil
}

// PhysicalBlockSize is BLKPBSZGET.
func PhysicalBlockSize(f *os.File) (int, error) {
	n, err := unix.IoctlGetUint32(int(f.Fd()), unix.BLKPBSZGET)
	if err != nil {
		return 0, &os.PathError{Op: "BLKPBSZGET", Path: f.Name(), Err: err}
	}
	return int(n), nil
}

// FlushBuffers is BLKFLSBUF: write back and drop the device's page cache, so data the array
// copied behind the kernel's back is read fresh.
func FlushBuffers(f *os.File) error {
	if _, err := ioctl.IoctlNoArg(f.Fd(), unix.BLKFLSBUF); err != nil {
		return &os.PathError{Op: "BLKFLSBUF", Path: f.Name(), Err: err}
	}
	return nil
}

func rangeArg(off, length int64) ([]byte, error) {
	if off < 0 || length <= 0 {
		return nil, fmt.Errorf("bad range %d+%d", off, length)
	}
	b := make([]byte, 16)
	binary.NativeEndian.PutUint64(b[0:], uint64(off))
	binary.NativeEndian.PutUint64(b[8:], uint64(length))
	return b, nil
}

// ZeroOut is BLKZEROOUT: the range reads as zeroes afterwards (the device may do it without
// data transfer). Offsets and lengths must be multiples of the logical block size.
func ZeroOut(f *os.File, off, length int64) error {
	b, err := rangeArg(off, length)
	if err != nil {
		return err
	}
	if _, err := ioctl.Ioctl(f.Fd(), unix.BLKZEROOUT, b); err != nil {
		return &os.PathError{Op: "BLKZEROOUT", Path: f.Name(), Err: err}
	}
	return nil
}

// Discard is BLKDISCARD.
func Discard(f *os.File, off, length int64) error {
	b, err := rangeArg(off, length)
	if err != nil {
		return err
	}
	if _, err := ioctl.Ioctl(f.Fd(), unix.BLKDISCARD, b); err != nil {
		return &os.PathError{Op: "BLKDISCARD", Path: f.Name(), Err: err}
	}
	return nil
}
