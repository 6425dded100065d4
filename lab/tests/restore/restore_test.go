//go:build lab

// In-guest end-to-end tests of restores: the real pvesnap daemon in front of a simulated PVE
// node, a simulated FlashArray whose volumes are LIO LUNs, real LVM on them. A VM with two
// disks is restored in place and as a new VM, offloaded and by host copy, verified by
// content; then every journaled step is interrupted in turn by killing the worker, and after
// a daemon restart nothing the restore created may remain.
package restore_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pvesnap/pvesnap/daemon/pure"
	"github.com/pvesnap/pvesnap/daemon/restore"
	"github.com/pvesnap/pvesnap/daemon/runner"
	"github.com/pvesnap/pvesnap/daemon/store"
	"github.com/pvesnap/pvesnap/lab/cluster"
	"github.com/pvesnap/pvesnap/lab/guest"
	"github.com/pvesnap/pvesnap/lvm"
	"github.com/pvesnap/pvesnap/sim/flasharray"
	simpve "github.com/pvesnap/pvesnap/sim/pve"
)

var ctx = context.Background()

const (
	mib      = int64(1) << 20
	diskSize = 128 * mib
	work     = "/tmp/lab-restore"
)

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

var lv = &lvm.LVM{Run: &runner.Exec{Timeout: 2 * time.Minute}}

// lab is one node (lab/cluster) with VM 100: two disks on the array-backed storage, a
// snapshot "before" of them, and changes made after it.
type lab struct {
	*cluster.Node
	t     *testing.T
	size  int64     // of each of VM 100's disks
	hashA [2]string // the disks at the snapshot
	hashB [2]string // the disks now (changed after the snapshot)
}

// newLab is the restore suites' node: the array reached over iSCSI on two paths with
// dm-multipath, as in production (a disconnect leaves devices until pvesnap removes them, a
// new LUN needs a rescan).
func newLab(t *testing.T, size int64) *lab {
	return newLabWith(t, size, cluster.Options{Fabric: cluster.FabricISCSI})
}

// newLabWith is newLab with node options (the power-loss test's state file system).
func newLabWith(t *testing.T, size int64, o cluster.Options) *lab {
	t.Helper()
	if _, err := os.Stat("/mnt/host"); err == nil {
		o.LogPath = "/mnt/host/restore-daemon.log" // readable on the host while the guest runs
	}
	o.Work, o.DataDisk = work, "/dev/vdb"
	n, err := cluster.Start(o)
	if n != nil {
		t.Cleanup(n.Close)
	}
	must(t, err)
	l := &lab{Node: n, t: t, size: size}
	_, err = n.AddVM(100, "web", 2, size, time.Now().Add(-time.Minute))
	must(t, err)
	l.fill(1)
	l.hashA = l.hashes(100)
	time.Sleep(1100 * time.Millisecond) // the snapshot must be later than the LVs' creation second
	_, err = n.FACli.CreateVolumeSnapshots(ctx, []string{"pve-san1"}, "before")
	must(t, err)
	l.fill(2) // the VM changes after the snapshot
	l.hashB = l.hashes(100)
	if l.hashA == l.hashB {
		t.Fatal("fixture: the disks did not change")
	}
	return l
}

// fill writes pattern seed over both disks of VM 100 (start, middle, end of each).
func (l *lab) fill(seed uint64) {
	for i := 0; i < 2; i++ {
		p := fmt.Sprintf("/dev/vgsan1/vm-100-disk-%d", i)
		for _, off := range []int64{0, l.size / 2, l.size - 8*mib} {
			must(l.t, guest.WritePattern(p, seed+uint64(i), off, 8*mib))
		}
	}
}

func (l *lab) hashes(vmid int) [2]string {
	var out [2]string
	for i := range out {
		h, err := guest.Hash(fmt.Sprintf("/dev/vgsan1/vm-%d-disk-%d", vmid, i), 0, l.size)
		must(l.t, err)
		out[i] = h
	}
	return out
}

// restore posts a restore and returns the task's UPID.
func (l *lab) restore(params url.Values) (string, *simpve.Response) {
	r, err := l.API.Do("POST", "/nodes/pve1/pvesnap/restore", params)
	must(l.t, err)
	if r.Code == 404 {
		// A point not found is most often a storage not mapped: say how each one maps.
		if m, err := l.API.Do("GET", "/nodes/pve1/pvesnap/storages", url.Values{"refresh": {"1"}}); err == nil {
			l.t.Logf("restore answered %d %s; the storage mapping: %s", r.Code, r.Status, m.Data)
		}
	}
	var upid string
	json.Unmarshal(r.Data, &upid)
	return upid, r
}

func (l *lab) wait(upid string) (string, string) {
	st, err := l.API.WaitTask(upid, 10*time.Minute)
	must(l.t, err)
	return st, l.taskLog(upid)
}

// taskLog is the task's log so far.
func (l *lab) taskLog(upid string) string {
	r, err := l.API.Do("GET", "/nodes/pve1/tasks/"+url.PathEscape(upid)+"/log", url.Values{"limit": {"1000"}})
	if err != nil {
		return ""
	}
	var lines []struct {
		T string `json:"t"`
	}
	json.Unmarshal(r.Data, &lines)
	var b strings.Builder
	for _, x := range lines {
		b.WriteString(x.T + "\n")
	}
	return b.String()
}

// deviceIO is bytes read and written on a device.
func deviceIO(dev string) (read, written int64) {
	s, err := guest.Stats(filepath.Base(dev))
	if err != nil {
		return 0, 0
	}
	return int64(s.ReadSectors) * 512, int64(s.WriteSectors) * 512
}

var healthRe = regexp.MustCompile(`(source|destination) device sd\w+ \(.*\): health \w+`)

var offloadRe = regexp.MustCompile(`disk (\w+): .* copied in .*: (\S+ \S+) offloaded to the array, (\S+ \S+) through the host`)

func TestRestore(t *testing.T) {
	l := newLab(t, diskSize)
	base := url.Values{"vmid": {"100"}, "point": {"fa1:before"}}

	// In place, offloaded.
	r0, w0 := deviceIO(l.Dev)
	p := cloneValues(base, "mode", "overwrite")
	upid, r := l.restore(p)
	if r.Code != 200 {
		t.Fatalf("restore: %d %s", r.Code, r.Status)
	}
	// A second restore of the same VM while the first runs is refused.
	if _, r2 := l.restore(p); r2.Code != 409 || !strings.Contains(r2.Status, "is being restored") {
		t.Errorf("concurrent restore: %d %s", r2.Code, r2.Status)
	}
	st, log := l.wait(upid)
	r1, w1 := deviceIO(l.Dev)
	read, written := r1-r0, w1-w0
	if st != "OK" {
		t.Fatalf("in-place restore: %s\n%s", st, log)
	}
	if got := l.hashes(100); got != l.hashA {
		t.Fatalf("in place: disks hold %v, the snapshot had %v\n%s", got, l.hashA, log)
	}
	ms := offloadRe.FindAllStringSubmatch(log, -1)
	if len(ms) != 2 || !strings.Contains(log, "EXTENDED COPY") {
		t.Fatalf("copy lines %v\n%s", ms, log)
	}
	for _, m := range ms {
		if !strings.HasPrefix(m[3], "0 B") {
			t.Errorf("disk %s went through the host: %s", m[1], m[3])
		}
	}
	// The task says how the devices it read and wrote are, as they report it.
	if h := healthRe.FindAllString(log, -1); len(h) < 4 {
		t.Errorf("the devices' health is not in the log (%q)\n%s", h, log)
	}
	// Writes on the storage's device are the LVM metadata updates (the data moved inside the
	// array); reads are LVM's label scans by every lvm command, independent of the disk size.
	fmt.Printf("RESULT restore_in_place disks=2x%dMiB engine_host_bytes=0 device_written=%d (%.2f%%) device_read=%d (%.2f%%, LVM scans)\n",
		diskSize/mib, written, 100*float64(written)/float64(2*diskSize), read, 100*float64(read)/float64(2*diskSize))
	if written > 2*diskSize/100 {
		t.Errorf("host wrote %d bytes on the array device: > 1%% of the disks", written)
	}
	safety := regexp.MustCompile(`safety snapshot (pve-san1\.pvesnap-safety-\w+) taken`).FindStringSubmatch(log)
	if safety == nil {
		t.Errorf("no safety snapshot in the log")
	} else if snaps, err := l.FACli.VolumeSnapshots(ctx, []string{"pve-san1"}, ""); err != nil || !hasSnapshot(snaps, safety[1]) {
		t.Errorf("safety snapshot %s not on the array: %v", safety[1], err)
	}
	l.noLeftovers(false)

	// As a new VM: new disks with the snapshot's data, a config with fresh MACs, links down.
	upid, r = l.restore(cloneValues(base, "mode", "new", "newid", "200", "name", "web-copy", "link-down", "1"))
	if r.Code != 200 {
		t.Fatalf("new-VM restore: %d %s", r.Code, r.Status)
	}
	if st, log = l.wait(upid); st != "OK" {
		t.Fatalf("new-VM restore: %s\n%s", st, log)
	}
	if got := l.hashes(200); got != l.hashA {
		t.Fatalf("new VM: disks hold %v, the snapshot had %v", got, l.hashA)
	}
	cfg, _ := os.ReadFile(filepath.Join(l.Sim.NodePaths("pve1").PVE, "nodes", "pve1", "qemu-server", "200.conf"))
	for _, want := range []string{"name: web-copy", "scsi0: san1:vm-200-disk-0,size=128M", "scsi1: san1:vm-200-disk-1,size=128M", "link_down=1"} {
		if !strings.Contains(string(cfg), want) {
			t.Errorf("200.conf lacks %q:\n%s", want, cfg)
		}
	}
	if strings.Contains(string(cfg), "BC:24:11:12:34:56") || strings.Contains(string(cfg), "lock:") || strings.Contains(string(cfg), "pvesnap restore job") {
		t.Errorf("200.conf kept the MAC, a lock or the job marker:\n%s", cfg)
	}
	l.noLeftovers(false)

	// In place again by host copy; the daemon is killed (SIGKILL) while the worker copies and
	// started again: the task runs on and its recovery pass leaves the live job alone.
	l.fill(2)
	upid, _ = l.restore(cloneValues(base, "mode", "overwrite", "force-host-copy", "1", "safety-snapshot", "0"))
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(100 * time.Millisecond) {
		if strings.Contains(l.taskLog(upid), "host copy") || time.Now().After(deadline) {
			break
		}
	}
	d, err := l.API.Must("GET", "/nodes/pve1/tasks/"+url.PathEscape(upid)+"/status", nil)
	must(t, err)
	if !strings.Contains(string(d), `"status":"running"`) {
		t.Fatalf("the task was not running when the daemon was to be killed: %s", d)
	}
	l.KillDaemon()
	must(t, l.StartDaemon(""))
	if st, log = l.wait(upid); st != "OK" {
		t.Fatalf("host-copy restore, daemon killed during it: %s\n%s", st, log)
	}
	if got := l.hashes(100); got != l.hashA {
		t.Fatalf("host copy: disks hold %v", got)
	}
	if !strings.Contains(log, "host copy") {
		t.Errorf("no host copy in the log:\n%s", log)
	}
	l.noLeftovers(false)

	// A snapshot from before the disks existed: 409.
	l.FA.Now = func() time.Time { return time.Now().Add(-24 * time.Hour) }
	_, err = l.FACli.CreateVolumeSnapshots(ctx, []string{"pve-san1"}, "yesterday")
	l.FA.Now = time.Now
	must(t, err)
	if _, r := l.restore(url.Values{"vmid": {"100"}, "point": {"fa1:yesterday"}, "mode": {"overwrite"}}); r.Code != 409 || !strings.Contains(r.Status, "cannot contain this disk") {
		t.Errorf("predating snapshot: %d %s", r.Code, r.Status)
	}
}

func hasSnapshot(l []pure.VolumeSnapshot, name string) bool {
	for _, s := range l {
		if s.Name == name {
			return true
		}
	}
	return false
}

func cloneValues(v url.Values, kv ...string) url.Values {
	out := url.Values{}
	for k, x := range v {
		out[k] = append([]string(nil), x...)
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out.Set(kv[i], kv[i+1])
	}
	return out
}

// noLeftovers: no temporary volume on the array, no pvesnap VG, LV or dm device, no SCSI
// device of the array except the storage's own, VM 100 unlocked.
func (l *lab) noLeftovers(allowUnfinished bool) {
	l.t.Helper()
	for _, f := range l.leftovers(allowUnfinished) {
		l.t.Error(f)
	}
}

// leftovers lists what noLeftovers looks for.
func (l *lab) leftovers(allowUnfinished bool) []string {
	var out []string
	for _, v := range l.FA.VolumeNames() {
		if strings.HasPrefix(v, "pvesnap-") {
			out = append(out, fmt.Sprintf("array volume %s left behind", v))
		}
	}
	if o, _ := guest.Output("vgs", "--noheadings", "-o", "vg_name"); strings.Contains(o, "pvesnap") {
		out = append(out, fmt.Sprintf("VG left behind: %s", o))
	}
	if o, _ := guest.Output("lvs", "--noheadings", "-o", "lv_name", "vgsan1"); strings.Contains(o, "pvesnap") {
		out = append(out, fmt.Sprintf("LV left behind: %s", o))
	}
	if o, _ := guest.Output("dmsetup", "ls"); strings.Contains(o, "pvesnap_") || strings.Contains(o, "vgsan1-pvesnap") {
		out = append(out, fmt.Sprintf("dm device left behind: %s", o))
	}
	prefix := "naa.624a9370" + strings.ToLower(l.Serial[:16])
	ms, _ := filepath.Glob("/sys/block/sd*/device/wwid")
	for _, m := range ms {
		b, _ := os.ReadFile(m)
		w := strings.TrimSpace(string(b))
		if strings.HasPrefix(w, prefix) && w != "naa."+pure.NAA(l.Serial) {
			out = append(out, fmt.Sprintf("device %s (%s) left behind", m, w))
		}
	}
	maps, _ := filepath.Glob("/sys/block/dm-*/dm/uuid")
	for _, m := range maps {
		b, _ := os.ReadFile(m)
		if u := strings.TrimSpace(string(b)); strings.HasPrefix(u, "mpath-3624a9370") && u != "mpath-3"+pure.NAA(l.Serial) {
			out = append(out, fmt.Sprintf("multipath map %s (%s) left behind", filepath.Base(filepath.Dir(filepath.Dir(m))), u))
		}
	}
	for _, w := range l.MultipathdMaps() {
		if w != "3"+pure.NAA(l.Serial) {
			out = append(out, fmt.Sprintf("multipathd still watches map %s", w))
		}
	}
	for _, lun := range l.SessionLUNs() {
		if !strings.HasSuffix(lun, " naa."+pure.NAA(l.Serial)) {
			out = append(out, fmt.Sprintf("iSCSI session LUN left behind: %s", lun))
		}
	}
	if luns := l.MappedLUNs(); len(luns) > 1 {
		out = append(out, fmt.Sprintf("the array still maps LUNs %v to the node (only pve-san1's should be)", luns))
	}
	cfg, _ := os.ReadFile(filepath.Join(l.Sim.NodePaths("pve1").PVE, "nodes", "pve1", "qemu-server", "100.conf"))
	if strings.Contains(string(cfg), "lock:") {
		out = append(out, fmt.Sprintf("VM 100 left locked:\n%s", cfg))
	}
	if locks, _ := filepath.Glob(filepath.Join(l.Sim.NodePaths("pve1").PVE, "priv", "lock", "*")); len(locks) > 0 {
		out = append(out, fmt.Sprintf("cluster locks left: %v", locks))
	}
	if !allowUnfinished {
		db, err := store.Open(filepath.Join(l.StateDir(), "pvesnap.db"))
		if err != nil {
			return append(out, err.Error())
		}
		defer db.Close()
		if jobs, _ := restore.Unfinished(ctx, db); len(jobs) != 0 {
			out = append(out, fmt.Sprintf("unfinished jobs: %+v", jobs))
		}
	}
	return out
}

// TestRestoreFaultInjection kills the worker right after each journaled step in turn; the
// daemon, restarted, must leave nothing behind and the VM either unchanged or restored.
func TestRestoreFaultInjection(t *testing.T) {
	l := newLab(t, 32*mib) // every step is about the journal, not the bytes: small disks keep 19 rounds short
	params := url.Values{"vmid": {"100"}, "point": {"fa1:before"}, "mode": {"overwrite"}, "safety-snapshot": {"0"}}
	covered := 0
	first := 1
	if n, err := strconv.Atoi(os.Getenv("FAULT_FROM")); err == nil {
		first = n // while debugging one step
	}
	for step := first; step < 60; step++ {
		t.Logf("step %d: %s", step, time.Now().Format("15:04:05"))
		pre := l.hashes(100)
		if pre == l.hashA { // restored last time: change the VM again so both outcomes differ
			l.fill(2)
			pre = l.hashes(100)
		}
		if step == first { // later rounds: the restart after the previous kill set the step
			l.StopDaemon()
			must(t, l.StartDaemon(strconv.Itoa(step)))
		}
		upid, r := l.restore(params)
		if r.Code != 200 {
			t.Fatalf("step %d: restore: %d %s", step, r.Code, r.Status)
		}
		st, log := l.wait(upid)
		if st == "OK" {
			t.Logf("step %d: the restore ran to the end: every one of its %d steps was interrupted once", step, covered)
			break
		}
		// The restart: recovery runs at start; the fault step only acts on the next restore.
		l.StopDaemon()
		must(t, l.StartDaemon(strconv.Itoa(step+1)))
		deadline := time.Now().Add(3 * time.Minute)
		for {
			db, err := store.Open(filepath.Join(l.StateDir(), "pvesnap.db"))
			must(t, err)
			jobs, _ := restore.Unfinished(ctx, db)
			db.Close()
			if len(jobs) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("step %d: recovery did not finish: %+v\n%s", step, jobs, log)
			}
			time.Sleep(200 * time.Millisecond)
		}
		l.noLeftovers(false)
		got := l.hashes(100)
		switch got {
		case pre:
			t.Logf("step %d: killed; recovery rolled back, VM unchanged", step)
		case l.hashA:
			t.Logf("step %d: killed; recovery completed the committed restore", step)
		default:
			t.Fatalf("step %d: VM 100's disks are neither unchanged nor restored: %v\n%s", step, got, log)
		}
		covered++
	}
	if covered < 10 {
		t.Fatalf("only %d steps covered", covered)
	}
	fmt.Printf("RESULT restore_fault_injection steps_covered=%d\n", covered)
}

// lvcreateRace is an lvcreate that, asked for vm-200-disk-2, lets another tool take that
// name first and then runs the real command, which fails as LVM fails: a real LVM error in
// the middle of a restore (one disk created and copied, the next one not).
const lvcreateRace = `#!/bin/sh
case " $* " in
*" vm-200-disk-2 "*) /usr/sbin/lvcreate --yes -an -Zn -L 8m -n vm-200-disk-2 vgsan1 >/dev/null 2>&1 ;;
esac
exec /usr/sbin/lvcreate "$@"
`

// TestRestoreLVMFailure: an LVM command fails half-way through a new-VM restore. The task
// ends with LVM's own message, the disk the restore made is gone, and the volumes it did not
// make (an orphaned disk of the same VMID, the other tool's LV) are untouched. Without the
// fault, the same restore takes the next free disk names, as PVE would.
func TestRestoreLVMFailure(t *testing.T) {
	l := newLab(t, diskSize)
	// An orphan of an earlier VM 200 (PVE leaves these behind when a destroy fails).
	must(t, lv.Create(ctx, "vgsan1", "vm-200-disk-0", 8*mib, lvm.CreateOptions{}))
	must(t, guest.WritePattern("/dev/vgsan1/vm-200-disk-0", 7, 0, 8*mib))
	orphan, err := guest.Hash("/dev/vgsan1/vm-200-disk-0", 0, 8*mib)
	must(t, err)
	wrapper := filepath.Join(l.O.Work, "bin", "lvcreate")
	must(t, os.WriteFile(wrapper, []byte(lvcreateRace), 0o755))

	params := url.Values{"vmid": {"100"}, "point": {"fa1:before"}, "mode": {"new"}, "newid": {"200"}}
	upid, r := l.restore(params)
	if r.Code != 200 {
		t.Fatalf("restore: %d %s", r.Code, r.Status)
	}
	st, log := l.wait(upid)
	if st == "OK" || !strings.Contains(st, `"vm-200-disk-2" already exists in volume group "vgsan1"`) {
		t.Fatalf("task status %q: want LVM's error about vm-200-disk-2\n%s", st, log)
	}
	t.Logf("the operator sees: %s", st)
	lvs, err := lv.LVs(ctx, "vgsan1")
	must(t, err)
	names := map[string]lvm.LV{}
	for _, x := range lvs {
		names[x.Name] = x
	}
	if _, ok := names["vm-200-disk-1"]; ok {
		t.Errorf("the restore's own disk vm-200-disk-1 was left behind")
	}
	for _, keep := range []string{"vm-200-disk-0", "vm-200-disk-2"} {
		if _, ok := names[keep]; !ok {
			t.Errorf("%s, not made by the restore, was removed", keep)
		}
	}
	if h, err := guest.Hash("/dev/vgsan1/vm-200-disk-0", 0, 8*mib); err != nil || h != orphan {
		t.Errorf("orphaned vm-200-disk-0 changed: %v", err)
	}
	if _, err := os.Stat(filepath.Join(l.Sim.NodePaths("pve1").PVE, "nodes", "pve1", "qemu-server", "200.conf")); err == nil {
		t.Errorf("200.conf exists after the failed restore")
	}
	l.noLeftovers(false)

	// The other tool's volume goes, the fault with it; the orphan stays.
	must(t, os.Remove(wrapper))
	must(t, lv.Remove(ctx, "vgsan1", "vm-200-disk-2"))
	if upid, r = l.restore(params); r.Code != 200 {
		t.Fatalf("restore without the fault: %d %s", r.Code, r.Status)
	}
	if st, log = l.wait(upid); st != "OK" {
		t.Fatalf("restore without the fault: %s\n%s", st, log)
	}
	cfg, _ := os.ReadFile(filepath.Join(l.Sim.NodePaths("pve1").PVE, "nodes", "pve1", "qemu-server", "200.conf"))
	for i, want := range []string{"scsi0: san1:vm-200-disk-1,size=128M", "scsi1: san1:vm-200-disk-2,size=128M"} {
		if !strings.Contains(string(cfg), want) {
			t.Errorf("200.conf lacks %q:\n%s", want, cfg)
		}
		h, err := guest.Hash(fmt.Sprintf("/dev/vgsan1/vm-200-disk-%d", i+1), 0, diskSize)
		if err != nil || h != l.hashA[i] {
			t.Errorf("vm-200-disk-%d does not hold disk %d of the snapshot: %v", i+1, i, err)
		}
	}
	if h, err := guest.Hash("/dev/vgsan1/vm-200-disk-0", 0, 8*mib); err != nil || h != orphan {
		t.Errorf("orphaned vm-200-disk-0 changed by the second restore: %v", err)
	}
	l.noLeftovers(false)
	fmt.Printf("RESULT restore_lvm_failure rolled_back=1 foreign_lvs_kept=2\n")
}

// failWhile is a wrapper for an LVM command that fails, as LVM does, while a marker file
// exists and its arguments match pattern (a shell case pattern); otherwise it runs the real
// command.
func failWhile(cmd, marker, pattern string) string {
	return fmt.Sprintf(`#!/bin/sh
if [ -e %s ]; then
  case " $* " in
  %s) echo "  simulated failure of %s $*" >&2; exit 5 ;;
  esac
fi
exec /usr/sbin/%s "$@"
`, marker, pattern, cmd, cmd)
}

// TestRestoreUndoFailures: an in-place restore fails after setting VM 100's first disk aside,
// and its rollback fails too: renaming the original back and deactivating the imported VG
// are refused, then the array refuses the disconnect. The original is never removed, the VM stays locked (not restarted on mixed
// disks), the staging is held (its device is not pulled from under the VG), 'pvesnap restore
// --status' says what failed and what waits; once the faults are gone, '--resume' finishes
// the rollback and the VM holds exactly its old data.
func TestRestoreUndoFailures(t *testing.T) {
	l := newLab(t, 32*mib)
	pre := l.hashes(100)
	marker := filepath.Join(l.O.Work, "fault")
	must(t, os.WriteFile(marker, nil, 0o644))
	bin := filepath.Join(l.O.Work, "bin")
	must(t, os.WriteFile(filepath.Join(bin, "lvrename"), []byte(failWhile("lvrename", marker, `*" vm-100-disk-0 "`)), 0o755))
	must(t, os.WriteFile(filepath.Join(bin, "vgchange"), []byte(failWhile("vgchange", marker, `*" -an pvesnap_"*`)), 0o755))
	defer os.Remove(filepath.Join(bin, "lvrename"))
	defer os.Remove(filepath.Join(bin, "vgchange"))

	upid, r := l.restore(url.Values{"vmid": {"100"}, "point": {"fa1:before"}, "mode": {"overwrite"}, "safety-snapshot": {"0"}})
	if r.Code != 200 {
		t.Fatalf("restore: %d %s", r.Code, r.Status)
	}
	st, log := l.wait(upid)
	if st == "OK" || !strings.Contains(st, "simulated failure of lvrename") || !strings.Contains(st, "cleanup failed too") {
		t.Fatalf("task status %q\n%s", st, log)
	}
	db, err := store.Open(filepath.Join(l.StateDir(), "pvesnap.db"))
	must(t, err)
	jobs, _ := restore.Unfinished(ctx, db)
	db.Close()
	if len(jobs) != 1 || jobs[0].State != restore.StateStuck {
		t.Fatalf("jobs after the failed rollback: %+v\n%s", jobs, log)
	}
	job := jobs[0].ID
	// The original: set aside, whole, not removed.
	old := "/dev/vgsan1/pvesnap-" + job + "-old-scsi0"
	if h, err := guest.Hash(old, 0, l.size); err != nil || h != pre[0] {
		t.Fatalf("the original of scsi0 (%s): %v, hash matches: %v\n%s", old, err, h == pre[0], log)
	}
	if h, _ := guest.Hash("/dev/vgsan1/vm-100-disk-1", 0, l.size); h != pre[1] {
		t.Errorf("scsi1 changed by a restore that never swapped it")
	}
	cfg, _ := os.ReadFile(filepath.Join(l.Sim.NodePaths("pve1").PVE, "nodes", "pve1", "qemu-server", "100.conf"))
	if !strings.Contains(string(cfg), "lock: create") {
		t.Errorf("VM 100 unlocked while its disk is set aside:\n%s", cfg)
	}
	if out, _ := guest.Output("vgs", "--noheadings", "-o", "vg_name"); !strings.Contains(out, "pvesnap_"+job) {
		t.Errorf("the imported VG whose deactivation failed is gone: its devices were pulled? vgs: %s", out)
	}
	held := false
	for _, v := range l.FA.VolumeNames() {
		held = held || strings.Contains(v, "-"+job+"-")
	}
	if !held {
		t.Errorf("the temporary volume was destroyed under its still active VG: %v", l.FA.VolumeNames())
	}
	status, err := guest.Output(l.O.Binary, "--config", l.Config, "restore", "--status", "--job", job)
	must(t, err)
	t.Logf("pvesnap restore --status:\n%s", status)
	for _, want := range []string{"did not commit", "lvm-rename-lv FAILED", "lvm-deactivate-vg FAILED", "held: waits for step", "--resume " + job} {
		if !strings.Contains(status, want) {
			t.Errorf("--status lacks %q", want)
		}
	}
	// The LVM faults are gone, but the array refuses the disconnect: the rollback goes on up
	// to it, and the temporary volume waits behind it.
	must(t, os.Remove(marker))
	l.FA.Inject(flasharray.Fault{Route: "DELETE /connections", Status: 400, Message: "Host lab is busy.", Count: 1000})
	out, err := guest.Output(l.O.Binary, "--config", l.Config, "restore", "--resume", job)
	if err == nil || !strings.Contains(out, "Host lab is busy.") {
		t.Fatalf("--resume with the disconnect refused: %v\n%s", err, out)
	}
	if got := l.hashes(100); got != pre {
		t.Fatalf("VM 100 after the LVM undos: %v, had %v", got, pre)
	}
	status, _ = guest.Output(l.O.Binary, "--config", l.Config, "restore", "--status", "--job", job)
	if !strings.Contains(status, "array-disconnect FAILED") || !strings.Contains(status, "array-destroy-volume held") {
		t.Errorf("--status after the refused disconnect:\n%s", status)
	}
	held = false
	for _, v := range l.FA.VolumeNames() {
		held = held || strings.Contains(v, "-"+job+"-")
	}
	if !held {
		t.Errorf("the temporary volume was destroyed while still connected")
	}
	// The array answers again: the operator resumes.
	l.FA.ClearFaults()
	out, err = guest.Output(l.O.Binary, "--config", l.Config, "restore", "--resume", job)
	if err != nil {
		t.Fatalf("--resume: %v\n%s", err, out)
	}
	if got := l.hashes(100); got != pre {
		t.Fatalf("after the resumed rollback VM 100 holds %v, had %v\n%s", got, pre, out)
	}
	l.noLeftovers(false)
	fmt.Printf("RESULT restore_undo_failures original_kept=1 vm_locked_while_stuck=1 resumed=1\n")
}
