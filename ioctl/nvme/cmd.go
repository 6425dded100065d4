// Package nvme issues NVMe admin and I/O commands through the Linux passthrough ioctls:
// Identify, Get/Set Features (Host Behavior Support), Copy (descriptor formats 0h-3h) and
// Flush. Fields are little-endian; NLB, NR and MSRC are 0-based, MSSRL and MCL are not.
package nvme

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/pvesnap/pvesnap/ioctl"
)

// Admin opcodes.
const (
	AdminIdentify    = 0x06
	AdminSetFeatures = 0x09
	AdminGetFeatures = 0x0A
)

// I/O opcodes.
const (
	IOFlush = 0x00
	IOCopy  = 0x19 // bit 0 set: host-to-controller data (the source range descriptors)
)

// Time one command may take before the kernel aborts it (and resets the controller): a Copy
// moves up to MCL blocks inside the device, the others are short. 0 would mean the driver's
// default (30 s for I/O, 60 s for admin commands).
const (
	copyTimeout    = 600 * time.Second
	commandTimeout = 60 * time.Second
)

// Timeout is the passthrough timeout in milliseconds for c: its own time (ioctl.Timeout).
func Timeout(ctx context.Context, c Command) (uint32, error) {
	own := commandTimeout
	if c.Opcode == IOCopy {
		own = copyTimeout
	}
	return ioctl.Timeout(ctx, own)
}

// Command is an NVMe submission as struct nvme_passthru_cmd64 (linux/nvme_ioctl.h) carries
// it. Data is attached separately (it must be an ioctl.Buffer the GC cannot move).
type Command struct {
	Opcode      uint8
	Flags       uint8 // must be 0: the kernel refuses anything else
	NSID        uint32
	CDW2, CDW3  uint32
	Metadata    uint64
	MetadataLen uint32
	CDW10       uint32
	CDW11       uint32
	CDW12       uint32
	CDW13       uint32
	CDW14       uint32
	CDW15       uint32
	TimeoutMs   uint32
}

// Sizes of the kernel structures.
const (
	passthruLen   = 72 // struct nvme_passthru_cmd (32-bit result)
	passthru64Len = 80 // struct nvme_passthru_cmd64
)

// marshal lays the command out; addr and dataLen describe the data buffer.
func (c *Command) marshal(size int, addr uint64, dataLen uint32) []byte {
	b := make([]byte, size)
	b[0] = c.Opcode
	b[1] = c.Flags
	binary.LittleEndian.PutUint32(b[4:], c.NSID)
	binary.LittleEndian.PutUint32(b[8:], c.CDW2)
	binary.LittleEndian.PutUint32(b[12:], c.CDW3)
	binary.LittleEndian.PutUint64(b[16:], c.Metadata)
	binary.LittleEndian.PutUint64(b[24:], addr)
	binary.LittleEndian.PutUint32(b[32:], c.MetadataLen)
	binary.LittleEndian.PutUint32(b[36:], dataLen)
	binary.LittleEndian.PutUint32(b[40:], c.CDW10)
	binary.LittleEndian.PutUint32(b[44:], c.CDW11)
	binary.LittleEndian.PutUint32(b[48:], c.CDW12)
	binary.LittleEndian.PutUint32(b[52:], c.CDW13)
	binary.LittleEndian.PutUint32(b[56:], c.CDW14)
	binary.LittleEndian.PutUint32(b[60:], c.CDW15)
	binary.LittleEndian.PutUint32(b[64:], c.TimeoutMs)
	return b
}

// result reads the completion's DW0 (and DW1 for the 64-bit variant) back from the structure.
func result(b []byte) uint64 {
	if len(b) == passthru64Len {
		return binary.LittleEndian.Uint64(b[72:])
	}
	return uint64(binary.LittleEndian.Uint32(b[68:]))
}

// Status is the NVMe status field the passthrough ioctl returns as a positive value: SC in
// bits 7:0, SCT in 10:8, CRD in 12:11, More in 13, DNR in 14.
type Status uint16

// Status code types.
const (
	SCTGeneric         = 0
	SCTCommandSpecific = 1
	SCTMediaError      = 2
	SCTPath            = 3
)

func (s Status) SC() uint8    { return uint8(s) }
func (s Status) SCT() uint8   { return uint8(s>>8) & 0x7 }
func (s Status) DNR() bool    { return s&0x4000 != 0 }
func (s Status) More() bool   { return s&0x2000 != 0 }
func (s Status) CRD() uint8   { return uint8(s>>11) & 0x3 }
func (s Status) Code() uint16 { return uint16(s) & 0x7ff }

var statusNames = map[uint16]string{
	0x000: "Successful Completion",
	0x001: "Invalid Command Opcode",
	0x002: "Invalid Field in Command",
	0x004: "Data Transfer Error",
	0x006: "Internal Error",
	0x007: "Command Abort Requested",
	0x008: "Command Aborted due to SQ Deletion",
	0x00B: "Invalid Namespace or Format",
	0x00C: "Command Sequence Error",
	0x080: "LBA Out of Range",
	0x081: "Capacity Exceeded",
	0x082: "Namespace Not Ready",
	0x10A: "Invalid Format",
	0x10D: "Feature Identifier Not Saveable",
	0x10E: "Feature Not Changeable",
	0x10F: "Feature Not Namespace Specific",
	0x183: "Command Size Limit Exceeded",
	0x185: "Incompatible Namespace or Format",
	0x186: "Fast Copy Not Possible",
	0x187: "Overlapping I/O Range",
	0x189: "Insufficient Resources",
	0x280: "Write Fault",
	0x281: "Unrecovered Read Error",
	0x300: "Internal Path Error",
	0x301: "Asymmetric Access Persistent Loss",
	0x302: "Asymmetric Access Inaccessible",
	0x303: "Asymmetric Access Transition",
	0x360: "Controller Pathing Error",
	0x370: "Host Pathing Error",
	0x371: "Command Aborted By Host",
}

func (s Status) String() string {
	name := statusNames[s.Code()]
	if name == "" {
		name = fmt.Sprintf("SCT %d SC 0x%02x", s.SCT(), s.SC())
	}
	dnr := ""
	if s.DNR() {
		dnr = ", DNR"
	}
	return fmt.Sprintf("%s (0x%04x%s)", name, uint16(s), dnr)
}

// Errors to classify failures with errors.Is.
var (
	// ErrNotSupported: the controller does not implement the command or this form of it
	// (invalid opcode, invalid field such as a descriptor format not enabled, invalid format).
	ErrNotSupported = errors.New("not supported by the controller")
	// ErrIncompatible: a cross-namespace copy between namespaces that cannot copy to each other.
	ErrIncompatible = errors.New("namespaces incompatible for copy")
	// ErrKernelRefuses: the kernel refused the passthrough command (EACCES), as kernels from
	// 6.12.110 do for Set Features on driver-managed features such as Host Behavior Support.
	ErrKernelRefuses = errors.New("refused by the kernel")
	// ErrPath: the command failed on its path (path-related status, SCT 3) or found no path
	// at all (a native-multipath head with every controller down); another path, or the
	// same after a while, may serve it.
	ErrPath = errors.New("path failure")
)

// StatusError is a command the controller completed with an error status.
type StatusError struct {
	Op     string
	Status Status
	Result uint64 // DW0: for Copy, the index of the first range not completed
}

func (e *StatusError) Error() string { return fmt.Sprintf("%s failed: %s", e.Op, e.Status) }

// Is classifies the status.
func (e *StatusError) Is(target error) bool {
	switch target {
	case ErrNotSupported:
		switch e.Status.Code() {
		case 0x001, 0x002, 0x10A, 0x186:
			return true
		}
	case ErrIncompatible:
		return e.Status.Code() == 0x185
	case ErrPath:
		return e.Path()
	}
	return false
}

// Permanent reports whether retrying cannot help (DNR set).
func (e *StatusError) Permanent() bool { return e.Status.DNR() }

// Retryable reports whether the controller allows the same command again (DNR clear): a
// path-related status, an internal error, an abort, a namespace not ready yet.
func (e *StatusError) Retryable() bool { return !e.Status.DNR() }

// Path reports a path-related status (SCT 3): another path or a retry may succeed.
func (e *StatusError) Path() bool { return e.Status.SCT() == SCTPath }
