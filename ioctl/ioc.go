// Package ioctl is pvesnap's device command layer: ioctl numbers, buffers the kernel may DMA
// into, and the one place system calls with pointers are made. Its subpackages speak SCSI
// (SG_IO), NVMe (passthrough), block-device, device-mapper and ZFS-control ioctls byte for byte.
//
// Encoders and parsers are pure functions over byte slices, tested against layouts written
// from the specifications; only *_unsafe.go files touch unsafe.
package ioctl

// Linux's generic _IOC encoding (x86, arm64, riscv): dir(2) | size(14) | type(8) | nr(8).
const (
	iocNone  = 0
	iocWrite = 1
	iocRead  = 2

	iocNRBits   = 8
	iocTypeBits = 8
	iocSizeBits = 14

	iocNRShift   = 0
	iocTypeShift = iocNRShift + iocNRBits
	iocSizeShift = iocTypeShift + iocTypeBits
	iocDirShift  = iocSizeShift + iocSizeBits
)

// IOC builds an ioctl request number.
func IOC(dir, typ, nr, size uintptr) uintptr {
	return dir<<iocDirShift | typ<<iocTypeShift | nr<<iocNRShift | size<<iocSizeShift
}

// IO is _IO(type, nr).
func IO(typ, nr uintptr) uintptr { return IOC(iocNone, typ, nr, 0) }

// IOR is _IOR(type, nr, size).
func IOR(typ, nr, size uintptr) uintptr { return IOC(iocRead, typ, nr, size) }

// IOW is _IOW(type, nr, size).
func IOW(typ, nr, size uintptr) uintptr { return IOC(iocWrite, typ, nr, size) }

// IOWR is _IOWR(type, nr, size).
func IOWR(typ, nr, size uintptr) uintptr { return IOC(iocRead|iocWrite, typ, nr, size) }
