package storage

import (
	"fmt"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/pvesnap/pvesnap/daemon/pve"
)

// The names a copy may create, by storage type: what PVE's storage plugin accepts
// (parse_volname), and the limits of LVM, device-mapper and ZFS underneath, which PVE only
// meets when a command fails halfway. pvesnap checks a target against all of them before
// any task starts and answers 400 naming the rule it breaks.
var (
	// PVE::Storage::Plugin::parse_lvm_name, for LVMPlugin and LvmThinPlugin.
	pveLVMName = regexp.MustCompile(`(?i)^[a-z0-9][a-z0-9\-_.]*[a-z0-9]$`)
	pveLVMVol  = regexp.MustCompile(`^vm-\d+-\S+$`)        // LVMPlugin::parse_volname
	pveThinVol = regexp.MustCompile(`^(vm|base)-\d+-\S+$`) // LvmThinPlugin::parse_volname
	pveZFSVol  = regexp.MustCompile(`^(((base|basevol)-\d+-\S+)/)?((base|basevol|vm|subvol)-\d+-\S+)$`)
	zfsChar    = regexp.MustCompile(`[^A-Za-z0-9_.:/-]`) // zfs_namecheck's valid_char, without the space PVE's \S excludes
	lvmChar    = regexp.MustCompile(`[^A-Za-z0-9\-_.]`)
	// lvm2's reserved substrings (lib/misc/lvm-string.c): its own sub-volumes' suffixes.
	lvmReserved = []string{"_cdata", "_cmeta", "_corig", "_cpool", "_cvol", "_wcorig", "_mimage", "_mlog", "_rimage",
		"_rmeta", "_tdata", "_tmeta", "_vdata", "_imeta", "_iorig", "_pmspare", "_vorigin"}
)

const (
	lvmNameMax = 127 // NAME_LEN - 1 (lvm2 lib/misc/lvm-string.h)
	dmNameMax  = 127 // DM_NAME_LEN - 1 (linux/dm-ioctl.h): "<vg>-<lv>" with hyphens doubled
	zfsNameMax = 255 // ZFS_MAX_DATASET_NAME_LEN - 1, snapshots included
	// snapSuffix is what an instant copy appends to its snapshot's name ("-" + 8 hex digits).
	snapSuffix = 9
)

// bare shortens a name for a message (a 308-character name would drown the rule it breaks).
func bare(s string) string {
	if utf8.RuneCountInString(s) > 48 {
		s = string([]rune(s)[:40]) + "…"
	}
	return s
}

// firstBad names the first character of s that re matches.
func firstBad(re *regexp.Regexp, s string) string {
	switch m := re.FindString(s); m {
	case "":
		return ""
	case " ":
		return "' ' (a space)"
	default:
		return fmt.Sprintf("%q", m)
	}
}

// dmName is device-mapper's name of an LV: VG and LV with '-' doubled, joined by '-'.
func dmName(vg, lv string) string {
	return strings.ReplaceAll(vg, "-", "--") + "-" + strings.ReplaceAll(lv, "-", "--")
}

// Operations a target name is checked for: on zfspool they take snapshots whose names
// include it.
const (
	opInstant = "instant copy" // <pool>/<source>@pvesnap-<target>-<8 hex>
	opMove    = "move"         // <pool>/<target>@<move snapshot>
	opOther   = "copy"
)

// checkTargetName returns what is wrong with target as a new volume on storage st, every
// broken rule in one message, or nil. source is the volume copied.
func checkTargetName(st *pve.Storage, source, target, op string) error {
	var bad []string
	add := func(format string, args ...any) { bad = append(bad, fmt.Sprintf(format, args...)) }
	n, t := len(target), bare(target)
	switch st.Type {
	case "lvm", "lvmthin":
		if n > lvmNameMax {
			add("'%s' is %d characters long: LVM allows at most %d in a logical volume name", t, n, lvmNameMax)
		}
		if c := firstBad(lvmChar, target); c != "" {
			add("'%s' contains %s: PVE's LVM volume names hold only letters, digits, '-', '_' and '.'", t, c)
		} else if !pveLVMName.MatchString(target) {
			add("'%s' must start and end with a letter or a digit (PVE's LVM volume names)", t)
		}
		re, form := pveLVMVol, "vm-<vmid>-<name>"
		if st.Type == "lvmthin" {
			re, form = pveThinVol, "vm-<vmid>-<name> or base-<vmid>-<name>"
		}
		if !re.MatchString(target) {
			add("'%s' is not %s, the only volume names PVE's %s storages hold", t, form, st.Type)
		}
		for _, r := range lvmReserved {
			if strings.Contains(target, r) {
				add("'%s' includes %q, which LVM reserves for its own sub-volumes", t, r)
				break
			}
		}
		if d := len(dmName(st.VGName, target)); n <= lvmNameMax && d > dmNameMax {
			add("the device-mapper name of '%s' in volume group '%s' would be %d characters long (hyphens are doubled): the kernel allows %d",
				t, st.VGName, d, dmNameMax)
		}
	case "zfspool":
		if !pveZFSVol.MatchString(target) {
			add("'%s' is not vm-<vmid>-<name>, base-<vmid>-<name> or subvol-<vmid>-<name>, the only volume names PVE's zfspool storages hold", t)
		}
		if c := firstBad(zfsChar, target); c != "" {
			add("'%s' contains %s: ZFS names hold only letters, digits, '_', '-', '.' and ':'", t, c)
		}
		ds := len(st.Pool) + 1 + n
		snap := 0
		switch op {
		case opInstant:
			snap = len(st.Pool) + 1 + len(source) + 1 + len(SnapshotPrefix) + n + snapSuffix
		case opMove:
			snap = ds + 1 + moveSnapshotLen
		}
		switch {
		case ds > zfsNameMax:
			add("the dataset '%s/%s' would be %d characters long: ZFS allows %d", st.Pool, t, ds, zfsNameMax)
		case snap > zfsNameMax && op == opInstant:
			add("the snapshot an instant copy takes of the source ('%s/%s@%s%s-<8 hex digits>') would be %d characters long: ZFS allows %d, so the target name can have at most %d characters here",
				st.Pool, source, SnapshotPrefix, t, snap, zfsNameMax, n-(snap-zfsNameMax))
		case snap > zfsNameMax:
			add("the snapshot a move keeps of the volume ('%s/%s@%s…') would be %d characters long: ZFS allows %d, so the target name can have at most %d characters here",
				st.Pool, t, moveSnapshotPrefix, snap, zfsNameMax, n-(snap-zfsNameMax))
		}
	}
	if len(bad) == 0 {
		return nil
	}
	return fmt.Errorf("%s", strings.Join(bad, "; "))
}
