package main

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// An image a boot filled is replaced by an empty sparse one: keeping it kept its blocks
// allocated on the host for every later boot of the run.
func TestImagesAreMadeAfreshAndSparse(t *testing.T) {
	p := filepath.Join(t.TempDir(), "vd1.img")
	if err := os.WriteFile(p, bytes.Repeat([]byte{0xa5}, 8<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	var m images
	if err := m.make(p, "4M"); err != nil {
		t.Fatal(err)
	}
	if err := m.make(filepath.Join(filepath.Dir(p), "ns1.img"), "1G"); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != 4<<20 {
		t.Fatalf("size %d, want 4 MiB", fi.Size())
	}
	if blocks := fi.Sys().(*syscall.Stat_t).Blocks; blocks != 0 {
		t.Fatalf("the new image has %d blocks allocated: it kept the earlier boot's data", blocks)
	}
	b, _ := os.ReadFile(p)
	if !bytes.Equal(b, make([]byte, 4<<20)) {
		t.Fatal("the new image does not read as zeros")
	}
	if m.total != 4<<20+1<<30 {
		t.Fatalf("total %d, want the two images' sizes", m.total)
	}
}

// Every drive reports a refused write to the guest: QEMU's default for ENOSPC pauses the
// guest, and a paused guest sits out the whole timeout (45 minutes of CI) without a word.
func TestDrivesReportErrorsAndPassDiscards(t *testing.T) {
	for _, want := range []string{"werror=report", "rerror=report", "discard=unmap", "detect-zeroes=unmap"} {
		if !bytes.Contains([]byte(driveOpts), []byte(want)) {
			t.Errorf("drive options %q lack %s", driveOpts, want)
		}
	}
}
