// Package lvm runs LVM through pvesnap's runner with machine-readable output (JSON reports,
// sizes in bytes) and validated names, and holds the copy engine (lvm/engine) that copies
// logical volumes with array offloads.
package lvm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/pvesnap/pvesnap/daemon/runner"
)

// LVM issues LVM commands.
type LVM struct {
	Run runner.Runner
}

// nameRe is what LVM accepts for VG and LV names; never starting with '-'.
var nameRe = regexp.MustCompile(`^[A-Za-z0-9+_.][A-Za-z0-9+_.-]{0,126}$`)

// CheckName validates a VG or LV name before it reaches a command.
func CheckName(kind, s string) error {
	if !nameRe.MatchString(s) || s == "." || s == ".." || strings.HasPrefix(s, "snapshot") || strings.HasPrefix(s, "pvmove") {
		return fmt.Errorf("invalid %s name %q", kind, s)
	}
	return nil
}

// LV is a logical volume as lvs reports it.
type LV struct {
	VG, Name  string
	UUID      string
	Size      int64
	Attr      string
	Path      string // /dev/vg/lv (empty when inactive)
	DMPath    string
	Time      time.Time // creation time (lv_time)
	Tags      []string
	Pool      string // thin pool of a thin LV
	Origin    string // origin of a snapshot
	Active    bool
	Major     int
	Minor     int
	Segments  int
	DataUsage string
}

// Thin reports a thin volume (attr type 'V').
func (l LV) Thin() bool { return len(l.Attr) > 0 && l.Attr[0] == 'V' }

// ThinPool reports a thin pool (attr type 't').
func (l LV) ThinPool() bool { return len(l.Attr) > 0 && l.Attr[0] == 't' }

// PV is a physical volume.
type PV struct {
	Name    string
	VG      string
	UUID    string
	Size    int64
	PEStart int64
	DevSize int64
}

// VG is a volume group.
type VG struct {
	Name       string
	UUID       string
	Size, Free int64
	ExtentSize int64
	PVCount    int
	LVCount    int
}

const lvFields = "vg_name,lv_name,lv_uuid,lv_size,lv_attr,lv_path,lv_dm_path,lv_time,lv_tags,pool_lv,origin,lv_active,lv_kernel_major,lv_kernel_minor,seg_count,data_percent"

type report struct {
	Report []map[string][]map[string]string `json:"report"`
}

// parseReport decodes `--reportformat json` output for one kind ("lv", "pv", "vg").
func parseReport(b []byte, kind string) ([]map[string]string, error) {
	var r report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("LVM JSON report: %w", err)
	}
	var out []map[string]string
	for _, rep := range r.Report {
		out = append(out, rep[kind]...)
	}
	return out, nil
}

func atoi64(s string) int64 {
	n, _ := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	return n
}

// parseTime reads lv_time ("2026-11-22 02:00:00 +0000").
func parseTime(s string) time.Time {
	t, err := time.Parse("2006-01-02 15:04:05 -0700", strings.TrimSpace(s))
	if err != nil {
		return time.Time{}
	}
	return t
}

func splitTags(s string) []string {
	var out []string
	for _, t := range strings.Split(s, ",") {
		if t = strings.TrimSpace(t); t != "" {
			out = append(out, t)
		}
	}
	return out
}

// ParseLVs decodes an lvs JSON report with lvFields.
func ParseLVs(b []byte) ([]LV, error) {
	rows, err := parseReport(b, "lv")
	if err != nil {
		return nil, err
	}
	var out []LV
	for _, r := range rows {
		out = append(out, LV{VG: r["vg_name"], Name: r["lv_name"], UUID: r["lv_uuid"], Size: atoi64(r["lv_size"]),
			Attr: r["lv_attr"], Path: r["lv_path"], DMPath: r["lv_dm_path"], Time: parseTime(r["lv_time"]),
			Tags: splitTags(r["lv_tags"]), Pool: r["pool_lv"], Origin: r["origin"], Active: r["lv_active"] == "active",
			Major: int(atoi64(r["lv_kernel_major"])), Minor: int(atoi64(r["lv_kernel_minor"])),
			Segments: int(atoi64(r["seg_count"])), DataUsage: r["data_percent"]})
	}
	return out, nil
}

func (l *LVM) report(ctx context.Context, cmd, fields string, args ...string) ([]byte, error) {
	argv := append([]string{cmd, "--reportformat", "json", "--units", "b", "--nosuffix", "-o", fields}, args...)
	return l.Run.Run(ctx, argv)
}

// LVs lists the LVs of vg ("" = all VGs).
func (l *LVM) LVs(ctx context.Context, vg string) ([]LV, error) {
	var args []string
	if vg != "" {
		if err := CheckName("volume group", vg); err != nil {
			return nil, err
		}
		args = append(args, vg)
	}
	b, err := l.report(ctx, "lvs", lvFields, args...)
	if err != nil {
		return nil, err
	}
	return ParseLVs(b)
}

// ErrNotFound is returned for a missing LV, VG or PV.
var ErrNotFound = errors.New("not found")

// LV returns one LV.
func (l *LVM) LV(ctx context.Context, vg, name string) (LV, error) {
	if err := CheckName("logical volume", name); err != nil {
		return LV{}, err
	}
	lvs, err := l.LVs(ctx, vg)
	if err != nil {
		return LV{}, err
	}
	for _, lv := range lvs {
		if lv.Name == name {
			return lv, nil
		}
	}
	return LV{}, fmt.Errorf("logical volume %s/%s: %w", vg, name, ErrNotFound)
}

// PVs lists physical volumes, of one VG when vg is set.
func (l *LVM) PVs(ctx context.Context, vg string) ([]PV, error) {
	b, err := l.report(ctx, "pvs", "pv_name,vg_name,pv_uuid,pv_size,pe_start,dev_size")
	if err != nil {
		return nil, err
	}
	rows, err := parseReport(b, "pv")
	if err != nil {
		return nil, err
	}
	var out []PV
	for _, r := range rows {
		if vg != "" && r["vg_name"] != vg {
			continue
		}
		out = append(out, PV{Name: r["pv_name"], VG: r["vg_name"], UUID: r["pv_uuid"], Size: atoi64(r["pv_size"]),
			PEStart: atoi64(r["pe_start"]), DevSize: atoi64(r["dev_size"])})
	}
	return out, nil
}

// VGs lists volume groups.
func (l *LVM) VGs(ctx context.Context) ([]VG, error) {
	b, err := l.report(ctx, "vgs", "vg_name,vg_uuid,vg_size,vg_free,vg_extent_size,pv_count,lv_count")
	if err != nil {
		return nil, err
	}
	rows, err := parseReport(b, "vg")
	if err != nil {
		return nil, err
	}
	var out []VG
	for _, r := range rows {
		out = append(out, VG{Name: r["vg_name"], UUID: r["vg_uuid"], Size: atoi64(r["vg_size"]), Free: atoi64(r["vg_free"]),
			ExtentSize: atoi64(r["vg_extent_size"]), PVCount: int(atoi64(r["pv_count"])), LVCount: int(atoi64(r["lv_count"]))})
	}
	return out, nil
}

// CreateOptions describe a new LV.
type CreateOptions struct {
	ThinPool string   // thin LV in vg/<pool> (virtual size); else a thick (linear) LV
	Tags     []string // e.g. pve-vm-<vmid>
}

var tagRe = regexp.MustCompile(`^[A-Za-z0-9_+.][A-Za-z0-9_+./=!:&#-]{0,127}$`)

func checkTag(t string) error {
	if !tagRe.MatchString(t) {
		return fmt.Errorf("invalid LVM tag %q", t)
	}
	return nil
}

// Create makes an LV of size bytes (rounded up to KiB), active, without autoactivation: what
// PVE's LVM plugin runs (lvcreate -aly -Wy --yes --size <KiB>k --setautoactivation n …); with
// o.ThinPool, a thin LV as PVE's LVM-thin plugin makes it (-V <KiB>k --thinpool vg/pool).
func (l *LVM) Create(ctx context.Context, vg, name string, size int64, o CreateOptions) error {
	if err := CheckName("volume group", vg); err != nil {
		return err
	}
	if err := CheckName("logical volume", name); err != nil {
		return err
	}
	if size <= 0 {
		return fmt.Errorf("LV size %d", size)
	}
	kib := (size + 1023) / 1024
	argv := []string{"lvcreate", "-aly", "-Wy", "--yes", "--name", name}
	if o.ThinPool != "" {
		if err := CheckName("thin pool", o.ThinPool); err != nil {
			return err
		}
		// No --setautoactivation: lvcreate refuses it for thin LVs ("Option
		// --setautoactivation is unsupported with thins"), as PVE's LvmThinPlugin knows.
		argv = append(argv, "-V", fmt.Sprintf("%dk", kib), "--thinpool", vg+"/"+o.ThinPool)
	} else {
		argv = append(argv, "--setautoactivation", "n", "--size", fmt.Sprintf("%dk", kib))
	}
	for _, t := range o.Tags {
		if err := checkTag(t); err != nil {
			return err
		}
		argv = append(argv, "--addtag", t)
	}
	if o.ThinPool == "" {
		argv = append(argv, vg)
	}
	_, err := l.Run.Run(ctx, argv)
	return err
}

// ThinSnapshot makes a thin snapshot of vg/origin named name, with activation skip off so it
// activates like any volume, and active: one lvcreate (-kn -ay), no lvchange after it,
// tagged with tags.
func (l *LVM) ThinSnapshot(ctx context.Context, vg, origin, name string, tags ...string) error {
	for k, v := range map[string]string{"volume group": vg, "origin": origin, "snapshot": name} {
		if err := CheckName(k, v); err != nil {
			return err
		}
	}
	argv := []string{"lvcreate", "--yes", "-s", "-kn", "-ay", "-n", name}
	for _, t := range tags {
		if err := checkTag(t); err != nil {
			return err
		}
		argv = append(argv, "--addtag", t)
	}
	_, err := l.Run.Run(ctx, append(argv, vg+"/"+origin))
	return err
}

// DelTag removes tag from vg/name.
func (l *LVM) DelTag(ctx context.Context, vg, name, tag string) error {
	if err := CheckName("volume group", vg); err != nil {
		return err
	}
	if err := CheckName("logical volume", name); err != nil {
		return err
	}
	if err := checkTag(tag); err != nil {
		return err
	}
	_, err := l.Run.Run(ctx, []string{"lvchange", "--deltag", tag, vg + "/" + name})
	return err
}

// Activate activates or deactivates vg/name.
func (l *LVM) Activate(ctx context.Context, vg, name string, on bool) error {
	if err := CheckName("volume group", vg); err != nil {
		return err
	}
	if err := CheckName("logical volume", name); err != nil {
		return err
	}
	flag := "-an"
	if on {
		flag = "-ay"
	}
	_, err := l.Run.Run(ctx, []string{"lvchange", flag, vg + "/" + name})
	return err
}

// Remove removes vg/name (it is deactivated first).
func (l *LVM) Remove(ctx context.Context, vg, name string) error {
	if err := CheckName("volume group", vg); err != nil {
		return err
	}
	if err := CheckName("logical volume", name); err != nil {
		return err
	}
	_, err := l.Run.Run(ctx, []string{"lvremove", "-f", vg + "/" + name})
	return err
}

// VGChange activates or deactivates every LV of vg.
func (l *LVM) VGChange(ctx context.Context, vg string, on bool) error {
	if err := CheckName("volume group", vg); err != nil {
		return err
	}
	flag := "-an"
	if on {
		flag = "-ay"
	}
	_, err := l.Run.Run(ctx, []string{"vgchange", flag, vg})
	return err
}

// ImportClone imports the PVs of a cloned VG under a new name with new UUIDs
// (vgimportclone), so it can live beside its original.
func (l *LVM) ImportClone(ctx context.Context, newName string, devices ...string) error {
	if err := CheckName("volume group", newName); err != nil {
		return err
	}
	if len(devices) == 0 {
		return errors.New("vgimportclone: no devices")
	}
	argv := []string{"vgimportclone", "--basevgname", newName}
	for _, d := range devices {
		if !strings.HasPrefix(d, "/dev/") || strings.ContainsAny(d, " \t\n") {
			return fmt.Errorf("vgimportclone: refusing device %q", d)
		}
		argv = append(argv, d)
	}
	_, err := l.Run.Run(ctx, argv, runner.Timeout(5*time.Minute))
	return err
}

// Rename renames an LV within its VG.
func (l *LVM) Rename(ctx context.Context, vg, from, to string) error {
	for _, n := range []string{from, to} {
		if err := CheckName("logical volume", n); err != nil {
			return err
		}
	}
	if err := CheckName("volume group", vg); err != nil {
		return err
	}
	_, err := l.Run.Run(ctx, []string{"lvrename", vg, from, to})
	return err
}

// RemoveVG removes an (inactive) VG and its PVs' labels from devices: used only for VGs pvesnap
// itself imported.
func (l *LVM) RemoveVG(ctx context.Context, vg string, devices ...string) error {
	if err := CheckName("volume group", vg); err != nil {
		return err
	}
	if _, err := l.Run.Run(ctx, []string{"vgremove", "-f", vg}); err != nil {
		return err
	}
	return nil
}

// PVScanCache tells LVM to forget devices that went away (after a disconnect).
func (l *LVM) PVScanCache(ctx context.Context) error {
	_, err := l.Run.Run(ctx, []string{"pvscan", "--cache"})
	return err
}
