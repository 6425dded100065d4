package storage

import (
	"strings"
	"testing"
	"time"

	"github.com/pvesnap/pvesnap/daemon/pve"
)

var (
	zfsStorage  = &pve.Storage{ID: "local-zfs", Type: "zfspool", Pool: "rpool/data"}
	thinStorage = &pve.Storage{ID: "local-lvm", Type: "lvmthin", VGName: "pve", ThinPool: "data"}
	lvmStorage  = &pve.Storage{ID: "san1", Type: "lvm", VGName: "vgsan1"}
)

// Names PVE and the layers under it accept pass, whatever the operation: the checks must not
// refuse what a copy could make.
func TestTargetNamesAccepted(t *testing.T) {
	uuid := "vm-9999-snapshot-6f1c2b1e-4f4a-4bb2-9f0e-2a7c8d1e0b3c"
	for _, c := range []struct {
		st     *pve.Storage
		target string
	}{
		{zfsStorage, uuid}, {thinStorage, uuid}, {lvmStorage, uuid},
		{zfsStorage, "base-100-disk-0/vm-101-disk-0"}, // PVE's linked clone: passed on to pveproxy
		{zfsStorage, "subvol-100-disk-0"},
		{thinStorage, "base-100-disk-0"},
		{zfsStorage, "vm-100-disk-0:" + strings.Repeat("a", 100)},                      // ':' is a ZFS name character
		{thinStorage, "vm-100-" + strings.Repeat("a", 114)},                            // 121, its 2 hyphens doubled, after "pve-": 127 for device-mapper
		{zfsStorage, "vm-100-" + strings.Repeat("b", 237)},                             // 255 with "rpool/data/" (a copy to another storage)
		{&pve.Storage{Type: "zfspool", Pool: "p"}, "vm-1-" + strings.Repeat("c", 213)}, // a move's snapshot: 2+218+1+30 = 251
	} {
		for _, op := range []string{opOther, opMove, opInstant} {
			if op != opOther && len(c.target) > 200 {
				continue // the longest names fit only where no snapshot adds to them
			}
			if err := checkTargetName(c.st, "vm-100-disk-0", c.target, op); err != nil {
				t.Errorf("%s %s %.50q: %v", c.st.Type, op, c.target, err)
			}
		}
	}
}

// The snapshots a copy and a move take on zfspool count against ZFS's 255, and the message
// says how long the target may be there.
func TestTargetNameSnapshotLimits(t *testing.T) {
	target := "vm-100-" + strings.Repeat("z", 223) // 230: the dataset rpool/data/… is 241
	if err := checkTargetName(zfsStorage, "vm-100-disk-0", target, opOther); err != nil {
		t.Fatalf("a copy without snapshot: %v", err)
	}
	err := checkTargetName(zfsStorage, "vm-100-disk-0", target, opMove)
	// rpool/data/<230>@pvesnap-move-<8>-<8>: 241 + 1 + 30 = 272, 17 over.
	if err == nil || !strings.Contains(err.Error(), "would be 272 characters long: ZFS allows 255, so the target name can have at most 213 characters here") {
		t.Errorf("move: %v", err)
	}
	// rpool/data/vm-100-disk-0@pvesnap-<230>-<8 hex>: 11 + 13 + 1 + 8 + 230 + 9 = 272.
	err = checkTargetName(zfsStorage, "vm-100-disk-0", target, opInstant)
	if err == nil || !strings.Contains(err.Error(), "would be 272 characters long: ZFS allows 255, so the target name can have at most 213 characters here") {
		t.Errorf("instant copy: %v", err)
	}
	// One character over device-mapper's 127 (the accepted case has one less).
	if err := checkTargetName(thinStorage, "", "vm-100-"+strings.Repeat("a", 115), opOther); err == nil || !strings.Contains(err.Error(), "would be 128 characters long") {
		t.Errorf("device-mapper limit: %v", err)
	}
	if n := len(newMoveSnapshot(fixedTime)); n != moveSnapshotLen || !moveSnapshotRe.MatchString(newMoveSnapshot(fixedTime)) {
		t.Errorf("move snapshot name %q: %d characters, the limit counts %d", newMoveSnapshot(fixedTime), n, moveSnapshotLen)
	}
}

var fixedTime = time.Unix(1795312145, 0)
