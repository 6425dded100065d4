package provider

import (
	"slices"
	"strings"
	"testing"

	"github.com/pvesnap/pvesnap/daemon/pve"
)

// An accepted volume name is exactly the one its parts build (no second spelling of an
// archive), and only names of PVE's safe characters are accepted.
func FuzzVolname(f *testing.F) {
	for _, s := range []string{"backup/pvesnap-qemu-100-1700000000-fa1:pg1.42", "backup/pvesnap-qemu-999999999-1-fa-2.b:src:pg.7",
		"backup/pvesnap-qemu-100-1700000000-fa1:../x", "backup/pvesnap-qemu-0100-1-fa1:x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		ref, err := parseVolname(v)
		if err != nil {
			return
		}
		if ref.volname() != v {
			t.Fatalf("%q parsed as %+v, which names %q", v, ref, ref.volname())
		}
		if strings.ContainsAny(strings.TrimPrefix(v, "backup/"), "/ \t\n\\'\"$;&|") || !strings.HasPrefix(ref.point, ref.array+":") {
			t.Fatalf("%q accepted", v)
		}
	})
}

// The config of an archive never carries a lock, a parent, an unused disk, a section or a
// map line of its own making other than the restored disks'; every other disk on a storage is
// excluded with backup=0.
func FuzzArchiveConfig(f *testing.F) {
	f.Add("name: web\nlock: backup\nscsi0: san1:vm-100-disk-0,size=4G\nscsi1: local:vm-100-disk-1,backup=1\n[snap]\nscsi0: x:y\n", "scsi0")
	f.Add("#qmdump#map:scsi9:drive-scsi9:x:raw:\nunused0: san1:vm-100-disk-9\nparent: s\nide2: none,media=cdrom\n", "scsi0,virtio1")
	f.Fuzz(func(t *testing.T, raw, keyList string) {
		var keys []string // the restored disks: disk keys of the inventory, never free text
		for _, k := range strings.Split(keyList, ",") {
			if pve.IsDiskKey(k) && !strings.HasPrefix(k, "unused") && !slices.Contains(keys, k) {
				keys = append(keys, k)
			}
		}
		out := archiveConfig(raw, keys, map[string]string{})
		var maps []string
		for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
			key, value, _ := strings.Cut(l, ":")
			switch {
			case l == "" && out == "":
			case strings.HasPrefix(l, "#qmdump#map:"):
				maps = append(maps, strings.Split(l, ":")[1])
			case strings.HasPrefix(l, "["), key == "lock", key == "parent", strings.HasPrefix(key, "unused"), strings.HasPrefix(l, "#vzdump#"):
				t.Fatalf("kept %q:\n%s", l, out)
			case !strings.HasPrefix(l, "#") && pve.IsDiskKey(key) && !slices.Contains(keys, key) && isVolume(strings.TrimSpace(value)) &&
				!strings.HasSuffix(l, ",backup=0"):
				t.Fatalf("disk %s not restored but not excluded: %q", key, l)
			}
		}
		if !slices.Equal(maps, keys) {
			t.Fatalf("map lines %v, restored %v:\n%s", maps, keys, out)
		}
	})
}
