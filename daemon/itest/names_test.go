package itest

import (
	"net/url"
	"strings"
	"testing"

	"github.com/pvesnap/pvesnap/daemon/api"
)

// TestCopyTargetNamesRefused: for a storage pvesnap copies itself and a caller with
// Datastore.Allocate, a target that is no valid volume name for that storage is refused with
// 400 saying which rule it breaks, before any task starts — not passed to pveproxy, which
// answers a token "Permission check failed (user != root@pam)" and starts a copy for root that
// fails halfway.
func TestCopyTargetNamesRefused(t *testing.T) {
	e := Start(t)
	for _, sid := range []string{"local-zfs", "local-lvm", "san1"} {
		seedVolume(t, e, sid, "vm-100-disk-0", 1<<20)
	}
	c, _ := e.Token("pve1", "csi@pve", map[string]string{"/": "PVEAuditor", "/storage": "PVEDatastoreAdmin"})
	c.JSON = true
	long := "vm-100-disk-" + strings.Repeat("x", 296)    // 308 characters
	dashes := "vm-100-" + strings.Repeat("a-", 58) + "a" // 124 characters, 60 hyphens: 188 with "pve-" for device-mapper
	rows := []struct {
		sid, target, want string
	}{
		{"local-lvm", long, "is 308 characters long: LVM allows at most 127 in a logical volume name"},
		{"san1", long, "is 308 characters long: LVM allows at most 127 in a logical volume name"},
		{"local-zfs", long, "the dataset 'rpool/data/vm-100-disk-xxxxxxxxxxxxxxxxxxxxxxxxxxxx…' would be 319 characters long: ZFS allows 255"},
		// 222 characters: the dataset fits, the snapshot of the source would not.
		{"local-zfs", "vm-100-" + strings.Repeat("y", 215), "the snapshot an instant copy takes of the source ('rpool/data/vm-100-disk-0@pvesnap-vm-100-yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy…-<8 hex digits>') would be 264 characters long: ZFS allows 255, so the target name can have at most 213 characters here"},
		{"local-zfs", "vm-100-disk@1", `'vm-100-disk@1' contains "@": ZFS names hold only letters, digits, '_', '-', '.' and ':'`},
		{"local-zfs", "vm-100-disk 1", "'vm-100-disk 1' is not vm-<vmid>-<name>, base-<vmid>-<name> or subvol-<vmid>-<name>, the only volume names PVE's zfspool storages hold; 'vm-100-disk 1' contains ' ' (a space)"},
		{"local-zfs", "local-zfs:vm-100-ünïcode", `'vm-100-ünïcode' contains "ü"`},
		{"local-zfs", "disk-100-a", "'disk-100-a' is not vm-<vmid>-<name>, base-<vmid>-<name> or subvol-<vmid>-<name>"},
		{"local-lvm", "vm-100-disk+1", `'vm-100-disk+1' contains "+": PVE's LVM volume names hold only letters, digits, '-', '_' and '.'`},
		{"local-lvm", "vm-100-disk-", "'vm-100-disk-' must start and end with a letter or a digit (PVE's LVM volume names)"},
		{"local-lvm", "vm-100-disk-0_tmeta", `'vm-100-disk-0_tmeta' includes "_tmeta", which LVM reserves for its own sub-volumes`},
		{"local-lvm", "disk-100-0", "'disk-100-0' is not vm-<vmid>-<name> or base-<vmid>-<name>, the only volume names PVE's lvmthin storages hold"},
		{"san1", "base-100-disk-1", "'base-100-disk-1' is not vm-<vmid>-<name>, the only volume names PVE's lvm storages hold"},
		{"local-lvm", dashes, "in volume group 'pve' would be 188 characters long (hyphens are doubled): the kernel allows 127"},
		{"local-lvm", "vm-100-../../etc", `contains "/"`},
	}
	before := stateDigest(e)
	var table strings.Builder
	for _, r := range rows {
		resp, err := c.Do("POST", "/nodes/pve1/storage/"+r.sid+"/content/vm-100-disk-0", url.Values{"target": {r.target}})
		must(t, err)
		msg := resp.Errors["target"]
		if resp.Code != 400 || resp.Status != "Parameter verification failed." || !strings.Contains(msg, r.want) || resp.Header.Get(api.AnsweredHeader) != "pvesnap" {
			t.Errorf("%s %.40q: %d %q %q (from %q), want 400 with %q", r.sid, r.target, resp.Code, resp.Status, msg, resp.Header.Get(api.AnsweredHeader), r.want)
		}
		table.WriteString("\n  " + r.sid + " " + bare(r.target) + " -> 400 " + msg)
	}
	t.Logf("refused targets:%s", table.String())
	if stateDigest(e) != before {
		t.Fatal("a refused copy changed something (a volume or a task)")
	}
	// A name PVE accepts but pvesnap leaves to it (a VMID below 100), and any name from a
	// caller without Datastore.Allocate: pveproxy's own answer, as before.
	resp, err := c.Do("POST", "/nodes/pve1/storage/local-zfs/content/vm-100-disk-0", url.Values{"target": {"vm-99-disk-0"}})
	must(t, err)
	if resp.Code != 403 || resp.Status != "Permission check failed (user != root@pam)" {
		t.Errorf("vm-99-disk-0: %d %q, want pveproxy's answer", resp.Code, resp.Status)
	}
	user, _ := e.Token("pve1", "user@pve", map[string]string{"/storage": "PVEDatastoreUser"})
	resp, err = user.Do("POST", "/nodes/pve1/storage/local-lvm/content/vm-100-disk-0", url.Values{"target": {long}})
	must(t, err)
	if resp.Code != 403 || resp.Status != "Permission check failed (user != root@pam)" || resp.Header.Get(api.AnsweredHeader) != "" {
		t.Errorf("without Datastore.Allocate: %d %q, want pveproxy's answer", resp.Code, resp.Status)
	}
}

// bare shortens a name for the test's table.
func bare(s string) string {
	if len(s) > 40 {
		return s[:37] + "…"
	}
	return s
}
