package fakecli

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pvesnap/pvesnap/daemon/runner"
	"github.com/pvesnap/pvesnap/sim/volstore"
)

// VG is an emulated volume group: its LVs are the volumes of a store; ThinPool names the
// pool LV (for lvmthin storages), which is reported but holds no file.
type VG struct {
	Store    volstore.Store
	ThinPool string
	// PVs are the VG's physical volumes (device paths) as pvs reports them.
	PVs []string
}

// LVM emulates lvs, lvcreate, lvchange and lvremove over volume stores.
type LVM struct {
	VGs   map[string]VG
	mu    sync.Mutex
	Calls [][]string
}

// Run implements runner.Runner.
func (l *LVM) Run(ctx context.Context, argv []string, _ ...runner.Option) ([]byte, error) {
	l.mu.Lock()
	l.Calls = append(l.Calls, append([]string(nil), argv...))
	l.mu.Unlock()
	if len(argv) == 0 {
		return nil, fail(argv, 3, "no command")
	}
	switch argv[0] {
	case "lvs":
		return l.lvs(argv)
	case "pvs":
		return l.pvs()
	case "lvcreate":
		return l.lvcreate(argv)
	case "lvchange":
		return l.lvchange(argv)
	case "lvremove":
		return l.lvremove(argv)
	case "lvrename":
		return l.lvrename(argv)
	}
	return nil, fail(argv, 3, fmt.Sprintf("fakecli: %s not emulated", argv[0]))
}

func (l *LVM) vgOf(argv []string, spec string) (VG, string, string, error) {
	vg, lv, _ := strings.Cut(spec, "/")
	g, ok := l.VGs[vg]
	if !ok {
		return VG{}, "", "", fail(argv, 5, fmt.Sprintf("  Volume group \"%s\" not found\n  Cannot process volume group %s", vg, vg))
	}
	return g, vg, lv, nil
}

func (l *LVM) lvs(argv []string) ([]byte, error) {
	vgName := argv[len(argv)-1]
	var names []string
	if strings.HasPrefix(vgName, "-") || strings.Contains(vgName, ",") {
		for n := range l.VGs {
			names = append(names, n)
		}
	} else {
		if _, ok := l.VGs[vgName]; !ok {
			return nil, fail(argv, 5, fmt.Sprintf("  Volume group \"%s\" not found\n  Cannot process volume group %s", vgName, vgName))
		}
		names = []string{vgName}
	}
	var rows []map[string]string
	for _, vn := range names {
		g := l.VGs[vn]
		if g.ThinPool != "" {
			rows = append(rows, map[string]string{"vg_name": vn, "lv_name": g.ThinPool, "lv_attr": "twi-aotz--", "lv_size": "107374182400",
				"lv_active": "active", "lv_dm_path": "/dev/mapper/" + vn + "-" + g.ThinPool, "seg_count": "1"})
		}
		vols, err := g.Store.List()
		if err != nil {
			return nil, err
		}
		for _, v := range vols {
			attr, pool := "-wi-a-----", ""
			if g.ThinPool != "" {
				attr, pool = "Vwi-a-tz--", g.ThinPool
			}
			if !v.Meta.Active && v.Meta.Props["activation"] == "off" {
				attr = attr[:4] + "-" + attr[5:]
			}
			origin := ""
			if v.Meta.Origin != "" {
				origin, _, _ = strings.Cut(v.Meta.Origin, "@")
			}
			rows = append(rows, map[string]string{"vg_name": vn, "lv_name": v.Name, "lv_uuid": v.Meta.UUID,
				// The LV's device is the store's file: what reads and writes it reaches the volume.
				"lv_size": strconv.FormatInt(v.Size, 10), "lv_attr": attr, "lv_path": g.Store.Path(v.Name),
				"lv_dm_path": "/dev/mapper/" + vn + "-" + strings.ReplaceAll(v.Name, "-", "--"),
				"lv_time":    time.Unix(v.Meta.Created, 0).UTC().Format("2006-01-02 15:04:05 -0700"),
				"lv_tags":    strings.Join(v.Meta.Tags, ","), "pool_lv": pool, "origin": origin, "lv_active": "active",
				"lv_kernel_major": "253", "lv_kernel_minor": "0", "seg_count": "1", "data_percent": ""})
		}
	}
	b, _ := json.Marshal(map[string]any{"report": []map[string]any{{"lv": rows}}})
	return b, nil
}

func (l *LVM) pvs() ([]byte, error) {
	rows := []map[string]string{}
	for _, vn := range slices.Sorted(maps.Keys(l.VGs)) {
		for i, pv := range l.VGs[vn].PVs {
			rows = append(rows, map[string]string{"pv_name": pv, "vg_name": vn, "pv_uuid": fmt.Sprintf("pv-%s-%d", vn, i),
				"pv_size": "107374182400", "pe_start": "1048576", "dev_size": "107374182400"})
		}
	}
	b, _ := json.Marshal(map[string]any{"report": []map[string]any{{"pv": rows}}})
	return b, nil
}

func argAfter(argv []string, flag string) string {
	for i, a := range argv {
		if a == flag && i+1 < len(argv) {
			return argv[i+1]
		}
	}
	return ""
}

func kib(s string) (int64, error) {
	n, err := strconv.ParseInt(strings.TrimSuffix(s, "k"), 10, 64)
	return n * 1024, err
}

func (l *LVM) lvcreate(argv []string) ([]byte, error) {
	name := argAfter(argv, "--name")
	if name == "" {
		name = argAfter(argv, "-n")
	}
	var tags []string
	for i, a := range argv {
		if a == "--addtag" && i+1 < len(argv) {
			tags = append(tags, argv[i+1])
		}
	}
	if slices.Contains(argv, "-s") { // thin snapshot: lvcreate --yes -s -kn -ay -n <name> vg/origin
		g, vg, origin, err := l.vgOf(argv, argv[len(argv)-1])
		if err != nil {
			return nil, err
		}
		if g.ThinPool == "" {
			return nil, fail(argv, 5, "  Please specify either size or extents with snapshots.")
		}
		if g.Store.Exists(name) {
			return nil, fail(argv, 5, fmt.Sprintf("  Logical Volume \"%s\" already exists in volume group \"%s\"", name, vg))
		}
		if !g.Store.Exists(origin) {
			return nil, fail(argv, 5, fmt.Sprintf("  Failed to find logical volume \"%s/%s\"", vg, origin))
		}
		fi, _ := os.Stat(g.Store.Path(origin))
		if err := g.Store.Create(name, fi.Size(), volstore.Meta{Origin: origin + "@thin",
			// lvm2 gives thin snapshots the activation skip flag unless -kn; skipped LVs stay
			// inactive, others are activated unless -an.
			Active: slices.Contains(argv, "-kn") && !slices.Contains(argv, "-an")}); err != nil {
			return nil, err
		}
		return nil, volstore.CopySparse(g.Store.Path(origin), g.Store.Path(name))
	}
	var g VG
	var vg string
	var size int64
	var err error
	if pool := argAfter(argv, "--thinpool"); pool != "" {
		if slices.Contains(argv, "--setautoactivation") { // lvm2 2.03.16, found in the lab
			return nil, fail(argv, 3, "Option --setautoactivation is unsupported with thins.")
		}
		g, vg, _, err = l.vgOf(argv, pool)
		if err != nil {
			return nil, err
		}
		size, err = kib(argAfter(argv, "-V"))
	} else {
		g, vg, _, err = l.vgOf(argv, argv[len(argv)-1])
		if err != nil {
			return nil, err
		}
		size, err = kib(argAfter(argv, "--size"))
	}
	if err != nil || size <= 0 {
		return nil, fail(argv, 3, "  Invalid size")
	}
	size = (size + 4<<20 - 1) / (4 << 20) * (4 << 20) // 4 MiB extents
	if g.Store.Exists(name) {
		return nil, fail(argv, 5, fmt.Sprintf("  Logical Volume \"%s\" already exists in volume group \"%s\"", name, vg))
	}
	return nil, g.Store.Create(name, size, volstore.Meta{Tags: tags, Active: true})
}

func (l *LVM) lvchange(argv []string) ([]byte, error) {
	if len(argv) != 3 {
		return nil, fail(argv, 3, "fakecli: unsupported lvchange form")
	}
	g, vg, lv, err := l.vgOf(argv, argv[2])
	if err != nil {
		return nil, err
	}
	if !g.Store.Exists(lv) {
		return nil, fail(argv, 5, fmt.Sprintf("  Failed to find logical volume \"%s/%s\"", vg, lv))
	}
	m, _ := g.Store.Meta(lv)
	m.Active = argv[1] == "-ay"
	return nil, g.Store.SetMeta(lv, m)
}

func (l *LVM) lvremove(argv []string) ([]byte, error) {
	g, vg, lv, err := l.vgOf(argv, argv[len(argv)-1])
	if err != nil {
		return nil, err
	}
	if err := g.Store.Destroy(lv, true); err != nil {
		return nil, fail(argv, 5, fmt.Sprintf("  Failed to find logical volume \"%s/%s\"", vg, lv))
	}
	return nil, nil
}

// lvrename: lvrename <vg> <from> <to>
func (l *LVM) lvrename(argv []string) ([]byte, error) {
	if len(argv) != 4 {
		return nil, fail(argv, 3, "fakecli: unsupported lvrename form")
	}
	g, vg, _, err := l.vgOf(argv, argv[1])
	if err != nil {
		return nil, err
	}
	if !g.Store.Exists(argv[2]) {
		return nil, fail(argv, 5, fmt.Sprintf("  Existing logical volume \"%s\" not found in volume group \"%s\"", argv[2], vg))
	}
	if g.Store.Exists(argv[3]) {
		return nil, fail(argv, 5, fmt.Sprintf("  Logical Volume \"%s\" already exists in volume group \"%s\"", argv[3], vg))
	}
	return nil, g.Store.Rename(argv[2], argv[3])
}

// Dispatch routes a command to the emulator for its program.
type Dispatch struct {
	ZFS *ZFS
	LVM *LVM
	// QM answers qm commands (guest-agent calls).
	QM runner.Func
}

// QMAgentless answers qm guest commands as PVE does for a VM without a running agent.
var QMAgentless runner.Func = func(ctx context.Context, argv []string) ([]byte, error) {
	if len(argv) >= 4 && argv[1] == "guest" && argv[2] == "cmd" {
		return nil, fail(argv, 255, "QEMU guest agent is not running")
	}
	return nil, fail(argv, 2, "fakecli: qm "+strings.Join(argv[1:], " ")+" not emulated")
}

// Run implements runner.Runner.
func (d *Dispatch) Run(ctx context.Context, argv []string, opts ...runner.Option) ([]byte, error) {
	if len(argv) > 0 && argv[0] == "qm" && d.QM != nil {
		return d.QM(ctx, argv)
	}
	if len(argv) > 0 && argv[0] == "zfs" && d.ZFS != nil {
		return d.ZFS.Run(ctx, argv, opts...)
	}
	if d.LVM != nil {
		return d.LVM.Run(ctx, argv, opts...)
	}
	return nil, fail(argv, 127, "fakecli: no emulator for "+strings.Join(argv, " "))
}
