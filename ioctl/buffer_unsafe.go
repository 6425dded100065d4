package ioctl

import (
	"fmt"
	"os"
	"runtime"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Buffer is memory outside the Go heap (anonymous mmap): page-aligned, never moved or freed
// by the garbage collector, so its address can sit in an ioctl structure as an integer (NVMe
// passthrough's addr field) and be used for O_DIRECT I/O.
type Buffer struct {
	b []byte
}

var pageSize = os.Getpagesize()

// NewBuffer maps n bytes (rounded up to whole pages), zero-filled.
func NewBuffer(n int) (*Buffer, error) {
	if n <= 0 {
		n = 1
	}
	size := (n + pageSize - 1) / pageSize * pageSize
	b, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("mmap %d bytes: %w", size, err)
	}
	buf := &Buffer{b: b[:n:n]}
	runtime.SetFinalizer(buf, func(x *Buffer) { x.Free() })
	return buf, nil
}

// Bytes is the buffer's memory.
func (b *Buffer) Bytes() []byte { return b.b }

// Addr is the buffer's address for an ioctl structure field.
func (b *Buffer) Addr() uint64 {
	if len(b.b) == 0 {
		return 0
	}
	return uint64(uintptr(unsafe.Pointer(&b.b[0])))
}

// Free unmaps the buffer.
func (b *Buffer) Free() {
	if b.b == nil {
		return
	}
	full := b.b[:cap(b.b)]
	size := (len(full) + pageSize - 1) / pageSize * pageSize
	unix.Munmap(unsafe.Slice(&full[0], size))
	b.b = nil
	runtime.SetFinalizer(b, nil)
}

// Ioctl issues request on fd with arg pointing at the first byte of arg (which must stay
// valid for the call) and returns the raw return value, which some drivers use for data
// (NVMe status, NSID).
func Ioctl(fd uintptr, req uintptr, arg []byte) (uintptr, error) {
	var p unsafe.Pointer
	if len(arg) > 0 {
		p = unsafe.Pointer(&arg[0])
	}
	r1, _, errno := unix.Syscall(unix.SYS_IOCTL, fd, req, uintptr(p))
	runtime.KeepAlive(arg)
	if errno != 0 {
		return r1, errno
	}
	return r1, nil
}

// IoctlNoArg issues a request without argument (NVME_IOCTL_ID).
func IoctlNoArg(fd uintptr, req uintptr) (uintptr, error) {
	r1, _, errno := unix.Syscall(unix.SYS_IOCTL, fd, req, 0)
	if errno != 0 {
		return r1, syscall.Errno(errno)
	}
	return r1, nil
}
