package provider

import (
	"bufio"
	"context"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/pvesnap/pvesnap/daemon/arrays"
	"github.com/pvesnap/pvesnap/daemon/inventory"
	"github.com/pvesnap/pvesnap/daemon/pve"
)

// StorageType is the plugin's storage type in storage.cfg.
const StorageType = "pvesnap"

// Storage options of a pvesnap storage (the plugin declares them; prefixed so they can never
// clash with another plugin's in PVE's one property namespace).
const (
	OptArrays = "pvesnap-arrays" // array ids whose restore points the storage shows
	OptVMIDs  = "pvesnap-vmids"  // VMIDs whose restore points the storage shows
)

// volnameRe: backup/pvesnap-qemu-<vmid>-<ctime of the VM incarnation>-<array>:<point>. The
// characters are those PVE accepts in a backup archive name; the Perl plugin's parse_volname
// uses the same expression.
var volnameRe = regexp.MustCompile(`^backup/pvesnap-qemu-([1-9][0-9]{2,8})-([1-9][0-9]{0,11})-([a-z][a-z0-9_.-]{0,38}[a-z0-9]):([A-Za-z0-9][A-Za-z0-9:._-]{0,200})$`)

// archiveRef is an archive's identity.
type archiveRef struct {
	vmid, ctime int64
	point       string // "<array>:<point>", an inventory point id
	array       string
}

func (r archiveRef) volname() string {
	return fmt.Sprintf("backup/pvesnap-qemu-%d-%d-%s", r.vmid, r.ctime, r.point)
}

func parseVolname(v string) (archiveRef, error) {
	m := volnameRe.FindStringSubmatch(v)
	if m == nil {
		return archiveRef{}, fmt.Errorf("'%s' is not a pvesnap archive (backup/pvesnap-qemu-<vmid>-<ctime>-<array>:<point>)", v)
	}
	vmid, _ := strconv.ParseInt(m[1], 10, 64)
	ctime, _ := strconv.ParseInt(m[2], 10, 64)
	return archiveRef{vmid: vmid, ctime: ctime, point: m[3] + ":" + m[4], array: m[3]}, nil
}

// Archive is one restore point of one VM incarnation, as PVE lists backups.
type Archive struct {
	Volname string `json:"volname"`
	VMID    int64  `json:"vmid"`
	CTime   int64  `json:"ctime"` // the point's creation (s): PVE's backup time
	Size    int64  `json:"size"`
	Notes   string `json:"notes"`
	Subtype string `json:"subtype"`
	VMCTime int64  `json:"vm_ctime"`
	Point   string `json:"point"`
}

// filter is a pvesnap storage's view: the arrays and VMIDs it shows (all when empty).
type filter struct {
	storage string
	arrays  map[string]bool
	vmids   map[int64]bool
}

func (f filter) vm(vmid int64) bool  { return len(f.vmids) == 0 || f.vmids[vmid] }
func (f filter) array(a string) bool { return len(f.arrays) == 0 || f.arrays[a] }

// filterOf reads the storage's section: it must be a pvesnap storage, and the arrays it names
// must be configured in pvesnap.
func (p *Provider) filterOf(sid string) (filter, error) {
	if err := pve.CheckStorageID(sid); err != nil {
		return filter{}, err
	}
	st, err := p.Storage.Get(sid)
	if err != nil {
		return filter{}, err
	}
	if st.Type != StorageType {
		return filter{}, fmt.Errorf("storage '%s' is of type %s, not %s", sid, st.Type, StorageType)
	}
	f := filter{storage: sid, arrays: map[string]bool{}, vmids: map[int64]bool{}}
	if v := st.Section.Get(OptArrays); v != "" {
		known, err := p.Inv.Arrays.List()
		if err != nil {
			return filter{}, err
		}
		for _, a := range splitList(v) {
			if !slices.ContainsFunc(known, func(x arrays.Array) bool { return x.ID == a }) {
				return filter{}, fmt.Errorf("storage '%s': array '%s' (%s) is not configured in pvesnap (see 'pvesnap arrays list')", sid, a, OptArrays)
			}
			f.arrays[a] = true
		}
	}
	if v := st.Section.Get(OptVMIDs); v != "" {
		for _, s := range splitList(v) {
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil || pve.CheckVMID(n) != nil {
				return filter{}, fmt.Errorf("storage '%s': %s: '%s' is not a VMID", sid, OptVMIDs, s)
			}
			f.vmids[n] = true
		}
	}
	return f, nil
}

func splitList(v string) []string {
	return strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ';' || r == ' ' })
}

// restorable are the disks of d a point can restore: on a mapped storage, with a snapshot in
// the point taken after the disk existed, and an identity to check the staged LV against.
// why says, for every other disk, why not.
func restorable(d *inventory.VMDetail, pt *inventory.Point) (keys []string, size int64, why []string) {
	predates := map[string]bool{}
	for _, k := range pt.PredatesDisk {
		predates[k] = true
	}
	var before, missing, unknown, off []string
	for _, dk := range d.DiskList {
		_, snap := pt.Snapshots[dk.Key]
		switch {
		case dk.Mapping != inventory.Mapped:
			off = append(off, dk.Key)
		case !snap:
			missing = append(missing, dk.Key)
		case predates[dk.Key]:
			before = append(before, dk.Key)
		case dk.LVTime == 0 || dk.LVUUID == "":
			unknown = append(unknown, dk.Key)
		default:
			keys = append(keys, dk.Key)
			size += dk.Size
		}
	}
	if len(before) > 0 {
		why = append(why, "predates "+disksPhrase(before))
	}
	if len(missing) > 0 {
		why = append(why, "no snapshot of "+disksPhrase(missing))
	}
	if len(unknown) > 0 {
		why = append(why, disksPhrase(unknown)+": logical volume never seen, cannot be verified")
	}
	if len(off) > 0 {
		why = append(why, disksPhrase(off)+" not on an array volume")
	}
	sort.Strings(keys)
	return keys, size, why
}

// disksPhrase names disks for a message: "disk scsi0", "disks scsi0, scsi1".
func disksPhrase(keys []string) string {
	if len(keys) > 1 {
		return "disks " + strings.Join(keys, ", ")
	}
	return "disk " + strings.Join(keys, ", ")
}

func archiveOf(d *inventory.VMDetail, pt *inventory.Point) (Archive, bool) {
	keys, size, why := restorable(d, pt)
	if len(keys) == 0 {
		return Archive{}, false
	}
	name := d.Name
	if name == "" {
		name = fmt.Sprintf("VM %d", d.VMID)
	}
	notes := fmt.Sprintf("%s at %s: %s", name, pt.ID, strings.Join(keys, ", "))
	if d.State == inventory.Deleted {
		notes += fmt.Sprintf("; VM deleted %s", time.Unix(d.Deleted, 0).UTC().Format("2006-01-02 15:04 UTC"))
	}
	for _, w := range why {
		notes += "; " + w
	}
	ref := archiveRef{vmid: d.VMID, ctime: d.CTime, point: pt.ID, array: pt.Array}
	return Archive{Volname: ref.volname(), VMID: d.VMID, CTime: pt.Created / 1000, Size: size, Notes: notes, Subtype: "qemu",
		VMCTime: d.CTime, Point: pt.ID}, true
}

func (p *Provider) list(ctx context.Context, c *call) (any, error) {
	var q struct {
		Storage string `json:"storage"`
		VMID    int64  `json:"vmid"`
	}
	if err := c.decode(&q); err != nil {
		return nil, err
	}
	f, err := p.filterOf(q.Storage)
	if err != nil {
		return nil, err
	}
	if err := p.Inv.ScanVMs(ctx); err != nil {
		return nil, err
	}
	details, err := p.Inv.Details(ctx, func(vmid int64) bool { return f.vm(vmid) && (q.VMID == 0 || vmid == q.VMID) })
	if err != nil {
		return nil, err
	}
	out := []Archive{}
	for _, d := range details {
		for i := range d.Points {
			if !f.array(d.Points[i].Array) {
				continue
			}
			if a, ok := archiveOf(d, &d.Points[i]); ok {
				out = append(out, a)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Volname < out[j].Volname })
	return map[string]any{"archives": out}, nil
}

// point is an archive resolved: its VM incarnation, its restore point and the disks the point
// restores (at least one).
type point struct {
	ref  archiveRef
	vm   *inventory.VMDetail
	pt   *inventory.Point
	keys []string
}

// resolve finds an archive of the storage, fresh from the inventory.
func (p *Provider) resolve(ctx context.Context, sid, volname string) (*point, error) {
	ref, err := parseVolname(volname)
	if err != nil {
		return nil, err
	}
	f, err := p.filterOf(sid)
	if err != nil {
		return nil, err
	}
	if !f.vm(ref.vmid) || !f.array(ref.array) {
		return nil, fmt.Errorf("archive %s is not on storage '%s' (outside its %s/%s)", volname, sid, OptArrays, OptVMIDs)
	}
	if err := p.Inv.ScanVMs(ctx); err != nil {
		return nil, err
	}
	for try := 0; ; try++ {
		d, err := p.Inv.Detail(ctx, ref.vmid, ref.ctime)
		if err != nil {
			return nil, err
		}
		for i := range d.Points {
			if d.Points[i].ID == ref.point {
				keys, _, _ := restorable(d, &d.Points[i])
				if len(keys) == 0 {
					return nil, fmt.Errorf("archive %s restores no disk: %w", volname, inventory.ErrUnknown)
				}
				return &point{ref: ref, vm: d, pt: &d.Points[i], keys: keys}, nil
			}
		}
		if try > 0 {
			return nil, fmt.Errorf("archive %s: VM %d has no restore point %s (any more): %w", volname, ref.vmid, ref.point, inventory.ErrUnknown)
		}
		// A snapshot the cache has not seen yet, or one gone from the array: read them again once.
		if _, err := p.Inv.Refresh(ctx); err != nil {
			return nil, err
		}
	}
}

// archiveParams name an archive of a storage.
type archiveParams struct {
	Storage string `json:"storage"`
	Volname string `json:"volname"`
}

func (p *Provider) info(ctx context.Context, c *call) (any, error) {
	var q archiveParams
	if err := c.decode(&q); err != nil {
		return nil, err
	}
	a, err := p.resolve(ctx, q.Storage, q.Volname)
	if err != nil {
		return nil, err
	}
	archive, _ := archiveOf(a.vm, a.pt)
	return map[string]any{"archive": archive}, nil
}

func (p *Provider) config(ctx context.Context, c *call) (any, error) {
	var q archiveParams
	if err := c.decode(&q); err != nil {
		return nil, err
	}
	a, err := p.resolve(ctx, q.Storage, q.Volname)
	if err != nil {
		return nil, err
	}
	incs, err := p.Inv.Incarnations(ctx, a.ref.vmid)
	if err != nil {
		return nil, err
	}
	for _, in := range incs {
		if in.CTime == a.ref.ctime {
			storages := map[string]string{}
			for _, dk := range a.vm.DiskList {
				storages[dk.Key] = dk.Storage
			}
			return map[string]any{"config": archiveConfig(in.Config, a.keys, storages)}, nil
		}
	}
	return nil, fmt.Errorf("no config of VM %d (created %d) is remembered", a.ref.vmid, a.ref.ctime)
}

// DeviceName is the device name of a disk in an archive, as vzdump names a VM's drives.
func DeviceName(key string) string { return "drive-" + key }

// archiveConfig is the guest config of an archive as vzdump's assemble writes it: the current
// section only (no pending changes, snapshots or special sections), without unused disks,
// lock and parent; then one map line per restored disk. A disk the point does not restore gets
// backup=0, so PVE's restore comments it out instead of keeping a reference to the original
// VM's volume in the new VM.
func archiveConfig(raw string, keys []string, storages map[string]string) string {
	restored := map[string]bool{}
	for _, k := range keys {
		restored[k] = true
	}
	var b strings.Builder
	sc := bufio.NewScanner(strings.NewReader(raw))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "[") {
			break // [PENDING], [special:…] or the first snapshot: the rest is not the config
		}
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#qmdump#") || strings.HasPrefix(line, "#vzdump#") {
			continue
		}
		key, value, ok := strings.Cut(line, ":")
		if ok && !strings.HasPrefix(line, "#") {
			value = strings.TrimSpace(value)
			switch {
			case key == "lock" || key == "parent" || strings.HasPrefix(key, "unused"):
				continue
			case pve.IsDiskKey(key) && !restored[key] && isVolume(value):
				line = key + ": " + withoutBackup(value)
			}
		}
		b.WriteString(line + "\n")
	}
	for _, k := range keys {
		fmt.Fprintf(&b, "#qmdump#map:%s:%s:%s:raw:\n", k, DeviceName(k), storages[k])
	}
	return b.String()
}

// isVolume: a drive value on a storage, not a CD-ROM, passthrough device or "none".
func isVolume(v string) bool {
	opts := pve.ParsePropertyString(v, "file")
	if opts["media"] == "cdrom" {
		return false
	}
	_, err := pve.ParseVolid(opts["file"])
	return err == nil
}

// withoutBackup sets backup=0 on a drive value.
func withoutBackup(v string) string {
	parts := strings.Split(v, ",")
	out := parts[:0]
	for _, p := range parts {
		if !strings.HasPrefix(p, "backup=") {
			out = append(out, p)
		}
	}
	return strings.Join(append(out, "backup=0"), ",")
}
