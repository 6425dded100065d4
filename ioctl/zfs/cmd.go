// Package zfs issues the ZFS kernel module's dataset ioctls on /dev/zfs directly — the
// committed libzfs_core subset pvesnap's copies need (snapshot, clone, destroy of a snapshot,
// existence, and send and receive of a stream for moves between nodes) — so a copy costs a few
// system calls instead of zfs processes.
// Layouts and numbers are OpenZFS's (include/sys/zfs_ioctl.h, include/sys/fs/zfs.h,
// module/zfs/zfs_ioctl.c), checked against 2.3.
package zfs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"
)

// Ioctl numbers: ('Z' << 8) + the command's index in enum zfs_ioc. On Linux they are used as
// they are, not _IOC-encoded (lib/libzfs_core/os/linux: ioctl(fd, request, zc)).
const (
	iocObjsetStats  = 0x5a12 // ZFS_IOC_OBJSET_STATS (legacy: zc_name only)
	iocSnapshot     = 0x5a23 // ZFS_IOC_SNAPSHOT: zc_name = pool, {"snaps": {snap…}}
	iocDestroySnaps = 0x5a3b // ZFS_IOC_DESTROY_SNAPS: zc_name = pool, {"snaps": {snap…}}
	iocLogHistory   = 0x5a3f // ZFS_IOC_LOG_HISTORY: no name, {"message": text}
	iocSendNew      = 0x5a40 // ZFS_IOC_SEND_NEW: zc_name = snapshot, {"fd", "fromsnap"?}
	iocClone        = 0x5a42 // ZFS_IOC_CLONE: zc_name = new dataset, {"origin": snap}
	iocRecvNew      = 0x5a46 // ZFS_IOC_RECV_NEW: zc_name = dataset or parent, {"snapname", "begin_record", "input_fd", "force"?}
)

// The stable head of zfs_cmd_t; the ioctls used here read nothing else. The kernel copies
// in and out sizeof(zfs_cmd_t) bytes (about 14 KiB in OpenZFS 2.x, legacy fields included),
// so the structure is passed in a zeroed buffer of cmdSize, well above that.
const (
	offName        = 0    // char zc_name[MAXPATHLEN]
	maxPathLen     = 4096 // MAXPATHLEN
	offNVListSrc   = 4096 // uint64 zc_nvlist_src (a user address)
	offNVListSrcSz = 4104 // uint64 zc_nvlist_src_size
	offNVListDst   = 4112 // uint64 zc_nvlist_dst
	offNVListDstSz = 4120 // uint64 zc_nvlist_dst_size
	cmdSize        = 32 << 10
	// outSize is the buffer offered for the output nvlist: without one, an ioctl that fills
	// its output (per-snapshot errors) fails with ENOMEM in put_nvlist and hides its real error.
	outSize = 128 << 10
	// maxDatasetName is ZFS_MAX_DATASET_NAME_LEN - 1.
	maxDatasetName = 255
)

// putCmd writes the head of zfs_cmd_t into cmd (at least cmdSize bytes, zeroed).
func putCmd(cmd []byte, name string, src uint64, srcLen int, dst uint64, dstLen int) error {
	if len(cmd) < cmdSize {
		return fmt.Errorf("zfs_cmd buffer of %d bytes, need %d", len(cmd), cmdSize)
	}
	if len(name) > maxDatasetName {
		return fmt.Errorf("dataset name %q longer than %d bytes", name, maxDatasetName)
	}
	copy(cmd[offName:offName+maxPathLen-1], name)
	binary.LittleEndian.PutUint64(cmd[offNVListSrc:], src)
	binary.LittleEndian.PutUint64(cmd[offNVListSrcSz:], uint64(srcLen))
	binary.LittleEndian.PutUint64(cmd[offNVListDst:], dst)
	binary.LittleEndian.PutUint64(cmd[offNVListDstSz:], uint64(dstLen))
	return nil
}

// ZFS's own error numbers (enum zfs_errno in sys/fs/zfs.h), returned as errno.
const (
	errBase          = 1024 // ZFS_ERR_CHECKPOINT_EXISTS
	errIocCmdUnavail = errBase + 5
	errIocArgUnavail = errBase + 6
	errWrongParent   = errBase + 9
	errTruncated     = errBase + 16 // ZFS_ERR_STREAM_TRUNCATED
)

// Errors to test with errors.Is.
var (
	// ErrNotFound is ENOENT: the dataset (or its pool or parent) does not exist.
	ErrNotFound = errors.New("dataset does not exist")
	// ErrExists is EEXIST: the dataset to create is already there.
	ErrExists = errors.New("dataset already exists")
	// ErrUnsupported is a kernel module without the ioctl or an argument of it.
	ErrUnsupported = errors.New("ioctl not supported by this ZFS kernel module")
)

// Error is a failed ZFS ioctl.
type Error struct {
	Op      string // "snapshot", "clone", …
	Dataset string
	Errno   syscall.Errno
}

func (e *Error) Error() string {
	return fmt.Sprintf("zfs %s %s: %s", e.Op, e.Dataset, describe(e.Op, e.Errno))
}

// Is maps the errno onto the package's errors.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.Errno == syscall.ENOENT
	case ErrExists:
		return e.Errno == syscall.EEXIST
	case ErrUnsupported:
		return e.Errno == syscall.ENOTTY || e.Errno == errIocCmdUnavail || e.Errno == errIocArgUnavail
	}
	return false
}

// Unwrap gives the errno.
func (e *Error) Unwrap() error { return e.Errno }

// Truncated reports a receive whose stream ended before its end record.
func (e *Error) Truncated() bool { return e.Errno == errTruncated }

// describe words an errno as the zfs command does for these operations (libzfs's
// zfs_standard_error and its destroy messages), with the errno's name for the log.
func describe(op string, n syscall.Errno) string {
	switch n {
	case syscall.ENOTTY, errIocCmdUnavail, errIocArgUnavail:
		return "the ZFS kernel module does not support this ioctl"
	case errWrongParent:
		return "parent is not a filesystem"
	case errTruncated:
		return "the stream ended early (truncated)"
	}
	if n >= errBase {
		return fmt.Sprintf("ZFS error %d", int(n))
	}
	e, ok := errnos[n]
	if !ok {
		return n.Error()
	}
	switch op {
	case "receive":
		// What zfs receive says for these (libzfs_sendrecv.c's zfs_receive_one).
		switch n {
		case syscall.ETXTBSY:
			e.text = "destination has been modified since its most recent snapshot"
		case syscall.ENODEV:
			e.text = "the destination's most recent snapshot does not match the incremental source"
		case syscall.EEXIST:
			e.text = "destination already exists"
		}
	case "send":
		if n == syscall.EPIPE {
			e.text = "the stream's reader went away"
		}
	case "destroy":
		// A snapshot is refused when clones depend on it or a hold keeps it.
		switch n {
		case syscall.EEXIST:
			e.text = "snapshot has dependent clones"
		case syscall.EBUSY:
			e.text = "snapshot is held or in use"
		}
	}
	return fmt.Sprintf("%s (%s)", e.text, e.name)
}

// errnos are the errnos these ioctls return, with their names and the zfs command's words.
var errnos = map[syscall.Errno]struct{ name, text string }{
	syscall.ENOENT:       {"ENOENT", "dataset does not exist"},
	syscall.EEXIST:       {"EEXIST", "dataset already exists"},
	syscall.EBUSY:        {"EBUSY", "dataset is busy"},
	syscall.ENOSPC:       {"ENOSPC", "out of space"},
	syscall.EDQUOT:       {"EDQUOT", "out of space"},
	syscall.EPERM:        {"EPERM", "permission denied"},
	syscall.EACCES:       {"EACCES", "permission denied"},
	syscall.EROFS:        {"EROFS", "pool is read-only"},
	syscall.EXDEV:        {"EXDEV", "datasets are in different pools"},
	syscall.EINVAL:       {"EINVAL", "invalid name or argument"},
	syscall.ENAMETOOLONG: {"ENAMETOOLONG", "dataset name is too long"},
	syscall.ETXTBSY:      {"ETXTBSY", "dataset is busy"},
	syscall.ENODEV:       {"ENODEV", "no such device"},
	syscall.EBADE:        {"ECKSUM", "invalid stream (checksum mismatch)"},
	syscall.EPIPE:        {"EPIPE", "broken pipe"},
	syscall.EINTR:        {"EINTR", "interrupted"},
}
