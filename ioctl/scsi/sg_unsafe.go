package scsi

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sgIoHdr is struct sg_io_hdr from <scsi/sg.h> (88 bytes on 64-bit). The three buffer
// pointers are unsafe.Pointer, not integers, so the garbage collector sees them.
type sgIoHdr struct {
	InterfaceID    int32          // 0: 'S'
	DxferDirection int32          // 4
	CmdLen         uint8          // 8
	MxSbLen        uint8          // 9
	IovecCount     uint16         // 10
	DxferLen       uint32         // 12
	Dxferp         unsafe.Pointer // 16
	Cmdp           unsafe.Pointer // 24
	Sbp            unsafe.Pointer // 32
	Timeout        uint32         // 40: milliseconds
	Flags          uint32         // 44
	PackID         int32          // 48
	_              [4]byte        // 52: padding before the pointer
	UsrPtr         unsafe.Pointer // 56
	Status         uint8          // 64
	MaskedStatus   uint8          // 65
	MsgStatus      uint8          // 66
	SbLenWr        uint8          // 67
	HostStatus     uint16         // 68
	DriverStatus   uint16         // 70
	Resid          int32          // 72
	Duration       uint32         // 76
	Info           uint32         // 80
	_              [4]byte        // 84: tail padding to 88
}

const (
	sgIO         = 0x2285 // SG_IO, not size-encoded
	sgInfoOKMask = 0x1
	driverSense  = 0x08
	senseBufLen  = 252
)

// Direction of the data phase (SG_DXFER_*).
type Direction int32

const (
	DirNone       Direction = -1
	DirToDevice   Direction = -2
	DirFromDevice Direction = -3
)

// Device is an open SCSI block or generic device.
type Device struct {
	f    *os.File
	Path string
}

// Open opens path for SG_IO (root: CAP_SYS_RAWIO passes the kernel's command filter).
func Open(path string) (*Device, error) { return open(path, os.O_RDWR) }

// OpenRead opens path read-only for SG_IO: enough for root (CAP_SYS_RAWIO passes the
// kernel's command filter whatever the open mode) to ask a device about itself, and the only
// way to ask one that is write protected (sd refuses to open it for writing).
func OpenRead(path string) (*Device, error) { return open(path, os.O_RDONLY) }

func open(path string, mode int) (*Device, error) {
	f, err := os.OpenFile(path, mode|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	return &Device{f: f, Path: path}, nil
}

// Close closes the device.
func (d *Device) Close() error { return d.f.Close() }

// Exec sends cdb with data in direction dir. The timeout is the command's own (Timeout),
// shortened by the context's deadline; SG_IO cannot be interrupted once issued. It returns
// the residual byte count.
func (d *Device) Exec(ctx context.Context, cdb []byte, dir Direction, data []byte) (int, error) {
	if len(cdb) == 0 || len(cdb) > 16 {
		return 0, fmt.Errorf("CDB of %d bytes", len(cdb))
	}
	timeout, err := Timeout(ctx, cdb)
	if err != nil {
		return 0, err
	}
	sense := make([]byte, senseBufLen)
	h := sgIoHdr{InterfaceID: 'S', DxferDirection: int32(dir), CmdLen: uint8(len(cdb)), MxSbLen: senseBufLen,
		Cmdp: unsafe.Pointer(&cdb[0]), Sbp: unsafe.Pointer(&sense[0]), Timeout: timeout}
	if len(data) > 0 {
		h.DxferLen = uint32(len(data))
		h.Dxferp = unsafe.Pointer(&data[0])
	}
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, d.f.Fd(), sgIO, uintptr(unsafe.Pointer(&h)))
	runtime.KeepAlive(cdb)
	runtime.KeepAlive(sense)
	runtime.KeepAlive(data)
	runtime.KeepAlive(d.f)
	if errno != 0 {
		perr := &os.PathError{Op: "SG_IO " + opName(cdb), Path: d.Path, Err: errno}
		switch errno {
		case unix.ENXIO, unix.ENODEV, unix.ENOTCONN, unix.ESHUTDOWN:
			// The path's device went away (removed, offline transport): another path may
			// still reach the LU.
			return 0, fmt.Errorf("%w: %w", ErrPath, perr)
		}
		return 0, perr
	}
	// ioctl() succeeds even for CHECK CONDITION: the outcome is in the header.
	if h.Info&sgInfoOKMask == 0 && h.Status == StatusGood && h.HostStatus == 0 && h.DriverStatus&^driverSense == 0 {
		return int(h.Resid), nil
	}
	ce := &CommandError{Op: opName(cdb), Status: h.Status, HostStatus: h.HostStatus, DriverStatus: h.DriverStatus}
	if h.SbLenWr > 0 {
		if s, err := ParseSense(sense[:h.SbLenWr]); err == nil {
			ce.Sense = &s
		}
	}
	if ce.Sense == nil && h.Status == StatusGood && h.HostStatus == 0 && h.DriverStatus&^driverSense == 0 {
		return int(h.Resid), nil
	}
	return int(h.Resid), ce
}
