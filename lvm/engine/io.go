package engine

import (
	"context"
	"os"
	"time"

	"github.com/pvesnap/pvesnap/ioctl"
	"github.com/pvesnap/pvesnap/ioctl/blk"
	"github.com/pvesnap/pvesnap/ioctl/dm"
	"github.com/pvesnap/pvesnap/ioctl/nvme"
	"github.com/pvesnap/pvesnap/ioctl/scsi"
)

// nvmeDevice is an open NVMe namespace (a *nvme.Device).
type nvmeDevice interface {
	Copy(ctx context.Context, c nvme.Copy) error
	Flush(ctx context.Context, nsid uint32) error
	Close() error
}

// devIO is how the engine reaches devices beyond reading and writing its two endpoints: the
// real ioctls (sysIO), or fakes in tests that decide what each command answers.
type devIO interface {
	identify(ctx context.Context, roots Roots, d dm.Dev) *Device
	openSCSI(path string) (SCSIDevice, error)
	openNVMe(path string) (nvmeDevice, error)
	// dropCache writes back and drops a block device's page cache (BLKFLSBUF).
	dropCache(f *os.File) error
	// zeroOut zeroes a range of a block device (BLKZEROOUT).
	zeroOut(f *os.File, off, n int64) error
	// fsync makes what was written to f durable (on a block device: the device's cache flush).
	fsync(f *os.File) error
	// pause waits d (or less when ctx ends); fakes return at once.
	pause(ctx context.Context, d time.Duration) error
}

type sysIO struct{}

func (sysIO) identify(ctx context.Context, roots Roots, d dm.Dev) *Device {
	return Identify(ctx, roots, d)
}

func (sysIO) openSCSI(path string) (SCSIDevice, error) { return scsi.Open(path) }

func (sysIO) openNVMe(path string) (nvmeDevice, error) { return nvme.Open(path) }

func (sysIO) dropCache(f *os.File) error { return blk.FlushBuffers(f) }

func (sysIO) zeroOut(f *os.File, off, n int64) error { return blk.ZeroOut(f, off, n) }

func (sysIO) fsync(f *os.File) error { return f.Sync() }

func (sysIO) pause(ctx context.Context, d time.Duration) error { return ioctl.Sleep(ctx, d) }
