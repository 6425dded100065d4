package inventory

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/pvesnap/pvesnap/daemon/pure"
)

// Roots locate /dev and /sys (test trees in tests).
type Roots struct {
	Dev string
	Sys string
}

var partRe = regexp.MustCompile(`^part[0-9]+-`)

// SerialOf finds the FlashArray serial behind a PV's device, the way udev names it: a
// multipath map's uuid "mpath-3624a9370<serial>", an sd device's wwid "naa.624a9370<serial>",
// an NVMe namespace's wwid "eui.00…24a937…"; partitions and single-slave device-mapper
// devices lead to their disk. how says which identity was used.
func (r Roots) SerialOf(devPath string) (serial, how string, err error) {
	name, err := r.blockName(devPath)
	if err != nil {
		return "", "", err
	}
	for depth := 0; depth < 8; depth++ {
		base := filepath.Join(r.Sys, "class", "block", name)
		if uuid := readTrim(filepath.Join(base, "dm", "uuid")); uuid != "" {
			if mp, ok := strings.CutPrefix(partRe.ReplaceAllString(uuid, ""), "mpath-"); ok {
				if s, ok := pure.SerialFromWWID(mp); ok {
					return s, "multipath " + mp, nil
				}
				return "", "", fmt.Errorf("%s is multipath device %s, not a FlashArray volume", devPath, mp)
			}
		}
		if _, err := os.Stat(filepath.Join(base, "partition")); err == nil {
			// /sys/class/block/sdb1 links to …/block/sdb/sdb1: the disk is the parent.
			real, err := filepath.EvalSymlinks(base)
			if err != nil {
				return "", "", err
			}
			name = filepath.Base(filepath.Dir(real))
			continue
		}
		if wwid := readTrim(filepath.Join(base, "device", "wwid")); wwid != "" { // SCSI
			if s, ok := pure.SerialFromWWID(wwid); ok {
				return s, "SCSI " + wwid, nil
			}
			return "", "", fmt.Errorf("%s (%s, wwid %s) is not a FlashArray volume", devPath, name, wwid)
		}
		if wwid := readTrim(filepath.Join(base, "wwid")); wwid != "" { // NVMe
			if s, ok := pure.SerialFromWWID(wwid); ok {
				return s, "NVMe " + wwid, nil
			}
			return "", "", fmt.Errorf("%s (%s, wwid %s) is not a FlashArray namespace", devPath, name, wwid)
		}
		slaves, _ := os.ReadDir(filepath.Join(base, "slaves"))
		if len(slaves) == 1 {
			name = slaves[0].Name()
			continue
		}
		if len(slaves) > 1 {
			return "", "", fmt.Errorf("%s (%s) spans %d devices", devPath, name, len(slaves))
		}
		return "", "", fmt.Errorf("%s (%s) has no SCSI or NVMe identity", devPath, name)
	}
	return "", "", fmt.Errorf("%s: device stack too deep", devPath)
}

// blockName resolves a /dev path (possibly a symlink such as /dev/mapper/x or
// /dev/disk/by-id/…) to its kernel name (sdb, dm-3, nvme0n1).
func (r Roots) blockName(devPath string) (string, error) {
	p := devPath
	if rest, ok := strings.CutPrefix(devPath, "/dev/"); ok {
		p = filepath.Join(r.Dev, rest)
	}
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return "", fmt.Errorf("device %s: %w", devPath, err)
	}
	name := filepath.Base(real)
	if _, err := os.Stat(filepath.Join(r.Sys, "class", "block", name)); errors.Is(err, os.ErrNotExist) {
		// A device node of its own rather than udev's symlink to the kernel's name (what
		// "dmsetup mknodes" makes without udev, /dev/mapper/<name>): its device number is
		// what LVM went by, and sysfs names the device that has it.
		if n, ok := r.nameByNumber(real); ok {
			return n, nil
		}
		return "", fmt.Errorf("device %s (%s) is not a block device known to sysfs", devPath, name)
	}
	return name, nil
}

// nameByNumber is the kernel name of the block device node p: /sys/dev/block/<major>:<minor>.
func (r Roots) nameByNumber(p string) (string, bool) {
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return "", false
	}
	link, err := os.Readlink(filepath.Join(r.Sys, "dev", "block", fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))))
	if err != nil {
		return "", false
	}
	return filepath.Base(link), true
}

func readTrim(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
