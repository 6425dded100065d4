package fakecli

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

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

// LVM emulates lvs, pvs, lvcreate, lvchange and lvremove over volume stores, with lvm2's
// exit codes: 3 for a refused command line (EINVALID_CMD_LINE), 5 for a failed command
// (ECMD_FAILED).
type LVM struct {
	VGs   map[string]VG
	mu    sync.Mutex
	Calls [][]string
}

const (
	lvmBadCmdLine = 3
	lvmFailed     = 5
)

// Exec answers one LVM command.
func (l *LVM) Exec(argv []string) Result {
	l.mu.Lock()
	l.Calls = append(l.Calls, append([]string(nil), argv...))
	l.mu.Unlock()
	if len(argv) == 0 {
		return fail(lvmBadCmdLine, "no command")
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
	return fail(127, fmt.Sprintf("fakecli: %s not emulated", argv[0]))
}

func noVG(vg string) Result {
	return fail(lvmFailed, fmt.Sprintf("  Volume group \"%s\" not found\n  Cannot process volume group %s", vg, vg))
}

func (l *LVM) vgOf(spec string) (VG, string, string, *Result) {
	vg, lv, _ := strings.Cut(spec, "/")
	g, ok := l.VGs[vg]
	if !ok {
		r := noVG(vg)
		return VG{}, "", "", &r
	}
	return g, vg, lv, nil
}

// NameMax is lvm2's limit on VG and LV names: NAME_LEN (128) including the terminating NUL.
const NameMax = 127

// checkLVName is lvm2's validate_restricted_lvname_param for a new LV's name (tools/toollib.c,
// lib/misc/lvm-string.c): 1 to 127 characters of [A-Za-z0-9._+-], not starting with '-',
// not "." or "..", no reserved prefix ("snapshot", "pvmove") and no reserved component
// string ("_tmeta", "_rimage", …).
func checkLVName(name string) *Result {
	valid := name != "" && name[0] != '-' && name != "." && name != ".." && len(name) <= NameMax
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' || c == '+') {
			valid = false
		}
	}
	if !valid {
		r := fail(lvmBadCmdLine, fmt.Sprintf("  Logical volume name \"%s\" is invalid.", name))
		return &r
	}
	for _, p := range []string{"pvmove", "snapshot"} {
		if strings.HasPrefix(name, p) {
			r := fail(lvmBadCmdLine, fmt.Sprintf("  Names starting \"%s\" are reserved. Please choose a different LV name.", p))
			return &r
		}
	}
	if i := strings.IndexByte(name, '_'); i >= 0 {
		for _, s := range []string{"_cdata", "_cmeta", "_corig", "_cpool", "_cvol", "_wcorig", "_mimage", "_mlog", "_rimage",
			"_rmeta", "_tdata", "_tmeta", "_vdata", "_imeta", "_iorig", "_pmspare", "_vorigin"} {
			if strings.Contains(name[i:], s) {
				r := fail(lvmBadCmdLine, fmt.Sprintf("  Names including \"%s\" are reserved. Please choose a different LV name.", s))
				return &r
			}
		}
	}
	return nil
}

func (l *LVM) lvs(argv []string) Result {
	vgName := argv[len(argv)-1]
	var names []string
	if strings.HasPrefix(vgName, "-") || strings.Contains(vgName, ",") {
		names = slices.Sorted(maps.Keys(l.VGs))
	} else {
		if _, ok := l.VGs[vgName]; !ok {
			return noVG(vgName)
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
			return fail(lvmFailed, err.Error())
		}
		exists := map[string]bool{}
		for _, v := range vols {
			exists[v.Name] = true
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
			if o := v.Meta.ThinOrigin; o != "" && exists[o] {
				origin = o // a removed origin leaves the snapshot without one
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
	return Result{Stdout: b}
}

func (l *LVM) pvs() Result {
	rows := []map[string]string{}
	for _, vn := range slices.Sorted(maps.Keys(l.VGs)) {
		for i, pv := range l.VGs[vn].PVs {
			rows = append(rows, map[string]string{"pv_name": pv, "vg_name": vn, "pv_uuid": fmt.Sprintf("pv-%s-%d", vn, i),
				"pv_size": "107374182400", "pe_start": "1048576", "dev_size": "107374182400"})
		}
	}
	b, _ := json.Marshal(map[string]any{"report": []map[string]any{{"pv": rows}}})
	return Result{Stdout: b}
}

// lvcreateArgs are the lvcreate options the emulator knows, parsed like lvm2's getopt: a
// value follows its option; anything else is refused as lvm2 refuses an unknown option.
type lvcreateArgs struct {
	name, size, virtual, thinpool string
	tags                          []string
	snapshot, skipOff, activate   bool
	deactivate, autoactivation    bool
	positional                    []string
}

func parseLVCreate(argv []string) (lvcreateArgs, *Result) {
	var a lvcreateArgs
	a.activate = true
	for i := 1; i < len(argv); i++ {
		arg := argv[i]
		value := func() (string, bool) {
			if i+1 >= len(argv) {
				return "", false
			}
			i++
			return argv[i], true
		}
		var ok = true
		switch arg {
		case "--yes", "-Wy", "-y":
		case "-aly", "-ay":
			a.activate = true
		case "-an":
			a.activate, a.deactivate = false, true
		case "-s", "--snapshot":
			a.snapshot = true
		case "-kn", "--setactivationskip=n":
			a.skipOff = true
		case "-n", "--name":
			a.name, ok = value()
		case "-L", "--size":
			a.size, ok = value()
		case "-V", "--virtualsize":
			a.virtual, ok = value()
		case "--thinpool", "-T":
			a.thinpool, ok = value()
		case "--addtag":
			var t string
			t, ok = value()
			a.tags = append(a.tags, t)
		case "--setautoactivation":
			_, ok = value()
			a.autoactivation = true
		default:
			if strings.HasPrefix(arg, "-") {
				r := fail(lvmBadCmdLine, fmt.Sprintf("lvcreate: unrecognized option '%s'\n  Error during parsing of command line.", arg))
				return a, &r
			}
			a.positional = append(a.positional, arg)
		}
		if !ok {
			r := fail(lvmBadCmdLine, fmt.Sprintf("lvcreate: option '%s' requires an argument\n  Error during parsing of command line.", arg))
			return a, &r
		}
	}
	return a, nil
}

// kib reads an lvm2 size argument ("1048576k"; the daemon always passes KiB).
func kib(s string) (int64, error) {
	n, err := strconv.ParseInt(strings.TrimSuffix(strings.ToLower(s), "k"), 10, 64)
	return n * 1024, err
}

func (l *LVM) lvcreate(argv []string) Result {
	a, bad := parseLVCreate(argv)
	if bad != nil {
		return *bad
	}
	if a.name != "" {
		if r := checkLVName(a.name); r != nil {
			return *r
		}
	}
	if a.snapshot { // thin snapshot: lvcreate --yes -s -kn -ay -n <name> vg/origin
		if len(a.positional) != 1 {
			return fail(lvmBadCmdLine, "  Please specify a logical volume to act as the snapshot origin.")
		}
		g, vg, origin, r := l.vgOf(a.positional[0])
		if r != nil {
			return *r
		}
		if g.ThinPool == "" {
			return fail(lvmBadCmdLine, "  Please specify either size or extents with snapshots.")
		}
		if g.Store.Exists(a.name) {
			return fail(lvmFailed, fmt.Sprintf("  Logical Volume \"%s\" already exists in volume group \"%s\"", a.name, vg))
		}
		if !g.Store.Exists(origin) {
			return fail(lvmFailed, fmt.Sprintf("  Failed to find logical volume \"%s/%s\"", vg, origin))
		}
		fi, err := os.Stat(g.Store.Path(origin))
		if err != nil {
			return fail(lvmFailed, err.Error())
		}
		// lvm2 gives thin snapshots the activation skip flag unless -kn; skipped LVs stay
		// inactive, others are activated unless -an.
		if err := g.Store.Create(a.name, fi.Size(), volstore.Meta{ThinOrigin: origin, Tags: a.tags, Active: a.skipOff && !a.deactivate}); err != nil {
			return fail(lvmFailed, err.Error())
		}
		if err := volstore.CopySparse(g.Store.Path(origin), g.Store.Path(a.name)); err != nil {
			return fail(lvmFailed, err.Error())
		}
		return Result{Stdout: []byte(fmt.Sprintf("  Logical volume \"%s\" created.\n", a.name))}
	}
	var g VG
	var vg, sizeArg string
	if a.thinpool != "" {
		if a.autoactivation { // lvm2 2.03.16, found in the lab
			return fail(lvmBadCmdLine, "Option --setautoactivation is unsupported with thins.")
		}
		var r *Result
		if g, vg, _, r = l.vgOf(a.thinpool); r != nil {
			return *r
		}
		sizeArg = a.virtual
	} else {
		if len(a.positional) != 1 {
			return fail(lvmBadCmdLine, "  Please provide a volume group name")
		}
		var r *Result
		if g, vg, _, r = l.vgOf(a.positional[0]); r != nil {
			return *r
		}
		sizeArg = a.size
	}
	if a.name == "" {
		return fail(lvmBadCmdLine, "  fakecli: lvcreate without --name is not emulated")
	}
	size, err := kib(sizeArg)
	if err != nil || size <= 0 {
		return fail(lvmBadCmdLine, fmt.Sprintf("  Invalid argument for --size: %s", sizeArg))
	}
	size = (size + 4<<20 - 1) / (4 << 20) * (4 << 20) // 4 MiB extents
	if g.Store.Exists(a.name) {
		return fail(lvmFailed, fmt.Sprintf("  Logical Volume \"%s\" already exists in volume group \"%s\"", a.name, vg))
	}
	if err := g.Store.Create(a.name, size, volstore.Meta{Tags: a.tags, Active: !a.deactivate}); err != nil {
		return fail(lvmFailed, err.Error())
	}
	return Result{Stdout: []byte(fmt.Sprintf("  Logical volume \"%s\" created.\n", a.name))}
}

// lvchange -ay|-an VG/LV, and lvchange --deltag TAG VG/LV.
func (l *LVM) lvchange(argv []string) Result {
	deltag := len(argv) == 4 && argv[1] == "--deltag"
	if !deltag && (len(argv) != 3 || (argv[1] != "-ay" && argv[1] != "-an")) {
		return fail(lvmBadCmdLine, "fakecli: only lvchange -ay|-an VG/LV and lvchange --deltag TAG VG/LV are emulated")
	}
	g, vg, lv, r := l.vgOf(argv[len(argv)-1])
	if r != nil {
		return *r
	}
	if !g.Store.Exists(lv) {
		return fail(lvmFailed, fmt.Sprintf("  Failed to find logical volume \"%s/%s\"", vg, lv))
	}
	m, _ := g.Store.Meta(lv)
	if deltag {
		m.Tags = slices.DeleteFunc(m.Tags, func(t string) bool { return t == argv[2] })
		if err := g.Store.SetMeta(lv, m); err != nil {
			return fail(lvmFailed, err.Error())
		}
		return Result{Stdout: []byte(fmt.Sprintf("  Logical volume %s/%s changed.\n", vg, lv))}
	}
	m.Active = argv[1] == "-ay"
	if err := g.Store.SetMeta(lv, m); err != nil {
		return fail(lvmFailed, err.Error())
	}
	return Result{}
}

// lvremove -f VG/LV. A thin snapshot's origin can be removed before the snapshot: they share
// the pool's blocks, and the snapshot keeps its data.
func (l *LVM) lvremove(argv []string) Result {
	g, vg, lv, r := l.vgOf(argv[len(argv)-1])
	if r != nil {
		return *r
	}
	if lv == g.ThinPool && lv != "" {
		return fail(lvmFailed, fmt.Sprintf("  Removing pool \"%s\" will remove its thin volumes: fakecli refuses", lv))
	}
	if err := g.Store.Destroy(lv, true); err != nil {
		return fail(lvmFailed, fmt.Sprintf("  Failed to find logical volume \"%s/%s\"", vg, lv))
	}
	return Result{Stdout: []byte(fmt.Sprintf("  Logical volume \"%s\" successfully removed.\n", lv))}
}

// lvrename VG FROM TO, the form pvesnap uses.
func (l *LVM) lvrename(argv []string) Result {
	if len(argv) != 4 {
		return fail(lvmFailed, "fakecli: unsupported lvrename form")
	}
	g, vg, _, r := l.vgOf(argv[1])
	if r != nil {
		return *r
	}
	if r := checkLVName(argv[3]); r != nil {
		return *r
	}
	if !g.Store.Exists(argv[2]) {
		return fail(lvmFailed, fmt.Sprintf("  Existing logical volume \"%s\" not found in volume group \"%s\"", argv[2], vg))
	}
	if g.Store.Exists(argv[3]) {
		return fail(lvmFailed, fmt.Sprintf("  Logical Volume \"%s\" already exists in volume group \"%s\"", argv[3], vg))
	}
	if err := g.Store.Rename(argv[2], argv[3]); err != nil {
		return fail(lvmFailed, err.Error())
	}
	return Result{Stdout: []byte(fmt.Sprintf("  Renamed \"%s\" to \"%s\" in volume group \"%s\"\n", argv[2], argv[3], vg))}
}
