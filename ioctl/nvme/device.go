package nvme

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"syscall"

	"github.com/pvesnap/pvesnap/ioctl"
)

// Passthrough ioctl numbers (linux/nvme_ioctl.h).
var (
	ioctlID      = ioctl.IO('N', 0x40)
	ioctlAdmin   = ioctl.IOWR('N', 0x41, passthruLen)
	ioctlIO      = ioctl.IOWR('N', 0x43, passthruLen)
	ioctlAdmin64 = ioctl.IOWR('N', 0x47, passthru64Len)
	ioctlIO64    = ioctl.IOWR('N', 0x48, passthru64Len)
)

// Device is an open NVMe controller (/dev/nvmeX) or namespace (/dev/nvmeXnY, /dev/ngXnY).
type Device struct {
	f    *os.File
	Path string
	// Use32 selects the 32-bit-result ioctls (kernels without the 64-bit ones).
	Use32 bool
}

// Open opens path read-write.
func Open(path string) (*Device, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	return &Device{f: f, Path: path}, nil
}

// Close closes the device.
func (d *Device) Close() error { return d.f.Close() }

// NSID is the namespace id of a namespace node (NVME_IOCTL_ID returns it as the ioctl value).
func (d *Device) NSID() (uint32, error) {
	r, err := ioctl.IoctlNoArg(d.f.Fd(), ioctlID)
	if err != nil {
		return 0, &os.PathError{Op: "NVME_IOCTL_ID", Path: d.Path, Err: err}
	}
	return uint32(r), nil
}

// Admin sends an admin command; data may be nil.
func (d *Device) Admin(ctx context.Context, op string, c Command, data *ioctl.Buffer) (uint64, error) {
	return d.submit(ctx, op, c, data, true)
}

// IO sends an I/O command; data may be nil.
func (d *Device) IO(ctx context.Context, op string, c Command, data *ioctl.Buffer) (uint64, error) {
	return d.submit(ctx, op, c, data, false)
}

func (d *Device) submit(ctx context.Context, op string, c Command, data *ioctl.Buffer, admin bool) (uint64, error) {
	if c.TimeoutMs == 0 {
		t, err := Timeout(ctx, c)
		if err != nil {
			return 0, err
		}
		c.TimeoutMs = t
	}
	var addr uint64
	var n uint32
	if data != nil {
		addr, n = data.Addr(), uint32(len(data.Bytes()))
	}
	size, req := passthru64Len, ioctlIO64
	if admin {
		req = ioctlAdmin64
	}
	if d.Use32 {
		size, req = passthruLen, ioctlIO
		if admin {
			req = ioctlAdmin
		}
	}
	cmd := c.marshal(size, addr, n)
	r, err := ioctl.Ioctl(d.f.Fd(), req, cmd)
	runtime.KeepAlive(data) // its address is in cmd as an integer: keep it mapped through the call
	if errors.Is(err, syscall.ENOTTY) && !d.Use32 {
		d.Use32 = true // kernel without the 64-bit-result variants
		return d.submit(ctx, op, c, data, admin)
	}
	if err != nil {
		perr := &os.PathError{Op: op, Path: d.Path, Err: err}
		switch {
		case errors.Is(err, syscall.EACCES):
			return 0, fmt.Errorf("%s on %s: %w (EACCES)", op, d.Path, ErrKernelRefuses)
		case errors.Is(err, syscall.EWOULDBLOCK), errors.Is(err, syscall.ENODEV), errors.Is(err, syscall.ENXIO),
			errors.Is(err, syscall.ENOTCONN):
			// A multipath head without a usable path (nvme_find_path found none) or a
			// controller going away: a later attempt may find a path again.
			return 0, fmt.Errorf("%w: %w", ErrPath, perr)
		}
		return 0, perr
	}
	res := result(cmd)
	if r != 0 {
		return res, &StatusError{Op: op, Status: Status(r), Result: res}
	}
	return res, nil
}

// identify sends one Identify and returns its 4096 bytes.
func (d *Device) identify(ctx context.Context, op string, cns uint8, nsid uint32) ([]byte, error) {
	buf, err := ioctl.NewBuffer(IdentifyLen)
	if err != nil {
		return nil, err
	}
	defer buf.Free()
	if _, err := d.Admin(ctx, op, IdentifyCommand(cns, nsid, 0), buf); err != nil {
		return nil, err
	}
	return bytes.Clone(buf.Bytes()), nil
}

// IdentifyController reads Identify Controller.
func (d *Device) IdentifyController(ctx context.Context) (*Controller, error) {
	b, err := d.identify(ctx, "Identify Controller", CNSController, 0)
	if err != nil {
		return nil, err
	}
	return ParseController(b)
}

// IdentifyNamespace reads Identify Namespace for nsid only: never a walk over the
// controller's namespaces (an array controller has thousands).
func (d *Device) IdentifyNamespace(ctx context.Context, nsid uint32) (*Namespace, error) {
	b, err := d.identify(ctx, fmt.Sprintf("Identify Namespace %d", nsid), CNSNamespace, nsid)
	if err != nil {
		return nil, err
	}
	return ParseNamespace(b)
}

// IdentifyNVMNamespace reads the NVM command set specific namespace data (PI formats).
func (d *Device) IdentifyNVMNamespace(ctx context.Context, nsid uint32) (NVMNamespace, error) {
	buf, err := ioctl.NewBuffer(IdentifyLen)
	if err != nil {
		return NVMNamespace{}, err
	}
	defer buf.Free()
	if _, err := d.Admin(ctx, "Identify NVM Namespace", IdentifyCommand(CNSNVMNamespace, nsid, 0), buf); err != nil {
		return NVMNamespace{}, err
	}
	return ParseNVMNamespace(buf.Bytes())
}

// HostBehavior reads the current Host Behavior Support structure.
func (d *Device) HostBehavior(ctx context.Context) (HostBehavior, error) {
	buf, err := ioctl.NewBuffer(HostBehaviorLen)
	if err != nil {
		return HostBehavior{}, err
	}
	defer buf.Free()
	if _, err := d.Admin(ctx, "Get Features (Host Behavior Support)", GetFeaturesCommand(FeatureHostBehavior, 0), buf); err != nil {
		return HostBehavior{}, err
	}
	return ParseHostBehavior(buf.Bytes())
}

// EnableCopyFormats sets the CDFE bits of formats in Host Behavior Support with a
// read-modify-write (Set Features replaces all 512 bytes). It is a no-op when they are set.
// Kernels from 6.12.110 refuse the Set Features: the error then matches ErrKernelRefuses.
func (d *Device) EnableCopyFormats(ctx context.Context, formats ...int) error {
	h, err := d.HostBehavior(ctx)
	if err != nil {
		return err
	}
	want := h.CDFE
	for _, f := range formats {
		want |= 1 << f
	}
	if want == h.CDFE {
		return nil
	}
	h.CDFE = want
	buf, err := ioctl.NewBuffer(HostBehaviorLen)
	if err != nil {
		return err
	}
	defer buf.Free()
	copy(buf.Bytes(), h.Marshal())
	_, err = d.Admin(ctx, "Set Features (Host Behavior Support)", SetFeaturesCommand(FeatureHostBehavior, 0), buf)
	return err
}

// Copy sends c to this namespace device (c.NSID must be its own).
func (d *Device) Copy(ctx context.Context, c Copy) error {
	desc, err := EncodeCopyRanges(c.Format, c.Ranges)
	if err != nil {
		return err
	}
	buf, err := ioctl.NewBuffer(len(desc))
	if err != nil {
		return err
	}
	defer buf.Free()
	copy(buf.Bytes(), desc)
	_, err = d.IO(ctx, fmt.Sprintf("Copy (format %dh)", c.Format), c.Command(), buf)
	return err
}

// Flush flushes the namespace's volatile write cache.
func (d *Device) Flush(ctx context.Context, nsid uint32) error {
	_, err := d.IO(ctx, "Flush", FlushCommand(nsid), nil)
	return err
}
