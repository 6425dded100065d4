package zfs

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"syscall"

	"github.com/pvesnap/pvesnap/ioctl"
)

// Dev is an open /dev/zfs. Its calls are independent; it is safe for concurrent use.
type Dev struct {
	f *os.File
	// Who, when set, makes every change leave a line in the pool's history ("zpool
	// history"), "<Who>: zfs snapshot pool/ds@name", as the zfs command logs its command line.
	Who string
}

// Open opens the ZFS control device (normally /dev/zfs).
func Open(path string) (*Dev, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	return &Dev{f: f}, nil
}

// Close closes the device.
func (d *Dev) Close() error { return d.f.Close() }

// Exists reports whether a dataset or snapshot exists (lzc_exists: ZFS_IOC_OBJSET_STATS
// with the name alone, which answers ENOENT for a missing dataset or pool).
func (d *Dev) Exists(name string) (bool, error) {
	err := d.call("exists", iocObjsetStats, name, name, nil, "")
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// Snapshot creates one snapshot, "pool/dataset@name" (lzc_snapshot). The kernel takes it
// in a sync task: it is on disk, consistent, when the call returns.
func (d *Dev) Snapshot(snap string) error { return d.snaps("snapshot", iocSnapshot, snap) }

// Clone creates dataset from the snapshot origin (lzc_clone, without properties: the
// clone inherits them, as with "zfs clone origin dataset").
func (d *Dev) Clone(origin, dataset string) error {
	if _, err := snapshotPool(origin); err != nil {
		return err
	}
	if strings.ContainsAny(dataset, "@%") {
		return fmt.Errorf("zfs clone: %q is not a dataset name", dataset)
	}
	in := new(NVList).String("origin", origin)
	return d.call("clone", iocClone, dataset, dataset, in, "clone "+origin+" "+dataset)
}

// DestroySnapshot destroys one snapshot (lzc_destroy_snaps, not deferred: a snapshot with
// clones is refused with EEXIST, its clones keep their data).
func (d *Dev) DestroySnapshot(snap string) error { return d.snaps("destroy", iocDestroySnaps, snap) }

// snaps issues an ioctl that takes a set of snapshots of one pool, {"snaps": {snap}}, with
// the pool as zc_name; pvesnap always passes one.
func (d *Dev) snaps(op string, req uintptr, snap string) error {
	pool, err := snapshotPool(snap)
	if err != nil {
		return err
	}
	in := new(NVList).List("snaps", new(NVList).Boolean(snap))
	return d.call(op, req, snap, pool, in, op+" "+snap)
}

func snapshotPool(snap string) (string, error) {
	ds, name, ok := strings.Cut(snap, "@")
	if !ok || ds == "" || name == "" || strings.Contains(name, "@") {
		return "", fmt.Errorf("%q is not a snapshot name (dataset@name)", snap)
	}
	pool, _, _ := strings.Cut(ds, "/")
	return pool, nil
}

// call issues one ioctl: zc_name is name, the input nvlist (if any) is packed into memory
// outside the Go heap, and an output buffer is offered so that put_nvlist cannot turn the
// real error into ENOMEM. what names the dataset in errors; history is the command the
// pool's history records when Who is set.
//
// The history line is written with ZFS_IOC_LOG_HISTORY, which takes its pool from the
// previous successful ioctl of the same kernel thread (thread-specific data, as libzfs
// relies on): the goroutine stays on its OS thread for both.
func (d *Dev) call(op string, req uintptr, what, name string, in *NVList, history string) error {
	if d.Who != "" && history != "" {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
	}
	if err := d.ioctl(op, req, what, name, in); err != nil {
		return err
	}
	if d.Who != "" && history != "" {
		// Failing to log changes nothing about the operation, as with libzfs.
		d.ioctl("log_history", iocLogHistory, what, "", new(NVList).String("message", d.Who+": zfs "+history))
	}
	return nil
}

func (d *Dev) ioctl(op string, req uintptr, what, name string, in *NVList) error {
	cmd, err := ioctl.NewBuffer(cmdSize)
	if err != nil {
		return err
	}
	defer cmd.Free()
	var src *ioctl.Buffer
	srcLen := 0
	if in != nil {
		packed, err := in.Pack()
		if err != nil {
			return fmt.Errorf("zfs %s %s: %w", op, what, err)
		}
		if src, err = ioctl.NewBuffer(len(packed)); err != nil {
			return err
		}
		defer src.Free()
		srcLen = copy(src.Bytes(), packed)
	}
	var srcAddr, dstAddr uint64
	dstLen := 0
	if src != nil {
		srcAddr = src.Addr()
		dst, err := ioctl.NewBuffer(outSize)
		if err != nil {
			return err
		}
		defer dst.Free()
		dstAddr, dstLen = dst.Addr(), outSize
	}
	if err := putCmd(cmd.Bytes(), name, srcAddr, srcLen, dstAddr, dstLen); err != nil {
		return err
	}
	if _, err := ioctl.Ioctl(d.f.Fd(), req, cmd.Bytes()); err != nil {
		var n syscall.Errno
		if errors.As(err, &n) {
			return &Error{Op: op, Dataset: what, Errno: n}
		}
		return fmt.Errorf("zfs %s %s: %w", op, what, err)
	}
	return nil
}
