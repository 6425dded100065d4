package restore

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/pvesnap/pvesnap/daemon/pve"
)

// ErrRefused is a restore PVE itself would refuse (the VM is locked, protected, elsewhere …);
// the API answers it with 409. Its message is the refusal alone, in PVE's words.
var ErrRefused = errors.New("restore refused")

type refusal struct{ msg string }

func (r refusal) Error() string        { return r.msg }
func (r refusal) Is(target error) bool { return target == ErrRefused }

func refusef(format string, a ...any) error { return refusal{fmt.Sprintf(format, a...)} }

// emsg is qemu-server's prefix for a refused restore (API2/Qemu.pm create_vm).
func emsg(vmid int64) string { return fmt.Sprintf("unable to restore VM %d -", vmid) }

// CheckOverwrite refuses an in-place restore of vmid in the words qemu-server uses for a
// restore over an existing VM (create_and_lock_config, check_protection), and what PVE does
// not check but would make pvesnap's restore unsafe: a VM on another node, or one that the HA
// manager would start again while its disks are being replaced. locked is the lock pvesnap
// itself holds by now ("" before it took one): any other lock refuses.
func (v VMs) CheckOverwrite(vmid int64, locked string, start bool) (*pve.VMConfig, error) {
	cfg, err := v.Read(vmid)
	if errors.Is(err, os.ErrNotExist) {
		if node := v.nodeOf(vmid); node != "" {
			return nil, refusef("VM %d is on node %s: an in-place restore runs on the VM's own node", vmid, node)
		}
		return nil, refusef("Configuration file 'nodes/%s/qemu-server/%d.conf' does not exist", v.Node, vmid)
	}
	if err != nil {
		return nil, err
	}
	if l := cfg.Props["lock"]; l != locked {
		if l == "" {
			return nil, refusef("%s VM's lock '%s' was removed while the restore ran: refusing to replace its disks", emsg(vmid), locked)
		}
		return nil, refusef("%s VM is locked (%s)", emsg(vmid), l)
	}
	if cfg.Props["protection"] == "1" {
		// qemu-server's words exactly, its doubled dash included (check_protection appends
		// " - protection mode enabled" to a prefix that already ends in a dash).
		return nil, refusef("%s - protection mode enabled", emsg(vmid))
	}
	if state, ok := v.HAState(vmid); ok {
		switch {
		case state == "ignored":
		case (state == "stopped" || state == "disabled") && !start:
		default:
			return nil, refusef("%s VM is managed by HA (state %s): the HA manager would act on it while its disks are replaced; set its HA state to 'ignored' first (ha-manager set vm:%d --state ignored)",
				emsg(vmid), state, vmid)
		}
	}
	return cfg, nil
}

// nodeOf finds the node whose qemu-server directory holds vmid's config ("" when none).
func (v VMs) nodeOf(vmid int64) string {
	ms, _ := filepath.Glob(filepath.Join(v.PVE, "nodes", "*", "qemu-server", fmt.Sprintf("%d.conf", vmid)))
	if len(ms) == 0 {
		return ""
	}
	return filepath.Base(filepath.Dir(filepath.Dir(ms[0])))
}

// HAState reads vmid's requested state from the HA resources (/etc/pve/ha/resources.cfg, a
// section config: "vm: 100" and an indented "state started"; 'started' when not set).
func (v VMs) HAState(vmid int64) (string, bool) {
	b, err := os.ReadFile(filepath.Join(v.PVE, "ha", "resources.cfg"))
	if err != nil {
		return "", false
	}
	want := fmt.Sprintf("vm: %d", vmid)
	in, state := false, ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.TrimSpace(line) == "":
		case line[0] != ' ' && line[0] != '\t': // a section header
			if in {
				return orStarted(state), true
			}
			in = strings.TrimSpace(line) == want
		case in:
			if k, val, ok := strings.Cut(strings.TrimSpace(line), " "); ok && k == "state" {
				state = strings.TrimSpace(val)
			}
		}
	}
	if in {
		return orStarted(state), true
	}
	return "", false
}

func orStarted(s string) string {
	if s == "" {
		return "started"
	}
	return s
}

// Permissions are what PVE checks to restore a backup of VM X as VM Y (API2/Qemu.pm
// create_vm with an archive, check_volume_access for the archive, check_restore_permissions
// on the restored config), applied to a restore from an array snapshot:
//   - reading X's disks: VM.Backup on /vms/X (a backup archive of X needs it);
//   - a new VM Y: VM.Allocate on /vms/Y;
//   - over the existing X: VM.Allocate, or VM.Backup as for an existing VM restored with
//     force; and VM.PowerMgmt, because pvesnap stops and starts it where PVE would refuse a
//     running VM;
//   - Datastore.AllocateSpace on every storage a disk is allocated on;
//   - for the config a new VM gets: SDN.Use on every bridge (and VLAN) of its NICs
//     (check_bridge_access), and for passed-through devices Mapping.Use on their mapping, or
//     root@pam for a raw host device (check_mapping_access). root@pam skips these two, as in
//     PVE.
type checkFunc func(path string, privs ...string) error

// CheckRestoredConfig applies check_bridge_access and check_mapping_access to the config a
// new VM is given.
func CheckRestoredConfig(cfg *pve.VMConfig, user string, check checkFunc, zoneOf func(bridge string) string) error {
	if user == "root@pam" {
		return nil
	}
	for _, k := range slices.Sorted(maps.Keys(cfg.Props)) {
		val := cfg.Props[k]
		switch {
		case pve.IsNetKey(k):
			o := pve.ParsePropertyString(val, "model")
			bridge := o["bridge"]
			if bridge == "" {
				continue
			}
			zone := zoneOf(bridge)
			base := "/sdn/zones/" + zone + "/" + bridge
			var err error
			switch {
			case o["tag"] != "":
				err = check(base+"/"+o["tag"], "SDN.Use")
			case o["trunks"] != "":
				for _, tag := range trunkTags(o["trunks"]) {
					if err = check(base+"/"+tag, "SDN.Use"); err != nil {
						break
					}
				}
			default:
				err = check(base, "SDN.Use")
			}
			if err != nil {
				return err
			}
		case strings.HasPrefix(k, "usb") && isIndexed(k, "usb"):
			o := pve.ParsePropertyString(val, "host")
			switch {
			case o["host"] != "" && !strings.EqualFold(o["host"], "spice"):
				return refusef("only root can set '%s' config for real devices", k)
			case o["mapping"] != "":
				if err := check("/mapping/usb/"+o["mapping"], "Mapping.Use"); err != nil {
					return err
				}
			}
		case isIndexed(k, "hostpci"):
			o := pve.ParsePropertyString(val, "host")
			switch {
			case o["host"] != "":
				return refusef("only root can set '%s' config for non-mapped devices", k)
			case o["mapping"] != "":
				if err := check("/mapping/pci/"+o["mapping"], "Mapping.Use"); err != nil {
					return err
				}
			}
		case isIndexed(k, "rng"):
			if pve.ParsePropertyString(val, "source")["source"] == "/dev/hwrng" {
				if err := check("/mapping/hwrng", "Mapping.Use"); err != nil {
					return err
				}
			}
		case isIndexed(k, "virtiofs"):
			if id := pve.ParsePropertyString(val, "dirid")["dirid"]; id != "" {
				if err := check("/mapping/dir/"+id, "Mapping.Use"); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func isIndexed(key, prefix string) bool {
	rest, ok := strings.CutPrefix(key, prefix)
	if !ok || rest == "" {
		return false
	}
	for _, c := range rest {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// trunkTags expands a NIC's trunks ("10;20-22") to its VLAN tags, as get_tags_from_trunk does.
func trunkTags(trunks string) []string {
	var out []string
	for _, part := range strings.Split(trunks, ";") {
		lo, hi, isRange := strings.Cut(part, "-")
		if !isRange {
			out = append(out, part)
			continue
		}
		var a, b int
		if _, err := fmt.Sscan(lo, &a); err != nil {
			continue
		}
		if _, err := fmt.Sscan(hi, &b); err != nil {
			continue
		}
		for t := a; t <= b && t-a < 4096; t++ {
			out = append(out, fmt.Sprint(t))
		}
	}
	return out
}

// SDNZone is the zone of a bridge for the SDN.Use check: the zone of an SDN vnet of that name
// (/etc/pve/sdn/vnets.cfg, "vnet: NAME" with "zone Z"), else 'localnetwork', as
// check_vnet_access computes it.
func SDNZone(pveRoot string) func(bridge string) string {
	zones := map[string]string{}
	if b, err := os.ReadFile(filepath.Join(pveRoot, "sdn", "vnets.cfg")); err == nil {
		if secs, err := pve.ParseSectionConfig("sdn/vnets.cfg", b); err == nil {
			for _, s := range secs {
				if s.Type == "vnet" && s.Get("zone") != "" {
					zones[s.ID] = s.Get("zone")
				}
			}
		}
	}
	return func(bridge string) string {
		if z, ok := zones[bridge]; ok {
			return z
		}
		return "localnetwork"
	}
}
