package itest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pvesnap/pvesnap/daemon/inventory"
	"github.com/pvesnap/pvesnap/daemon/provider"
	"github.com/pvesnap/pvesnap/daemon/pve"
	"github.com/pvesnap/pvesnap/daemon/restore"
	"github.com/pvesnap/pvesnap/daemon/store"
	"github.com/pvesnap/pvesnap/lvm"
	simpve "github.com/pvesnap/pvesnap/sim/pve"
	"github.com/pvesnap/pvesnap/sim/volstore"
)

// perlDir is the repository's perl/ folder.
func perlDir(t *testing.T) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "perl")
}

// needPerl: perl with JSON (libjson-perl); skipped without, unless the run requires it (make
// unit does).
func needPerl(t *testing.T) {
	t.Helper()
	if out, err := exec.Command("perl", "-MJSON", "-MIO::Socket::UNIX", "-e", "1").CombinedOutput(); err != nil {
		if os.Getenv("PVESNAP_REQUIRE_PERL") == "1" {
			t.Fatalf("perl with JSON required but missing (apt-get install libjson-perl): %v %s", err, out)
		}
		t.Skipf("SKIP: perl with JSON missing: %v", err)
	}
}

// standin runs perl/t/pve-standin.pl (PVE's part: the plugin loaded by the stand-in loader)
// against a daemon's socket and decodes its JSON answer.
func standin(t *testing.T, socket, storageCfg string, args ...string) map[string]any {
	t.Helper()
	argv := append([]string{filepath.Join(perlDir(t), "t", "pve-standin.pl"), "--socket", socket, "--storage-cfg", storageCfg}, args...)
	out, err := exec.Command("perl", append([]string{"-T"}, argv...)...).Output()
	if err != nil {
		t.Fatalf("pve-standin %v: %v\n%s", args, err, out)
	}
	var res map[string]any
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("pve-standin %v: %v\n%s", args, err, out)
	}
	return res
}

const pvesnapStorages = `
pvesnap: snaps
	content backup

pvesnap: only100
	pvesnap-vmids 100

pvesnap: elsewhere
	pvesnap-arrays fa9
`

// The plugin, run by perl with the stand-ins of PVE's loader and qmrestore, against the real
// daemon over its socket, on a simulated cluster and FlashArray: the listing (a deleted VM, a
// point that predates one of its disks, one that predates them all, the storages' filters),
// the archive config, and a restore whose staging fails half-way (no device appears on this
// simulated node): the error reaches PVE and nothing is left on the array.
func TestProviderPerl(t *testing.T) {
	needPerl(t)
	e := Start(t)
	e.inventoryVM()
	fa := e.fa.Array
	now := time.Now()
	st := e.Sim.Store("pve1", "san1")
	must(t, st.Create("vm-101-disk-0", 1<<30, volstore.Meta{Created: now.Add(-2 * time.Hour).Unix()}))
	must(t, st.Create("vm-101-disk-1", 2<<30, volstore.Meta{Created: now.Add(-30 * time.Minute).Unix()}))
	must(t, e.Sim.WriteVMConfig("pve1", 101, fmt.Sprintf("name: db\nmemory: 512\nmeta: ctime=%d\nscsi0: san1:vm-101-disk-0,size=1G\nscsi1: san1:vm-101-disk-1,size=2G\nvirtio0: local-zfs:vm-101-disk-9,size=1G\nlock: backup\n\n[old]\nscsi0: san1:vm-101-disk-0,size=1G\n",
		now.Add(-3*time.Hour).Unix())))
	snapAt := func(suffix string, at time.Time) {
		fa.Now = func() time.Time { return at }
		_, err := fa.SnapshotVolumes(suffix, "pve-san1")
		fa.Now = time.Now
		must(t, err)
	}
	snapAt("ancient", now.Add(-150*time.Minute)) // before every disk of both VMs
	snapAt("early", now.Add(-50*time.Minute))    // after VM 100's disk and VM 101's scsi0, before its scsi1
	snapAt("late", now.Add(-10*time.Second))     // (deletion times are whole seconds: not in the second of the delete)
	root := e.Root("pve1")
	if r, err := root.Do("GET", "/nodes/pve1/pvesnap/vms", url.Values{"refresh": {"1"}}); err != nil || r.Code != 200 {
		t.Fatalf("refresh: %v %+v", err, r)
	}
	must(t, os.Remove(filepath.Join(e.Sim.NodePaths("pve1").PVE, "nodes", "pve1", "qemu-server", "101.conf"))) // VM 101 deleted
	must(t, e.Sim.SetStorageConfig(simStorageConfig()+pvesnapStorages))
	paths := e.Sim.NodePaths("pve1")
	sock, cfg := filepath.Join(paths.Run, "provider.sock"), filepath.Join(paths.PVE, "storage.cfg")

	res := standin(t, sock, cfg, "snaps", "list")
	vols, _ := res["volumes"].([]any)
	got := map[string]map[string]any{}
	for _, v := range vols {
		m := v.(map[string]any)
		got[m["volid"].(string)] = m
	}
	volid := func(vmid int, point string) string {
		for id := range got {
			if regexp.MustCompile(fmt.Sprintf(`^snaps:backup/pvesnap-qemu-%d-\d+-fa1:%s$`, vmid, point)).MatchString(id) {
				return id
			}
		}
		t.Fatalf("no archive of VM %d at %s in %v", vmid, point, res)
		return ""
	}
	if len(got) != 4 {
		t.Fatalf("archives: %d, want 4 (VMs 100 and 101 at early and late)\n%v", len(got), res)
	}
	a := got[volid(101, "early")]
	if a["vmid"] != 101.0 || a["subtype"] != "qemu" || a["content"] != "backup" || a["format"] != "raw" || a["size"] != float64(1<<30) {
		t.Errorf("VM 101 at early: %v", a)
	}
	for _, want := range []string{"db at fa1:early: scsi0", "; VM deleted ", "; predates disk scsi1"} {
		if !strings.Contains(a["notes"].(string), want) {
			t.Errorf("notes %q lack %q", a["notes"], want)
		}
	}
	if n := got[volid(101, "late")]["notes"].(string); strings.Contains(n, "predates") || got[volid(101, "late")]["size"] != float64(3<<30) {
		t.Errorf("VM 101 at late: %v", got[volid(101, "late")])
	}
	late100 := volid(100, "late")
	if ct := got[late100]["ctime"].(float64); int64(ct) != now.Add(-10*time.Second).Unix() {
		t.Errorf("the point's time %v, taken at %d", ct, now.Unix())
	}
	// The storages' filters, and one naming an array pvesnap does not know.
	if res := standin(t, sock, cfg, "only100", "list"); len(res["volumes"].([]any)) != 2 {
		t.Errorf("only100: %v", res)
	}
	if res := standin(t, sock, cfg, "snaps", "list", "101"); len(res["volumes"].([]any)) != 2 {
		t.Errorf("VM 101 only: %v", res)
	}
	if res := standin(t, sock, cfg, "elsewhere", "list"); !strings.Contains(fmt.Sprint(res["error"]), "array 'fa9' (pvesnap-arrays) is not configured in pvesnap") {
		t.Errorf("unknown array: %v", res)
	}

	// The config of the deleted VM at a point that predates scsi1.
	_, volname, _ := strings.Cut(volid(101, "early"), ":")
	res = standin(t, sock, cfg, "snaps", "config", volname)
	want := "name: db\nmemory: 512\nmeta: ctime=%d\nscsi0: san1:vm-101-disk-0,size=1G\nscsi1: san1:vm-101-disk-1,size=2G,backup=0\nvirtio0: local-zfs:vm-101-disk-9,size=1G,backup=0\n#qmdump#map:scsi0:drive-scsi0:san1:raw:\n"
	if res["config"] != fmt.Sprintf(want, now.Add(-3*time.Hour).Unix()) {
		t.Fatalf("config:\n%v\nwant:\n%s", res["config"], fmt.Sprintf(want, now.Add(-3*time.Hour).Unix()))
	}
	if res := standin(t, sock, cfg, "only100", "config", volname); !strings.Contains(fmt.Sprint(res["error"]), "is not on storage 'only100'") {
		t.Errorf("an archive outside the storage's filter: %v", res)
	}

	// A point taken since the inventory last read the array: not listed yet, but an archive
	// named after it is found (the daemon reads the array again once).
	snapAt("fresh", time.Now())
	_, volname, _ = strings.Cut(strings.Replace(volid(100, "late"), ":late", ":fresh", 1), ":")
	if res := standin(t, sock, cfg, "snaps", "config", volname); !strings.Contains(fmt.Sprint(res["config"]), "#qmdump#map:scsi0:drive-scsi0:san1:raw:") {
		t.Errorf("config of a point not in the cache yet: %v", res)
	}

	// A restore: the staging copies and connects, then no device appears on this simulated
	// node. qmrestore gets the error; everything staged is undone.
	_, volname, _ = strings.Cut(late100, ":")
	res = standin(t, sock, cfg, "snaps", "restore", volname, t.TempDir()+"/")
	errText, _ := res["error"].(string)
	logText := fmt.Sprint(res["log"])
	if !strings.Contains(errText, "no device with serial") {
		t.Fatalf("restore: %v", res)
	}
	for _, w := range []string{"staging disk scsi0 of VM 100 (web) from fa1:late", "copied to pvesnap-", "connected pvesnap-", "clean up step"} {
		if !strings.Contains(logText, w) {
			t.Errorf("task log lacks %q: %s", w, logText)
		}
	}
	if hasTemp(fa) {
		t.Errorf("temporary volume left: %v", fa.VolumeNames())
	}
	db, err := store.Open(filepath.Join(paths.State, "pvesnap.db"))
	must(t, err)
	defer db.Close()
	if jobs, _ := restore.Unfinished(t0ctx(), db); len(jobs) != 0 {
		t.Errorf("unfinished: %+v", jobs)
	}
	var kind, state string
	must(t, db.QueryRow(`SELECT kind, state FROM jobs ORDER BY created DESC LIMIT 1`).Scan(&kind, &state))
	if kind != provider.KindArchive || state != restore.StateRolledBack {
		t.Errorf("session job: %s %s", kind, state)
	}
}

// simStorageConfig is the storage.cfg the environment starts with.
func simStorageConfig() string { return simpve.DefaultStorageConfig + sanStorage }

// fakeStager stages without hardware: each disk is a file dev/<vg>/<lv>, and each staging
// step is journaled with an undo that the fake executes by recording it. block makes Stage
// wait until it is canceled (a staging in progress).
type fakeStager struct {
	dev   string
	block bool
	mu    sync.Mutex
	undos []string
	began chan struct{}
}

func (f *fakeStager) Stage(ctx context.Context, j *restore.Journal, sources []inventory.DiskSource, logf func(string, ...any)) ([]restore.StagedDisk, error) {
	vg := "pvesnap_" + j.Job + "_0"
	if err := j.Step(ctx, "copy "+sources[0].Snapshot, restore.Action{Kind: "array-destroy-volume", Args: map[string]string{"volume": "pvesnap-" + j.Job + "-0"}},
		func() error { return nil }); err != nil {
		return nil, err
	}
	if err := j.Step(ctx, "import VG as "+vg, restore.Action{Kind: "lvm-deactivate-vg", Args: map[string]string{"vg": vg}}, func() error { return nil }); err != nil {
		return nil, err
	}
	logf("imported the snapshot's volume group as %s", vg)
	f.mu.Lock()
	began, block := f.began, f.block
	f.mu.Unlock()
	if began != nil {
		close(began)
	}
	if block {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	var out []restore.StagedDisk
	for _, s := range sources {
		_, name, _ := strings.Cut(s.Disk.Volid, ":")
		os.MkdirAll(filepath.Join(f.dev, vg), 0o755)
		if err := os.WriteFile(filepath.Join(f.dev, vg, name), []byte("data of "+s.Disk.Key), 0o644); err != nil {
			return nil, err
		}
		out = append(out, restore.StagedDisk{Source: s, VG: vg, LV: lvm.LV{Name: name, UUID: s.Disk.LVUUID, Size: 4 << 30}})
	}
	return out, nil
}

func (f *fakeStager) Staged(ctx context.Context, job string, sources []inventory.DiskSource) ([]restore.StagedDisk, error) {
	vg := "pvesnap_" + job + "_0"
	var out []restore.StagedDisk
	for _, s := range sources {
		_, name, _ := strings.Cut(s.Disk.Volid, ":")
		if _, err := os.Stat(filepath.Join(f.dev, vg, name)); err != nil {
			return nil, err
		}
		out = append(out, restore.StagedDisk{Source: s, VG: vg, LV: lvm.LV{Name: name, UUID: s.Disk.LVUUID, Size: 4 << 30}})
	}
	return out, nil
}

func (f *fakeStager) Exec(ctx context.Context, a restore.Action) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.undos = append(f.undos, a.Kind+" "+a.Args["volume"]+a.Args["vg"])
	return nil
}

func (f *fakeStager) reset(block bool, began chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.undos, f.block, f.began = nil, block, began
}

func (f *fakeStager) undone() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return strings.Join(f.undos, "|")
}

type fakeActivator struct {
	mu  sync.Mutex
	log []string
}

func (f *fakeActivator) Activate(ctx context.Context, vg, name string, on bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log = append(f.log, fmt.Sprintf("%s/%s %v", vg, name, on))
	return nil
}

// call is one protocol call from this process.
func call(t *testing.T, sock, method string, params any) provider.Response {
	t.Helper()
	c, err := net.Dial("unix", sock)
	must(t, err)
	b, _ := json.Marshal(map[string]any{"version": 1, "method": method, "params": params})
	c.Write(append(b, '\n'))
	line, err := bufio.NewReader(c).ReadBytes('\n')
	c.Close()
	var r provider.Response
	if err := json.Unmarshal(line, &r); err != nil {
		t.Fatalf("%s: %v %q", method, err, line)
	}
	return r
}

// The session protocol over the socket with the real inventory and journal, the staging
// faked (the simulated node has no devices): a restore from init to cleanup; a caller that
// hangs up while the staging runs (its work is stopped and undone); a qmrestore killed with
// SIGKILL half-way (the daemon's recovery undoes its staging).
func TestProviderSessions(t *testing.T) {
	e := Start(t)
	e.inventoryVM()
	_, err := e.fa.Array.SnapshotVolumes("good", "pve-san1")
	must(t, err)
	root := e.Root("pve1")
	if r, err := root.Do("GET", "/nodes/pve1/pvesnap/vms", url.Values{"refresh": {"1"}}); err != nil || r.Code != 200 {
		t.Fatalf("refresh: %v %+v", err, r)
	}
	must(t, e.Sim.SetStorageConfig(simStorageConfig()+pvesnapStorages))
	paths := e.Sim.NodePaths("pve1")
	db, err := store.Open(filepath.Join(paths.State, "pvesnap.db"))
	must(t, err)
	defer db.Close()
	dev := t.TempDir()
	st, act := &fakeStager{dev: dev}, &fakeActivator{}
	p := &provider.Provider{Socket: filepath.Join(t.TempDir(), "p.sock"), Inv: e.setup("pve1").inventory(db), Storage: pve.NewStorageConfig(paths.PVE),
		DB: db, Stager: st, LVM: act, Dev: dev, PeerUID: os.Getuid(), RecoverEvery: time.Hour}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	must(t, p.Start(ctx))
	list := call(t, p.Socket, "list", map[string]any{"storage": "snaps"})
	archives := list.Result.(map[string]any)["archives"].([]any)
	if len(archives) != 1 {
		t.Fatalf("list: %+v", list)
	}
	volname := archives[0].(map[string]any)["volname"].(string)
	state := func(id string) string {
		var s string
		if err := db.QueryRow(`SELECT state FROM jobs WHERE id = ?`, id).Scan(&s); err != nil {
			return err.Error()
		}
		return s
	}

	// From init to cleanup.
	r := call(t, p.Socket, "restore-init", map[string]any{"storage": "snaps", "volname": volname, "session": "sess01abcd"})
	if r.Error != "" || fmt.Sprint(r.Result) != "map[devices:map[drive-scsi0:map[size:4.294967296e+09]]]" || !strings.Contains(fmt.Sprint(r.Log), "imported the snapshot's volume group as pvesnap_sess01abcd_0") {
		t.Fatalf("restore-init: %+v", r)
	}
	if r := call(t, p.Socket, "restore-init", map[string]any{"storage": "snaps", "volname": volname, "session": "sess01abcd"}); !strings.Contains(r.Error, "restore session sess01abcd exists already") {
		t.Fatalf("a second init of the session: %+v", r)
	}
	r = call(t, p.Socket, "volume-init", map[string]any{"session": "sess01abcd", "device": "drive-scsi0"})
	path, _ := r.Result.(map[string]any)["path"].(string)
	if b, err := os.ReadFile(path); err != nil || string(b) != "data of scsi0" || path != filepath.Join(dev, "pvesnap_sess01abcd_0", "vm-100-disk-0") {
		t.Fatalf("volume-init: %+v (%v)", r, err)
	}
	if r := call(t, p.Socket, "volume-init", map[string]any{"session": "sess01abcd", "device": "drive-scsi9"}); !strings.Contains(r.Error, `has no device "drive-scsi9"`) {
		t.Fatalf("unknown device: %+v", r)
	}
	call(t, p.Socket, "volume-cleanup", map[string]any{"session": "sess01abcd", "device": "drive-scsi0"})
	if got := strings.Join(act.log, "|"); got != "pvesnap_sess01abcd_0/vm-100-disk-0 true|pvesnap_sess01abcd_0/vm-100-disk-0 false" {
		t.Fatalf("activations: %s", got)
	}
	if state("sess01abcd") != restore.StateRunning {
		t.Fatalf("before cleanup: %s", state("sess01abcd"))
	}
	if r := call(t, p.Socket, "restore-cleanup", map[string]any{"session": "sess01abcd"}); r.Error != "" {
		t.Fatalf("cleanup: %+v", r)
	}
	if st.undone() != "lvm-deactivate-vg pvesnap_sess01abcd_0|array-destroy-volume pvesnap-sess01abcd-0" || state("sess01abcd") != restore.StateDone {
		t.Fatalf("after cleanup: undos %q, job %s", st.undone(), state("sess01abcd"))
	}
	if r := call(t, p.Socket, "volume-init", map[string]any{"session": "sess01abcd", "device": "drive-scsi0"}); !strings.Contains(r.Error, "no such restore session sess01abcd (it was cleaned up") {
		t.Fatalf("volume-init after cleanup: %+v", r)
	}

	// The daemon restarts between restore-init and volume-init (a pvesnap upgrade during a
	// qmrestore): the new daemon finds the session again for the process that began it, and
	// only for that one.
	if r := call(t, p.Socket, "restore-init", map[string]any{"storage": "snaps", "volname": volname, "session": "sess03abcd"}); r.Error != "" {
		t.Fatalf("restore-init: %+v", r)
	}
	p2 := &provider.Provider{Socket: filepath.Join(t.TempDir(), "p.sock"), Inv: p.Inv, Storage: p.Storage, DB: db, Stager: st, LVM: act,
		Dev: dev, PeerUID: os.Getuid(), RecoverEvery: time.Hour}
	must(t, p2.Start(ctx))
	needPerl(t) // another process asks for the session: refused
	other, _ := exec.Command("perl", "-MIO::Socket::UNIX", "-e", `my $s = IO::Socket::UNIX->new(Peer => $ARGV[0]) or die $!; print $s $ARGV[1], "\n"; print scalar(<$s>);`,
		p2.Socket, `{"version":1,"method":"volume-init","params":{"session":"sess03abcd","device":"drive-scsi0"}}`).CombinedOutput()
	if !strings.Contains(string(other), "restore session sess03abcd belongs to process") {
		t.Fatalf("another process's session after a restart: %s", other)
	}
	r = call(t, p2.Socket, "volume-init", map[string]any{"session": "sess03abcd", "device": "drive-scsi0"})
	if r.Error != "" || r.Result.(map[string]any)["path"] != filepath.Join(dev, "pvesnap_sess03abcd_0", "vm-100-disk-0") ||
		!strings.Contains(fmt.Sprint(r.Log), "found again after a daemon restart") {
		t.Fatalf("volume-init after a restart: %+v", r)
	}
	if r := call(t, p2.Socket, "restore-cleanup", map[string]any{"session": "sess03abcd"}); r.Error != "" || state("sess03abcd") != restore.StateDone {
		t.Fatalf("cleanup after a restart: %+v, job %s", r, state("sess03abcd"))
	}
	if r := call(t, p2.Socket, "volume-init", map[string]any{"session": "sess03abcd", "device": "drive-scsi0"}); !strings.Contains(r.Error, "no such restore session sess03abcd (it was cleaned up") {
		t.Fatalf("volume-init after cleanup: %+v", r)
	}

	// The caller hangs up while the staging runs: the staging is stopped and undone.
	began := make(chan struct{})
	st.reset(true, began)
	c, err := net.Dial("unix", p.Socket)
	must(t, err)
	b, _ := json.Marshal(map[string]any{"version": 1, "method": "restore-init", "params": map[string]any{"storage": "snaps", "volname": volname, "session": "sess02abcd"}})
	c.Write(append(b, '\n'))
	<-began
	c.Close()
	for deadline := time.Now().Add(10 * time.Second); state("sess02abcd") != restore.StateRolledBack; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("hung-up session: %s, undos %q", state("sess02abcd"), st.undone())
		}
	}
	if st.undone() != "lvm-deactivate-vg pvesnap_sess02abcd_0|array-destroy-volume pvesnap-sess02abcd-0" {
		t.Fatalf("hung-up session's undos: %q", st.undone())
	}

	// qmrestore killed with SIGKILL after its disks were staged and activated.
	needPerl(t)
	st.reset(false, nil)
	cmd := exec.Command("perl", "-T", filepath.Join(perlDir(t), "t", "pve-standin.pl"), "--socket", p.Socket, "--dev", dev, "--storage-cfg",
		filepath.Join(paths.PVE, "storage.cfg"), "snaps", "stage", volname)
	out, err := cmd.StdoutPipe()
	must(t, err)
	must(t, cmd.Start())
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		cmd.Process.Kill()
		t.Fatalf("stage: %v %q", err, line)
	}
	var staged struct {
		Session string            `json:"session"`
		Paths   map[string]string `json:"paths"`
	}
	must(t, json.Unmarshal([]byte(line), &staged))
	if staged.Paths["drive-scsi0"] == "" || state(staged.Session) != restore.StateRunning {
		t.Fatalf("staged by perl: %s (job %s)", line, state(staged.Session))
	}
	var spec struct {
		OwnerPID int `json:"owner_pid"`
	}
	var raw string
	must(t, db.QueryRow(`SELECT spec FROM jobs WHERE id = ?`, staged.Session).Scan(&raw))
	json.Unmarshal([]byte(raw), &spec)
	if spec.OwnerPID != cmd.Process.Pid {
		t.Fatalf("session owner %d, perl is %d", spec.OwnerPID, cmd.Process.Pid)
	}
	if n := p.Recover(ctx); n != 0 || state(staged.Session) != restore.StateRunning {
		t.Fatalf("recovery while the owner lives: %d, %s", n, state(staged.Session))
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	if n := p.Recover(ctx); n != 1 || state(staged.Session) != restore.StateDone {
		t.Fatalf("recovery after the owner died: %d, %s", n, state(staged.Session))
	}
	want := fmt.Sprintf("lvm-deactivate-vg pvesnap_%s_0|array-destroy-volume pvesnap-%s-0", staged.Session, staged.Session)
	if st.undone() != want {
		t.Fatalf("undos after the owner died: %q, want %q", st.undone(), want)
	}
}
