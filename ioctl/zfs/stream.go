package zfs

import (
	"fmt"
	"os"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// BeginRecordSize is sizeof(dmu_replay_record_t): the first record of every send stream,
// which a receive reads itself and hands to the kernel apart from the rest (lzc_receive).
const BeginRecordSize = 312

// Send writes the stream of snapshot snap into out, the write end of a pipe the caller reads
// (lzc_send: ZFS_IOC_SEND_NEW without flags, the stream "zfs send [-i from] snap" writes).
// The stream is full when from is "", else incremental from snapshot from, an earlier
// snapshot of the same dataset or of its origin. It returns once the whole stream is written;
// a reader that closes its end stops it with EPIPE.
func (d *Dev) Send(snap, from string, out *os.File) error {
	if _, err := snapshotPool(snap); err != nil {
		return err
	}
	in := new(NVList).Int32("fd", int32(out.Fd())) // Fd makes the pipe blocking, as the kernel writes it
	if from != "" {
		if _, err := snapshotPool(from); err != nil {
			return err
		}
		in.String("fromsnap", from)
	}
	growPipe(out)
	var err error
	unsignalled(func() { err = d.call("send", iocSendNew, snap, snap, in, "") })
	runtime.KeepAlive(out)
	return err
}

// Receive creates snapname ("pool/dataset@snap") from a stream whose first BeginRecordSize
// bytes are begin; the kernel reads the rest from in, the read end of a pipe the caller
// writes. A full stream creates the dataset, which must not exist; an incremental one needs
// the dataset with the stream's source as its most recent snapshot and unchanged since (no
// force: nothing is rolled back). On failure, a truncated stream included, the kernel
// removes what it received.
func (d *Dev) Receive(snapname string, begin []byte, in *os.File) error {
	ds, err := snapshotDataset(snapname)
	if err != nil {
		return err
	}
	if len(begin) != BeginRecordSize {
		return fmt.Errorf("zfs receive %s: begin record of %d bytes, want %d", snapname, len(begin), BeginRecordSize)
	}
	// zc_name is the dataset, or its parent while it does not exist (recv_impl).
	name := ds
	if ok, err := d.Exists(ds); err != nil {
		return err
	} else if !ok {
		i := strings.LastIndexByte(ds, '/')
		if i < 0 {
			return fmt.Errorf("zfs receive %s: cannot receive into a pool's root dataset", snapname)
		}
		name = ds[:i]
	}
	nv := new(NVList).String("snapname", snapname).ByteArray("begin_record", begin).
		Int32("input_fd", int32(in.Fd())) // blocking: the kernel reads it
	growPipe(in)
	unsignalled(func() { err = d.call("receive", iocRecvNew, snapname, name, nv, "receive "+snapname) })
	runtime.KeepAlive(in)
	return err
}

func snapshotDataset(snap string) (string, error) {
	if _, err := snapshotPool(snap); err != nil {
		return "", err
	}
	ds, _, _ := strings.Cut(snap, "@")
	return ds, nil
}

// growPipe raises a pipe's buffer to 1 MiB, as libzfs does for send and receive, so the
// kernel's thread and the copying one wake each other less often. Not a pipe, or a lower
// system limit: the size stays.
func growPipe(f *os.File) {
	unix.FcntlInt(f.Fd(), unix.F_SETPIPE_SZ, 1<<20)
}

// unsignalled runs fn on an OS thread of its own with every signal blocked. Send and receive
// give up with EINTR as soon as any signal is pending on their thread (OpenZFS's issig), and a
// Go process takes signals on whichever thread: a child's SIGCHLD would end a stream. Stopping
// one is done by closing the other end of its pipe instead. The thread is never unlocked, so
// it exits with the goroutine and its signal mask goes with it.
func unsignalled(fn func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		var all unix.Sigset_t
		for i := range all.Val {
			all.Val[i] = ^uint64(0)
		}
		unix.PthreadSigmask(unix.SIG_BLOCK, &all, nil) // cannot fail with a valid how
		fn()
	}()
	<-done
}
