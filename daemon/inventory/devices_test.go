package inventory

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Without udev, "dmsetup mknodes" makes /dev/mapper/<name> a device node of its own, not a
// symlink to dm-N; and a node left by a removed map names whatever device later takes its
// number, which is the device LVM then reports under that name. Either way the node's device
// number, not its file name, says which device it is.
func TestBlockNameOfADeviceNode(t *testing.T) {
	r := Roots{Dev: t.TempDir(), Sys: t.TempDir()}
	must(t, os.MkdirAll(filepath.Join(r.Dev, "mapper"), 0o755))
	must(t, os.MkdirAll(filepath.Join(r.Sys, "class", "block", "dm-7"), 0o755))
	must(t, os.MkdirAll(filepath.Join(r.Sys, "dev", "block"), 0o755))
	must(t, os.Symlink("../../devices/virtual/block/dm-7", filepath.Join(r.Sys, "dev", "block", "253:7")))
	node := filepath.Join(r.Dev, "mapper", "mpathlab")
	if err := unix.Mknod(node, unix.S_IFBLK|0o600, int(unix.Mkdev(253, 7))); err != nil {
		t.Skipf("SKIP: making a block device node needs CAP_MKNOD (%v); the lab's restore suites run after a map's node was left behind", err)
	}
	if name, err := r.blockName("/dev/mapper/mpathlab"); err != nil || name != "dm-7" {
		t.Errorf("/dev/mapper/mpathlab (block 253:7): %q %v, want dm-7", name, err)
	}
	// A node of a number no device has, and a file that is no device, are refused by name.
	must(t, unix.Mknod(filepath.Join(r.Dev, "mapper", "gone"), unix.S_IFBLK|0o600, int(unix.Mkdev(253, 9))))
	must(t, os.WriteFile(filepath.Join(r.Dev, "mapper", "plain"), nil, 0o600))
	for _, p := range []string{"/dev/mapper/gone", "/dev/mapper/plain"} {
		if name, err := r.blockName(p); err == nil || !strings.Contains(err.Error(), "is not a block device known to sysfs") {
			t.Errorf("%s: %q %v, want refused", p, name, err)
		}
	}
}
