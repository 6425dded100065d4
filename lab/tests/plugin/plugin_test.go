//go:build lab

// In-guest end-to-end test of the PVE storage plugin (perl/): the guest's perl runs the
// plugin, loaded by the stand-in of PVE's loader, against the real pvesnap daemon of a lab
// node (simulated PVE, simulated FlashArray whose volumes are LIO LUNs, real LVM). It lists the
// restore points, restores one as qmrestore does (staging by the daemon, qemu-img convert from
// the path the plugin returns into volumes allocated beforehand), checks the copies' content
// against the snapshot's, and that nothing staged is left; then a restore killed half-way,
// whose staging the daemon undoes once the process is gone.
package plugin_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pvesnap/pvesnap/daemon/pure"
	"github.com/pvesnap/pvesnap/daemon/restore"
	"github.com/pvesnap/pvesnap/daemon/runner"
	"github.com/pvesnap/pvesnap/daemon/store"
	"github.com/pvesnap/pvesnap/lab/cluster"
	"github.com/pvesnap/pvesnap/lab/guest"
	"github.com/pvesnap/pvesnap/lvm"
	simpve "github.com/pvesnap/pvesnap/sim/pve"
)

var ctx = context.Background()

const (
	mib      = int64(1) << 20
	diskSize = 32 * mib
	work     = "/tmp/lab-plugin"
	// perl/ of the tree, copied next to the test binaries by lab/run-tests.sh
	perlDir = "/mnt/host/perl"
)

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

var lv = &lvm.LVM{Run: &runner.Exec{Timeout: 2 * time.Minute}}

type lab struct {
	*cluster.Node
	t         *testing.T
	sock, cfg string
	hashes    [2]string // VM 100's disks at the snapshot
}

func newLab(t *testing.T) *lab {
	t.Helper()
	logPath := ""
	if _, err := os.Stat("/mnt/host"); err == nil {
		logPath = "/mnt/host/plugin-daemon.log"
	}
	n, err := cluster.Start(cluster.Options{Work: work, DataDisk: "/dev/vdb", LogPath: logPath})
	if n != nil {
		t.Cleanup(n.Close)
	}
	must(t, err)
	l := &lab{Node: n, t: t}
	_, err = n.AddVM(100, "web", 2, diskSize, time.Now().Add(-time.Minute))
	must(t, err)
	for i := 0; i < 2; i++ {
		p := fmt.Sprintf("/dev/vgsan1/vm-100-disk-%d", i)
		for _, off := range []int64{0, diskSize / 2, diskSize - 4*mib} {
			must(t, guest.WritePattern(p, uint64(1+i), off, 4*mib))
		}
		h, err := guest.Hash(p, 0, diskSize)
		must(t, err)
		l.hashes[i] = h
	}
	time.Sleep(1100 * time.Millisecond) // the snapshot must be later than the LVs' creation second
	_, err = n.FACli.CreateVolumeSnapshots(ctx, []string{"pve-san1"}, "before")
	must(t, err)
	for i := 0; i < 2; i++ { // the VM changes after the snapshot
		must(t, guest.WritePattern(fmt.Sprintf("/dev/vgsan1/vm-100-disk-%d", i), 9, 0, 4*mib))
	}
	if r, err := n.API.Do("GET", "/nodes/pve1/pvesnap/vms", url.Values{"refresh": {"1"}}); err != nil || r.Code != 200 {
		t.Fatalf("refresh: %v %+v", err, r)
	}
	must(t, n.Sim.SetStorageConfig(simpve.DefaultStorageConfig+"\nlvm: san1\n\tvgname vgsan1\n\tcontent images\n\tshared 1\n\npvesnap: snaps\n\tcontent backup\n"))
	p := n.Sim.NodePaths("pve1")
	l.sock, l.cfg = filepath.Join(p.Run, "provider.sock"), filepath.Join(p.PVE, "storage.cfg")
	return l
}

// standin runs PVE's part (perl/t/pve-standin.pl) with the guest's perl.
func (l *lab) standin(args ...string) map[string]any {
	l.t.Helper()
	argv := append([]string{filepath.Join(perlDir, "t", "pve-standin.pl"), "--socket", l.sock, "--storage-cfg", l.cfg, "snaps"}, args...)
	out, err := exec.Command("perl", append([]string{"-T"}, argv...)...).Output()
	var res map[string]any
	if jerr := json.Unmarshal(out, &res); err != nil || jerr != nil {
		l.t.Fatalf("perl pve-standin %v: %v %v\n%s", args, err, jerr, out)
	}
	return res
}

// noLeftovers: no temporary array volume, no pvesnap VG or dm device, no SCSI device of the
// array but the storage's own, no unfinished session.
func (l *lab) noLeftovers() {
	t := l.t
	t.Helper()
	for _, v := range l.FA.VolumeNames() {
		if strings.HasPrefix(v, "pvesnap-") {
			t.Errorf("array volume %s left behind", v)
		}
	}
	if out, _ := guest.Output("vgs", "--noheadings", "-o", "vg_name"); strings.Contains(out, "pvesnap") {
		t.Errorf("VG left behind: %s", out)
	}
	if out, _ := guest.Output("dmsetup", "ls"); strings.Contains(out, "pvesnap") {
		t.Errorf("dm device left behind: %s", out)
	}
	prefix := "naa.624a9370" + strings.ToLower(l.Serial[:16])
	ms, _ := filepath.Glob("/sys/block/sd*/device/wwid")
	for _, m := range ms {
		b, _ := os.ReadFile(m)
		if w := strings.TrimSpace(string(b)); strings.HasPrefix(w, prefix) && w != "naa."+pure.NAA(l.Serial) {
			t.Errorf("device %s (%s) left behind", m, w)
		}
	}
	db, err := store.Open(filepath.Join(l.Sim.NodePaths("pve1").State, "pvesnap.db"))
	must(t, err)
	defer db.Close()
	if jobs, _ := restore.Unfinished(ctx, db); len(jobs) != 0 {
		t.Errorf("unfinished jobs: %+v", jobs)
	}
}

var stagedRe = regexp.MustCompile(`^/dev/pvesnap_[a-z0-9]+_0/vm-100-disk-[01]$`)

func TestPlugin(t *testing.T) {
	l := newLab(t)

	res := l.standin("list")
	vols, _ := res["volumes"].([]any)
	if len(vols) != 1 {
		t.Fatalf("list: %v", res)
	}
	v := vols[0].(map[string]any)
	volid := v["volid"].(string)
	if !regexp.MustCompile(`^snaps:backup/pvesnap-qemu-100-\d+-fa1:before$`).MatchString(volid) || v["size"] != float64(2*diskSize) || v["subtype"] != "qemu" {
		t.Fatalf("archive: %v", v)
	}
	_, volname, _ := strings.Cut(volid, ":")

	// qmrestore: PVE allocates the target volumes first, then converts into them (-n).
	for i := 0; i < 2; i++ {
		must(t, lv.Create(ctx, "vgsan1", fmt.Sprintf("restored-scsi%d", i), diskSize, lvm.CreateOptions{}))
	}
	t0 := time.Now()
	res = l.standin("restore", volname, "/dev/vgsan1/restored-")
	if res["error"] != nil {
		t.Fatalf("restore: %v", res)
	}
	disks := res["disks"].(map[string]any)
	for i := 0; i < 2; i++ {
		d := disks[fmt.Sprintf("scsi%d", i)].(map[string]any)
		if !stagedRe.MatchString(d["path"].(string)) || d["size"] != float64(diskSize) {
			t.Errorf("disk scsi%d: %v", i, d)
		}
		h, err := guest.Hash(fmt.Sprintf("/dev/vgsan1/restored-scsi%d", i), 0, diskSize)
		must(t, err)
		if h != l.hashes[i] {
			t.Errorf("restored scsi%d holds %s, the snapshot had %s", i, h, l.hashes[i])
		}
	}
	log := fmt.Sprint(res["log"])
	for _, w := range []string{"staging disks scsi0, scsi1 of VM 100 (web) from fa1:before", "copied to pvesnap-", "imported the snapshot's volume group"} {
		if !strings.Contains(log, w) {
			t.Errorf("task log lacks %q: %s", w, log)
		}
	}
	fmt.Printf("RESULT plugin_restore disks=2x%dMiB seconds=%.1f (staging, qemu-img convert, cleanup)\n", diskSize/mib, time.Since(t0).Seconds())
	l.noLeftovers()

	// A qmrestore killed with SIGKILL once its disks are staged and active: the daemon sees
	// the process gone and undoes the staging (it checks every 10 s).
	cmd := exec.Command("perl", "-T", filepath.Join(perlDir, "t", "pve-standin.pl"), "--socket", l.sock, "--storage-cfg", l.cfg, "snaps", "stage", volname)
	out, err := cmd.StdoutPipe()
	must(t, err)
	must(t, cmd.Start())
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		cmd.Process.Kill()
		t.Fatalf("stage: %v %q", err, line)
	}
	var staged struct {
		Paths map[string]string `json:"paths"`
	}
	must(t, json.Unmarshal([]byte(line), &staged))
	for _, p := range staged.Paths {
		if fi, err := os.Stat(p); err != nil || fi.Mode()&os.ModeDevice == 0 {
			t.Fatalf("staged %s: %v %v", p, fi, err)
		}
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		db, err := store.Open(filepath.Join(l.Sim.NodePaths("pve1").State, "pvesnap.db"))
		must(t, err)
		jobs, _ := restore.Unfinished(ctx, db)
		db.Close()
		if len(jobs) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the daemon did not clean up after the killed restore: %+v", jobs)
		}
		time.Sleep(500 * time.Millisecond)
	}
	l.noLeftovers()
}
