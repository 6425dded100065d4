package fakecli

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/pvesnap/pvesnap/sim/volstore"
)

func thinVG(t *testing.T) *LVM {
	t.Helper()
	st := volstore.Store{Dir: t.TempDir()}
	l := &LVM{VGs: map[string]VG{"pve": {Store: st, ThinPool: "data"}}}
	if r := l.Exec([]string{"lvcreate", "-aly", "-Wy", "--yes", "--name", "vm-100-disk-0", "-V", "4096k", "--thinpool", "pve/data"}); r.Code != 0 {
		t.Fatalf("lvcreate: %d %s", r.Code, r.Stderr)
	}
	return l
}

func lvOrigins(t *testing.T, l *LVM) map[string]string {
	t.Helper()
	r := l.Exec([]string{"lvs", "--reportformat", "json", "--units", "b", "--nosuffix", "-o", "lv_name,origin", "pve"})
	if r.Code != 0 {
		t.Fatalf("lvs: %s", r.Stderr)
	}
	var rep struct {
		Report []struct{ LV []map[string]string } `json:"report"`
	}
	if err := json.Unmarshal(r.Stdout, &rep); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, lv := range rep.Report[0].LV {
		out[lv["lv_name"]] = lv["origin"]
	}
	return out
}

// A thin snapshot shares the pool's blocks with its origin but does not depend on it: lvm2
// removes the origin first without complaint, and the snapshot keeps its data and loses its
// origin in lvs.
func TestThinOriginRemovableBeforeItsSnapshot(t *testing.T) {
	l := thinVG(t)
	g := l.VGs["pve"]
	if err := writeAt(g.Store.Path("vm-100-disk-0"), "data before the snapshot"); err != nil {
		t.Fatal(err)
	}
	if r := l.Exec([]string{"lvcreate", "--yes", "-s", "-kn", "-ay", "-n", "vm-9999-snap", "pve/vm-100-disk-0"}); r.Code != 0 {
		t.Fatalf("thin snapshot: %d %s", r.Code, r.Stderr)
	}
	if o := lvOrigins(t, l)["vm-9999-snap"]; o != "vm-100-disk-0" {
		t.Fatalf("snapshot's origin %q, want vm-100-disk-0", o)
	}
	if r := l.Exec([]string{"lvremove", "-f", "pve/vm-100-disk-0"}); r.Code != 0 {
		t.Fatalf("removing the origin of a thin snapshot: exit %d %s (lvm2 allows it)", r.Code, r.Stderr)
	}
	lvs := lvOrigins(t, l)
	if o, ok := lvs["vm-9999-snap"]; !ok || o != "" {
		t.Fatalf("after removing the origin: %v (want the snapshot, without origin)", lvs)
	}
	if b, err := readAll(g.Store.Path("vm-9999-snap")); err != nil || !strings.HasPrefix(b, "data before the snapshot") {
		t.Fatalf("snapshot lost its data: %q %v", b[:min(len(b), 30)], err)
	}
}

// lvm2's name rules for a new LV: 127 characters at most (NAME_LEN 128 with the NUL), its
// character set, and reserved prefixes and component suffixes; all refused with exit code 3.
func TestLVNameRules(t *testing.T) {
	l := thinVG(t)
	create := func(name string) Result {
		return l.Exec([]string{"lvcreate", "-aly", "-Wy", "--yes", "--name", name, "-V", "4096k", "--thinpool", "pve/data"})
	}
	ok127 := "vm-100-disk-" + strings.Repeat("a", 127-len("vm-100-disk-"))
	if r := create(ok127); r.Code != 0 {
		t.Fatalf("127-character name refused: %d %s", r.Code, r.Stderr)
	}
	for name, want := range map[string]string{
		ok127 + "b":          `Logical volume name "` + ok127 + `b" is invalid.`,
		"vm-100-disk@1":      `Logical volume name "vm-100-disk@1" is invalid.`,
		"-vm-100":            `Logical volume name "-vm-100" is invalid.`,
		"snapshot-of-100":    `Names starting "snapshot" are reserved.`,
		"vm-100-disk_tmeta1": `Names including "_tmeta" are reserved.`,
	} {
		r := create(name)
		if r.Code != 3 || !strings.Contains(r.Stderr, want) {
			t.Errorf("lvcreate --name %s: exit %d %q, want exit 3 and %q", name, r.Code, r.Stderr, want)
		}
	}
	long := "vm-9999-" + strings.Repeat("s", 120)
	if r := l.Exec([]string{"lvcreate", "--yes", "-s", "-kn", "-ay", "-n", long, "pve/vm-100-disk-0"}); r.Code != 3 {
		t.Errorf("thin snapshot with a %d-character name: exit %d %s", len(long), r.Code, r.Stderr)
	}
}
