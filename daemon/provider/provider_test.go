package provider

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pvesnap/pvesnap/daemon/inventory"
	"github.com/pvesnap/pvesnap/daemon/restore"
	"github.com/pvesnap/pvesnap/daemon/store"
	"github.com/pvesnap/pvesnap/daemon/tasks"
)

func TestVolname(t *testing.T) {
	ref := archiveRef{vmid: 100, ctime: 1700000000, point: "fa1:pg1.42", array: "fa1"}
	v := ref.volname()
	if v != "backup/pvesnap-qemu-100-1700000000-fa1:pg1.42" {
		t.Fatalf("volname %s", v)
	}
	got, err := parseVolname(v)
	if err != nil || got != ref {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	// A point may itself contain ':' (a replicated snapshot named after its source array).
	got, err = parseVolname("backup/pvesnap-qemu-999999999-1-fa-2.b:src:pg.7")
	if err != nil || got.vmid != 999999999 || got.array != "fa-2.b" || got.point != "fa-2.b:src:pg.7" {
		t.Fatalf("colon in point: %+v %v", got, err)
	}
	for _, bad := range []string{
		"backup/pvesnap-qemu-99-1700000000-fa1:x",     // VMID below 100
		"backup/pvesnap-qemu-100-0-fa1:x",             // ctime 0
		"backup/pvesnap-qemu-100-1700000000-FA1:x",    // array ids are lower case
		"backup/pvesnap-qemu-100-1700000000-fa1:",     // no point
		"backup/pvesnap-qemu-100-1700000000-fa1:../x", // path characters
		"backup/pvesnap-qemu-100-1700000000-fa1:x y",  // space
		"backup/vzdump-qemu-100-2026_01_01-00_00_00.vma",
		"pvesnap-qemu-100-1700000000-fa1:x",
	} {
		if _, err := parseVolname(bad); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

// The config of an archive: vzdump's rules, map lines for the restored disks, backup=0 on
// the disks the point cannot restore (CD-ROMs and passthrough untouched).
func TestArchiveConfig(t *testing.T) {
	raw := `#web server
#second line
name: web
lock: backup
memory: 2048
net0: virtio=BC:24:11:00:00:01,bridge=vmbr0
ide2: local:iso/debian.iso,media=cdrom
scsi0: san1:vm-100-disk-0,iothread=1,size=32G
scsi1: san1:vm-100-disk-1,backup=1,size=8G
scsi2: /dev/disk/by-id/ata-X,size=100G
virtio0: local-zfs:vm-100-disk-2,size=4G
efidisk0: san1:vm-100-disk-3,efitype=4m,size=4M
unused0: san1:vm-100-disk-9
parent: before-upgrade
#qmdump#map:scsi0:drive-scsi0:old:raw:

[PENDING]
memory: 4096

[before-upgrade]
scsi0: san1:vm-100-disk-0,size=16G
`
	got := archiveConfig(raw, []string{"efidisk0", "scsi0"}, map[string]string{"scsi0": "san1", "efidisk0": "san1", "scsi1": "san1"})
	want := `#web server
#second line
name: web
memory: 2048
net0: virtio=BC:24:11:00:00:01,bridge=vmbr0
ide2: local:iso/debian.iso,media=cdrom
scsi0: san1:vm-100-disk-0,iothread=1,size=32G
scsi1: san1:vm-100-disk-1,size=8G,backup=0
scsi2: /dev/disk/by-id/ata-X,size=100G
virtio0: local-zfs:vm-100-disk-2,size=4G,backup=0
efidisk0: san1:vm-100-disk-3,efitype=4m,size=4M
#qmdump#map:efidisk0:drive-efidisk0:san1:raw:
#qmdump#map:scsi0:drive-scsi0:san1:raw:
`
	if got != want {
		t.Fatalf("config:\n%s\nwant:\n%s", got, want)
	}
}

// Which disks a point restores, and the notes that say why the others are not.
func TestRestorableNotes(t *testing.T) {
	d := &inventory.VMDetail{VMView: inventory.VMView{VMID: 100, CTime: 1700000000, Name: "web", State: inventory.Deleted, Deleted: 1760000000},
		DiskList: []inventory.DiskView{
			{DiskID: inventory.DiskID{Key: "scsi0", LVUUID: "u0", LVTime: 1, Size: 4 << 30}, Mapping: inventory.Mapped},
			{DiskID: inventory.DiskID{Key: "scsi1", LVUUID: "u1", LVTime: 5, Size: 1 << 30}, Mapping: inventory.Mapped},
			{DiskID: inventory.DiskID{Key: "scsi2", LVUUID: "u2", LVTime: 1, Size: 1 << 30}, Mapping: inventory.Mapped},
			{DiskID: inventory.DiskID{Key: "scsi3", Size: 1 << 30}, Mapping: inventory.Mapped},
			{DiskID: inventory.DiskID{Key: "virtio0"}, Mapping: "not-on-array"},
		}}
	pt := &inventory.Point{ID: "fa1:pg1.42", Array: "fa1", Created: 3000,
		Snapshots:    map[string]string{"scsi0": "v.pg1.42", "scsi1": "v.pg1.42", "scsi3": "v.pg1.42"},
		PredatesDisk: []string{"scsi1"}}
	keys, size, _ := restorable(d, pt)
	if strings.Join(keys, ",") != "scsi0" || size != 4<<30 {
		t.Fatalf("restorable %v %d", keys, size)
	}
	a, ok := archiveOf(d, pt)
	if !ok {
		t.Fatal("no archive")
	}
	want := "web at fa1:pg1.42: scsi0; VM deleted 2025-10-09 08:53 UTC; predates disk scsi1; no snapshot of disk scsi2; disk scsi3: logical volume never seen, cannot be verified; disk virtio0 not on an array volume"
	if a.Notes != want || a.Volname != "backup/pvesnap-qemu-100-1700000000-fa1:pg1.42" || a.CTime != 3 || a.Subtype != "qemu" || a.Size != 4<<30 {
		t.Fatalf("archive %+v\nwant notes %q", a, want)
	}
	// A point that predates every disk restores nothing: it is not an archive.
	pt.PredatesDisk = []string{"scsi0", "scsi1"}
	if _, ok := archiveOf(d, pt); ok {
		t.Fatal("a point restoring nothing listed")
	}
}

// dial sends one raw request line and reads the answer.
func dial(t *testing.T, sock, line string) Response {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte(line)) // a refused caller is answered (and hung up on) before it writes
	b, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil {
		t.Fatalf("answer: %v (%q)", err, b)
	}
	var r Response
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("answer %q: %v", b, err)
	}
	return r
}

func startProvider(t *testing.T, p *Provider) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if p.Socket == "" {
		p.Socket = filepath.Join(t.TempDir(), "run", "provider.sock")
	}
	if p.RecoverEvery == 0 {
		p.RecoverEvery = time.Hour
	}
	if p.DB == nil {
		db, err := store.Open(filepath.Join(t.TempDir(), "db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		p.DB = db
	}
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
}

// The protocol's framing, versioning and refusals, before any method runs.
func TestProtocol(t *testing.T) {
	p := &Provider{PeerUID: os.Getuid(), DaemonVersion: "1.2.3", RequestTimeout: 300 * time.Millisecond}
	startProvider(t, p)
	fi, err := os.Stat(p.Socket)
	if err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket %v %v", fi.Mode(), err)
	}
	r := dial(t, p.Socket, `{"version":1,"method":"version"}`+"\n")
	if r.Version != 1 || r.Error != "" || fmt.Sprint(r.Result) != "map[daemon:1.2.3 versions:[1]]" {
		t.Fatalf("version: %+v", r)
	}
	for _, c := range []struct{ line, want string }{
		{`{"version":2,"method":"version"}` + "\n", "protocol version 2 is not spoken here: this pvesnap daemon speaks version 1"},
		{`{"method":"version"}` + "\n", "protocol version 0 is not spoken here"},
		{`{"version":1,"method":"destroy"}` + "\n", `unknown method "destroy"`},
		{"not json\n", "request is not JSON"},
		{`{"version":1,"method":"list","params":{"storage":"snaps","all":true}}` + "\n", `bad params: json: unknown field "all"`},
		{`{"version":1,"method":"restore-cleanup","params":{"session":"../../x"}}` + "\n", `session: invalid job id "../../x"`},
		{`{"version":1,"method":"volume-init","params":{"session":"abcdef123456","device":"drive-scsi0"}}` + "\n", "no such restore session abcdef123456"},
		{`{"version":1,"method":"list","params":{"storage":"-x"}}` + "\n", "storage ID '-x'"},
		{`{"version":1,"method":"version","params":{"x":"` + strings.Repeat("a", MaxRequest) + `"}}` + "\n", "request longer than 65536 bytes"},
	} {
		r := dial(t, p.Socket, c.line)
		if r.Version != 1 || !strings.Contains(r.Error, c.want) || r.Result != nil {
			t.Errorf("%.60s: %+v, want error %q", c.line, r, c.want)
		}
	}
	// A restore-cleanup of a session never begun: nothing to clean, no error.
	if r := dial(t, p.Socket, `{"version":1,"method":"restore-cleanup","params":{"session":"abcdef123456"}}`+"\n"); r.Error != "" {
		t.Fatalf("cleanup of an unknown session: %+v", r)
	}
	// A caller that never sends its request is dropped (the daemon does not hold it).
	c, err := net.Dial("unix", p.Socket)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	b, err := bufio.NewReader(c).ReadBytes('\n')
	c.Close()
	if !strings.Contains(string(b), "no request line") {
		t.Fatalf("silent caller: %q %v", b, err)
	}
}

// Only root (here: the uid configured) may call.
func TestPeerRefused(t *testing.T) {
	p := &Provider{PeerUID: os.Getuid() + 1}
	startProvider(t, p)
	r := dial(t, p.Socket, `{"version":1,"method":"version"}`+"\n")
	if !strings.Contains(r.Error, fmt.Sprintf("refused: uid %d may not use pvesnap's plugin socket", os.Getuid())) || r.Result != nil {
		t.Fatalf("foreign uid: %+v", r)
	}
}

// Start refuses to replace a file that is not a socket; a stale socket is replaced.
func TestSocketPath(t *testing.T) {
	dir := t.TempDir()
	p := &Provider{Socket: filepath.Join(dir, "provider.sock"), PeerUID: os.Getuid()}
	os.WriteFile(p.Socket, []byte("mine"), 0o644)
	if err := p.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "is not a socket: refusing to replace it") {
		t.Fatalf("regular file at the socket path: %v", err)
	}
	if b, _ := os.ReadFile(p.Socket); string(b) != "mine" {
		t.Fatal("the file was touched")
	}
	os.Remove(p.Socket)
	stale, err := net.Listen("unix", p.Socket)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	startProvider(t, p)
	if r := dial(t, p.Socket, `{"version":1,"method":"version"}`+"\n"); r.Error != "" {
		t.Fatalf("after a stale socket: %+v", r)
	}
}

// fakeStager records the undos the journal runs.
type fakeStager struct {
	mu   sync.Mutex
	undo []string
}

func (f *fakeStager) Stage(ctx context.Context, j *restore.Journal, sources []inventory.DiskSource, logf func(string, ...any)) ([]restore.StagedDisk, error) {
	return nil, fmt.Errorf("not used")
}

func (f *fakeStager) Staged(ctx context.Context, job string, sources []inventory.DiskSource) ([]restore.StagedDisk, error) {
	return nil, fmt.Errorf("not used")
}

func (f *fakeStager) Exec(ctx context.Context, a restore.Action) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.undo = append(f.undo, a.Kind+" "+a.Args["volume"])
	return nil
}

// journaled begins a session job owned by (pid, pstart) with two staging steps.
func journaled(t *testing.T, db *store.DB, id string, pid int, pstart uint64) {
	t.Helper()
	ctx := context.Background()
	j, err := restore.Begin(ctx, db, id, KindArchive, "archive:"+id, sessionSpec{Volname: "backup/x", OwnerPID: pid, OwnerPStart: pstart})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"pvesnap-" + id + "-0", "pvesnap-" + id + "-0c"} {
		if err := j.Step(ctx, "step "+v, restore.Action{Kind: "array-destroy-volume", Args: map[string]string{"volume": v}}, func() error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
}

func jobState(t *testing.T, db *store.DB, id string) string {
	var s string
	if err := db.QueryRow(`SELECT state FROM jobs WHERE id = ?`, id).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// A session whose owner process is gone is cleaned up by the daemon; one whose owner lives is
// left to it; a job that is not a session is never touched.
func TestRecover(t *testing.T) {
	db, err := store.Open(filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	me, err := tasks.ProcStartTime("/proc", os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	st := &fakeStager{}
	p := &Provider{DB: db, Stager: st}
	journaled(t, db, "deadowner1", os.Getpid(), me+1) // this pid, another start: a reused pid
	journaled(t, db, "liveowner1", os.Getpid(), me)
	if _, err := restore.Begin(context.Background(), db, "ownrestore", restore.KindRestore, "vm:100", nil); err != nil {
		t.Fatal(err)
	}
	if n := p.Recover(context.Background()); n != 1 {
		t.Fatalf("recovered %d", n)
	}
	if got := strings.Join(st.undo, "|"); got != "array-destroy-volume pvesnap-deadowner1-0c|array-destroy-volume pvesnap-deadowner1-0" {
		t.Fatalf("undos %q", got)
	}
	if s := jobState(t, db, "deadowner1"); s != restore.StateDone {
		t.Fatalf("dead owner's session: %s", s)
	}
	if s := jobState(t, db, "liveowner1"); s != restore.StateRunning {
		t.Fatalf("live owner's session: %s", s)
	}
	if s := jobState(t, db, "ownrestore"); s != restore.StateRunning {
		t.Fatalf("pvesnap's own restore touched: %s", s)
	}
	// The plugin's cleanup of the live one; a second cleanup finds nothing to do.
	if err := p.cleanup(context.Background(), "liveowner1", t.Logf); err != nil || jobState(t, db, "liveowner1") != restore.StateDone {
		t.Fatalf("cleanup: %v", err)
	}
	n := len(st.undo)
	if err := p.cleanup(context.Background(), "liveowner1", t.Logf); err != nil || len(st.undo) != n {
		t.Fatalf("second cleanup: %v, %d undos", err, len(st.undo)-n)
	}
	// An id naming pvesnap's own restore job is refused.
	if err := p.cleanup(context.Background(), "ownrestore", t.Logf); err == nil || !strings.Contains(err.Error(), "is not a restore session of the backup provider") {
		t.Fatalf("cleanup of another kind of job: %v", err)
	}
}

// A cleanup arriving while the session still stages stops the staging and waits for it.
func TestCleanupStopsStaging(t *testing.T) {
	db, err := store.Open(filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	st := &fakeStager{}
	p := &Provider{DB: db, Stager: st}
	journaled(t, db, "staging01", os.Getpid(), 1)
	ctx, cancel := context.WithCancel(context.Background())
	s := &session{cancel: cancel}
	if err := p.begin("staging01", s); err != nil {
		t.Fatal(err)
	}
	if err := p.begin("staging01", &session{cancel: cancel}); err == nil {
		t.Fatal("a second session with the same id")
	}
	stopped := make(chan time.Time, 1)
	s.mu.Lock()
	go func() { // the staging: runs until canceled
		<-ctx.Done()
		time.Sleep(50 * time.Millisecond)
		stopped <- time.Now()
		s.mu.Unlock()
	}()
	if err := p.cleanup(context.Background(), "staging01", t.Logf); err != nil {
		t.Fatal(err)
	}
	done := time.Now()
	if at := <-stopped; done.Before(at) {
		t.Fatal("the cleanup did not wait for the staging to stop")
	}
	if len(st.undo) != 2 || p.session("staging01") != nil {
		t.Fatalf("after cleanup: undos %v, session %v", st.undo, p.session("staging01"))
	}
}
