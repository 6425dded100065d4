package lvm

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestSplitDMName(t *testing.T) {
	for name, want := range map[string][2]string{
		"pve-vm--100--disk--0":    {"pve", "vm--100--disk--0"},
		"pve--x-vm--100--disk--0": {"pve-x", "vm--100--disk--0"},
		"vga-src":                 {"vga", "src"},
		"vg-lv-real":              {"vg", "lv-real"},
	} {
		vg, lv, ok := SplitDMName(name)
		if !ok || vg != want[0] || lv != want[1] {
			t.Errorf("%s: %q %q %v", name, vg, lv, ok)
		}
	}
	for _, bad := range []string{"mpatha", "-x", "vg-", "a--b"} {
		if _, _, ok := SplitDMName(bad); ok {
			t.Errorf("%q split", bad)
		}
	}
}

// The read lock makes a writer (what lvcreate or pvmove take: LOCK_EX on the same file)
// wait, and a writer holding it makes the read lock wait, then give up.
func TestVGLockExcludesWriters(t *testing.T) {
	dir := t.TempDir()
	l, err := LockVGShared(context.Background(), dir, "pve", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	w, err := os.OpenFile(filepath.Join(dir, "V_pve"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := unix.Flock(int(w.Fd()), unix.LOCK_EX|unix.LOCK_NB); err == nil {
		t.Fatal("a writer got the VG lock while pvesnap held it for reading")
	}
	// Another reader (lvs) is not held up.
	r2, err := LockVGShared(context.Background(), dir, "pve", 0)
	if err != nil {
		t.Fatalf("second reader: %v", err)
	}
	r2.Unlock()
	l.Unlock()
	if err := unix.Flock(int(w.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatalf("writer after unlock: %v", err)
	}
	start := time.Now()
	_, err = LockVGShared(context.Background(), dir, "pve", 300*time.Millisecond)
	if !errors.Is(err, ErrVGBusy) || time.Since(start) < 300*time.Millisecond {
		t.Fatalf("while a writer holds it: %v after %s", err, time.Since(start))
	}
	if _, err := LockVGShared(context.Background(), dir, "-bad", 0); err == nil {
		t.Error("a bad VG name reached the file system")
	}
}
