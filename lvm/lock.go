package lvm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// LockDir is where LVM keeps its file locks (global/locking_dir in lvm.conf).
const LockDir = "/run/lock/lvm"

// ErrVGBusy: another command holds the volume group's lock for writing and did not let go in
// time.
var ErrVGBusy = errors.New("volume group locked by another LVM command")

// VGLock is a read hold on a volume group's LVM lock: while it is held, LVM commands that
// change the VG's metadata (lvcreate, lvextend, lvconvert, pvmove) wait for it, as they wait
// for each other; commands that only read go on.
type VGLock struct {
	f    *os.File
	path string
}

// LockVGShared takes the lock LVM's file locking takes for reading vg: flock(LOCK_SH) on
// <dir>/V_<vg> (lib/locking/file_locking.c, lib/misc/lvm-flock.c), waiting at most wait for a
// writer to finish. Like LVM it checks after locking that the file it locked is still the
// one at that path, since LVM unlinks a lock file it holds alone when it lets go.
func LockVGShared(ctx context.Context, dir, vg string, wait time.Duration) (*VGLock, error) {
	if err := CheckName("volume group", vg); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	p := filepath.Join(dir, "V_"+vg)
	deadline := time.Now().Add(wait)
	for {
		f, err := os.OpenFile(p, os.O_CREATE|os.O_APPEND|os.O_RDWR, 0o600)
		if err != nil {
			return nil, err
		}
		err = unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB)
		if err == nil {
			if sameFile(p, f) {
				return &VGLock{f: f, path: p}, nil
			}
			f.Close() // unlinked under us: lock the new one
			continue
		}
		f.Close()
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("flock %s: %w", p, err)
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%w (waited %s)", ErrVGBusy, wait)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func sameFile(p string, f *os.File) bool {
	a, err1 := os.Stat(p)
	b, err2 := f.Stat()
	return err1 == nil && err2 == nil && os.SameFile(a, b)
}

// Unlock lets go of the lock (the file stays: LVM removes lock files itself).
func (l *VGLock) Unlock() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close() // closing the only descriptor drops the flock
	l.f = nil
	return err
}

// SplitDMName splits a device-mapper name LVM made ("vg-lv", with every '-' inside a name
// doubled: "pve--x-vm--100--disk--0" is VG "pve-x", LV "vm-100-disk-0") into the VG and the
// LV with any layer suffix ("-real", "-cow") kept on the LV.
func SplitDMName(name string) (vg, lv string, ok bool) {
	for i := 0; i < len(name); i++ {
		if name[i] != '-' {
			continue
		}
		if i+1 < len(name) && name[i+1] == '-' {
			i++ // an escaped '-'
			continue
		}
		vg, lv = strings.ReplaceAll(name[:i], "--", "-"), name[i+1:]
		return vg, lv, vg != "" && lv != ""
	}
	return "", "", false
}
