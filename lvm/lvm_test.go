package lvm

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/pvesnap/pvesnap/daemon/runner"
)

// testdata/*.json were captured from LVM 2.03.16 in the lab (a thick LV, a thin pool, a thin
// LV and its snapshot).
func TestParseCapturedReports(t *testing.T) {
	b, err := os.ReadFile("testdata/lvs.json")
	if err != nil {
		t.Fatal(err)
	}
	lvs, err := ParseLVs(b)
	if err != nil {
		t.Fatal(err)
	}
	by := map[string]LV{}
	for _, lv := range lvs {
		by[lv.Name] = lv
	}
	thick, pool, thin, snap := by["thick"], by["data"], by["vm-100-disk-0"], by["snap1"]
	if thick.Size != 32<<20 || thick.Thin() || thick.Tags[0] != "pve-vm-100" || thick.Path != "/dev/vgj/thick" || !thick.Active {
		t.Errorf("thick %+v", thick)
	}
	if !pool.ThinPool() || !thin.Thin() || thin.Pool != "data" || snap.Origin != "vm-100-disk-0" || snap.Size != 16<<20 {
		t.Errorf("thin %+v pool %+v snap %+v", thin, pool, snap)
	}
	if thin.Time.IsZero() || thin.Time.Location().String() == "" || thin.UUID != "19Yuen-Jag6-kpv6-cF9t-Mthh-ie0V-rv89G9" {
		t.Errorf("creation time and uuid: %+v", thin)
	}
	if thin.Major != 254 || thin.Minor != 5 {
		t.Errorf("device number %d:%d", thin.Major, thin.Minor)
	}
}

func TestCommandsAreArgvWithValidatedNames(t *testing.T) {
	s := runner.NewScript(t.Errorf,
		runner.Step{Argv: []string{"lvcreate", "-aly", "-Wy", "--yes", "--name", "vm-100-disk-1", "--setautoactivation", "n", "--size", "1048576k", "--addtag", "pve-vm-100", "vgp"}},
		runner.Step{Argv: []string{"lvcreate", "-aly", "-Wy", "--yes", "--name", "vm-100-disk-2", "-V", "1k", "--thinpool", "pve/data"}},
		runner.Step{Argv: []string{"lvcreate", "--yes", "-s", "-kn", "-ay", "-n", "vm-101-disk-0", "pve/vm-100-disk-2"}},
		runner.Step{Argv: []string{"lvcreate", "--yes", "-s", "-kn", "-ay", "-n", "tmp-1", "--addtag", "pvesnap-temp", "pve/vm-100-disk-2"}},
		runner.Step{Argv: []string{"lvchange", "--deltag", "pvesnap-temp", "pve/vm-101-disk-0"}},
		runner.Step{Argv: []string{"vgimportclone", "--basevgname", "pvesnap_job1", "/dev/sdc"}},
	)
	l := &LVM{Run: s}
	ctx := context.Background()
	if err := l.Create(ctx, "vgp", "vm-100-disk-1", 1<<30, CreateOptions{Tags: []string{"pve-vm-100"}}); err != nil {
		t.Fatal(err)
	}
	if err := l.Create(ctx, "pve", "vm-100-disk-2", 1000, CreateOptions{ThinPool: "data"}); err != nil {
		t.Fatal(err)
	}
	if err := l.ThinSnapshot(ctx, "pve", "vm-100-disk-2", "vm-101-disk-0"); err != nil {
		t.Fatal(err)
	}
	if err := l.ThinSnapshot(ctx, "pve", "vm-100-disk-2", "tmp-1", "pvesnap-temp"); err != nil {
		t.Fatal(err)
	}
	if err := l.DelTag(ctx, "pve", "vm-101-disk-0", "pvesnap-temp"); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"-x", "a b", "x;y", ""} {
		if l.ThinSnapshot(ctx, "pve", "vm-100-disk-2", "tmp-2", bad) == nil || l.DelTag(ctx, "pve", "vm-101-disk-0", bad) == nil {
			t.Errorf("tag %q reached a command", bad)
		}
	}
	if err := l.ImportClone(ctx, "pvesnap_job1", "/dev/sdc"); err != nil {
		t.Fatal(err)
	}
	if err := s.Done(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"-rf", "a b", "../x", "snapshot1", "x;rm", ""} {
		if err := l.Create(ctx, "vg", bad, 1, CreateOptions{}); err == nil {
			t.Errorf("LV name %q reached a command", bad)
		}
	}
	if err := l.ImportClone(ctx, "ok", "sdc"); err == nil || !strings.Contains(err.Error(), "refusing device") {
		t.Errorf("relative device accepted: %v", err)
	}
}

func FuzzParseLVs(f *testing.F) {
	b, _ := os.ReadFile("testdata/lvs.json")
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) { ParseLVs(b) })
}
