//go:build lab

package ioctl_test

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pvesnap/pvesnap/ioctl/zfs"
	"github.com/pvesnap/pvesnap/lab/cluster"
	"github.com/pvesnap/pvesnap/lab/guest"
)

// TestZFSIoctls drives /dev/zfs the way an instant copy does — existence, snapshot, clone,
// snapshot removal — on a real pool, and checks every answer against the zfs command and
// the clone's content against the snapshot's (not the source's newer data).
func TestZFSIoctls(t *testing.T) {
	if out, err := guest.Run("modprobe", "zfs"); err != nil {
		t.Skipf("SKIP: no ZFS module for this kernel (%v %s)", err, strings.TrimSpace(out))
	}
	// This test is what checks a series: the module must be of one pvesnap drives by ioctl.
	v, err := zfs.ModuleVersion("/sys")
	if err != nil {
		t.Fatal(err)
	}
	if ok, why := zfs.Checked(v); !ok {
		t.Fatalf("%s: add its series to zfs.CheckedSeries once this test passes on it", why)
	}
	fmt.Printf("RESULT zfs_ioctls module=%s\n", v)
	zcmd := func(args ...string) string {
		t.Helper()
		out, err := guest.Output("zfs", args...)
		if err != nil {
			t.Fatalf("zfs %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(out)
	}
	dir := t.TempDir()
	img := dir + "/pool.img"
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 512*mib); err != nil {
		t.Fatal(err)
	}
	if out, err := guest.Run("zpool", "create", "-f", "-O", "compression=off", "ztest", img); err != nil {
		t.Fatalf("zpool create: %v\n%s", err, out)
	}
	t.Cleanup(func() { guest.Run("zpool", "destroy", "-f", "ztest") })
	zcmd("create", "-V", "32M", "ztest/src")
	src, err := cluster.ZvolDevice("ztest/src", 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	const seed = 0x2f5
	if err := guest.WritePattern(src, seed, 0, 32*mib); err != nil {
		t.Fatal(err)
	}

	d, err := zfs.Open("/dev/zfs")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	d.Who = "pvesnap-lab"

	for name, want := range map[string]bool{"ztest/src": true, "ztest/none": false, "nopool/x": false, "ztest/src@none": false} {
		if got, err := d.Exists(name); err != nil || got != want {
			t.Errorf("Exists(%s) = %v, %v; want %v", name, got, err, want)
		}
	}

	if err := d.Snapshot("ztest/src@s1"); err != nil {
		t.Fatal(err)
	}
	if got := zcmd("list", "-H", "-o", "name", "-t", "snapshot", "ztest/src"); got != "ztest/src@s1" {
		t.Fatalf("zfs list after the snapshot ioctl: %q", got)
	}
	// New data on the source after the snapshot: the clone must not see it.
	if err := guest.WritePattern(src, seed+1, 0, 4*mib); err != nil {
		t.Fatal(err)
	}
	if err := d.Clone("ztest/src@s1", "ztest/dst"); err != nil {
		t.Fatal(err)
	}
	if got := zcmd("get", "-H", "-o", "value", "origin", "ztest/dst"); got != "ztest/src@s1" {
		t.Fatalf("origin of the clone: %q", got)
	}
	dst, err := cluster.ZvolDevice("ztest/dst", 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := guest.CheckPattern(dst, 0, 32*mib, seed, 0); err != nil {
		t.Fatalf("clone content is not the snapshot's: %v", err)
	}
	if err := guest.CheckPattern(src, 0, 4*mib, seed+1, 0); err != nil {
		t.Fatalf("source lost its newer data: %v", err)
	}

	// Refusals, classified.
	if err := d.Clone("ztest/src@s1", "ztest/dst"); !errors.Is(err, zfs.ErrExists) {
		t.Errorf("clone onto an existing dataset: %v", err)
	}
	if err := d.Snapshot("ztest/src@s1"); !errors.Is(err, zfs.ErrExists) {
		t.Errorf("second snapshot of the same name: %v", err)
	}
	if err := d.Snapshot("ztest/none@s1"); !errors.Is(err, zfs.ErrNotFound) {
		t.Errorf("snapshot of a missing dataset: %v", err)
	}
	if err := d.Clone("ztest/src@none", "ztest/dst2"); !errors.Is(err, zfs.ErrNotFound) {
		t.Errorf("clone of a missing snapshot: %v", err)
	}
	// A snapshot with a clone is not destroyed (not deferred): the clone keeps its data.
	if err := d.DestroySnapshot("ztest/src@s1"); err == nil {
		t.Fatal("destroyed a snapshot that has a clone")
	} else {
		t.Logf("refused as it should be: %v", err)
	}
	if ok, _ := d.Exists("ztest/src@s1"); !ok {
		t.Fatal("the snapshot with a clone is gone")
	}
	zcmd("destroy", "ztest/dst")
	if err := d.DestroySnapshot("ztest/src@s1"); err != nil {
		t.Fatal(err)
	}
	if got := zcmd("list", "-H", "-o", "name", "-t", "snapshot", "ztest/src"); got != "" {
		t.Fatalf("snapshots left: %q", got)
	}

	// The pool's history names the changes, as it names zfs commands.
	out, err := guest.Output("zpool", "history", "ztest")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"pvesnap-lab: zfs snapshot ztest/src@s1", "pvesnap-lab: zfs clone ztest/src@s1 ztest/dst", "pvesnap-lab: zfs destroy ztest/src@s1"} {
		if !strings.Contains(out, want) {
			t.Errorf("zpool history lacks %q:\n%s", want, out)
		}
	}
	t.Log("snapshot, clone and destroy through /dev/zfs verified against the zfs command and by content")
}
