// Package itest runs pvesnap daemons in front of a simulated Proxmox VE cluster, with zfs and
// LVM emulated over the simulator's storage, and checks what clients see through :8009.
package itest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/pvesnap/pvesnap/daemon/arrays"
	"github.com/pvesnap/pvesnap/daemon/config"
	"github.com/pvesnap/pvesnap/daemon/inventory"
	"github.com/pvesnap/pvesnap/daemon/peer"
	"github.com/pvesnap/pvesnap/daemon/provider"
	"github.com/pvesnap/pvesnap/daemon/pve"
	"github.com/pvesnap/pvesnap/daemon/restore"
	"github.com/pvesnap/pvesnap/daemon/runner"
	"github.com/pvesnap/pvesnap/daemon/server"
	"github.com/pvesnap/pvesnap/daemon/storage"
	"github.com/pvesnap/pvesnap/daemon/store"
	"github.com/pvesnap/pvesnap/daemon/tasks"
	"github.com/pvesnap/pvesnap/lvm"
	"github.com/pvesnap/pvesnap/lvm/engine/enginetest"
	"github.com/pvesnap/pvesnap/sim/fakecli"
	"github.com/pvesnap/pvesnap/sim/flasharray"
	simpve "github.com/pvesnap/pvesnap/sim/pve"
	"github.com/pvesnap/pvesnap/sim/volstore"
	"github.com/pvesnap/pvesnap/www"
)

// sanStorage is shared LVM on a simulated FlashArray volume (see withArray).
const sanStorage = `
lvm: san1
	vgname vgsan1
	content images
	shared 1
`

// workerSetup is what a worker process needs to rebuild its node's modules.
type workerSetup struct {
	Node    string            `json:"node"`
	Tasks   string            `json:"tasks"`
	PVE     string            `json:"pve"`
	Lock    string            `json:"lock"`
	State   string            `json:"state"`
	Pools   map[string]string `json:"pools"` // zfs pool -> store dir
	VGs     map[string]string `json:"vgs"`   // vg -> store dir
	Thin    map[string]string `json:"thin"`  // vg -> thin pool
	Testing map[string]string `json:"testing"`
	// PVs are the physical volumes of VGs (for LVM storages on the simulated array).
	PVs map[string][]string `json:"pvs"`
	// HW is the fake /dev and /sys of the node's array devices.
	HW string `json:"hw"`
	// Run is the node's run directory and Port pvesnap's port on every node (moves).
	Run  string `json:"run"`
	Port string `json:"port"`
}

func (w workerSetup) runner() runner.Runner {
	z := &fakecli.ZFS{Pools: map[string]volstore.Store{}}
	for p, d := range w.Pools {
		z.Pools[p] = volstore.Store{Dir: d}
	}
	l := &fakecli.LVM{VGs: map[string]fakecli.VG{}}
	for vg, d := range w.VGs {
		l.VGs[vg] = fakecli.VG{Store: volstore.Store{Dir: d}, ThinPool: w.Thin[vg], PVs: w.PVs[vg]}
	}
	return runner.Emulator((&fakecli.Dispatch{ZFS: z, LVM: l}).Command)
}

// restorer runs restores over the fake LVM and hardware (device waits are short: no device
// ever appears in the fake /sys).
func (w workerSetup) restorer(db *store.DB, inv *inventory.Inventory) *restore.Restorer {
	hw := w.HW
	return &restore.Restorer{Node: w.Node, Inv: inv, NodePaths: arrays.NodePaths{ISCSI: filepath.Join(w.State, "iscsi")},
		LVM: inv.LVM, Host: restore.Host{Sys: filepath.Join(hw, "sys"), Dev: filepath.Join(hw, "dev"), Run: w.runner()},
		VMs: restore.VMs{PVE: w.PVE, Lock: w.Lock, Node: w.Node, Run: w.runner()}, DB: db, DeviceWait: 500 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler)}
}

// inventory is the node's inventory over the fake LVM and hardware.
func (w workerSetup) inventory(db *store.DB) *inventory.Inventory {
	return &inventory.Inventory{Node: w.Node, PVE: w.PVE, Storage: pve.NewStorageConfig(w.PVE), Arrays: &arrays.Config{PVE: w.PVE},
		LVM: &lvm.LVM{Run: w.runner()}, Roots: inventory.Roots{Dev: filepath.Join(w.HW, "dev"), Sys: filepath.Join(w.HW, "sys")},
		DB: db, Tasks: &tasks.Dir{Root: w.Tasks}, Run: w.runner()}
}

func (w workerSetup) storageModule(ts *tasks.Service) *storage.Module {
	return &storage.Module{Node: w.Node, Storage: pve.NewStorageConfig(w.PVE), Run: w.runner(), Tasks: ts, LockDir: w.Lock,
		Logger: slog.New(slog.DiscardHandler), InstantWait: 5 * time.Second,
		Peers: &peer.Peers{PVE: w.PVE, Node: w.Node, Port: w.Port}, RunDir: w.Run, StreamWait: 3 * time.Second,
		Offloadable: func(context.Context, string) (bool, string) {
			return false, "simulated devices cannot copy inside the storage"
		}}
}

func TestMain(m *testing.M) {
	if os.Getenv("PVESNAP_ITEST_ROLE") == "worker" {
		var w workerSetup
		if err := json.Unmarshal([]byte(os.Getenv("PVESNAP_ITEST_SETUP")), &w); err != nil {
			fmt.Fprintln(os.NewFile(3, "hs"), "ERROR:", err)
			os.Exit(2)
		}
		mod := w.storageModule(nil)
		h := mod.Handlers()
		db, err := store.Open(filepath.Join(w.State, "pvesnap.db"))
		if err != nil {
			fmt.Fprintln(os.NewFile(3, "hs"), "ERROR:", err)
			os.Exit(2)
		}
		inv := w.inventory(db)
		for k, v := range (&inventory.Module{Inv: inv}).Handlers() {
			h[k] = v
		}
		for k, v := range (&restore.Module{R: w.restorer(db, inv)}).Handlers() {
			h[k] = v
		}
		for k, v := range testHandlers() {
			h[k] = v
		}
		os.Exit(tasks.RunWorker(tasks.WorkerEnv{Dir: &tasks.Dir{Root: w.Tasks}, Node: w.Node, Handlers: h,
			Stdin: os.Stdin, Handshake: os.NewFile(3, "handshake")}))
	}
	os.Exit(m.Run())
}

// testHandlers are job kinds only the tests use (a slow task for restart and stop tests).
func testHandlers() map[string]tasks.Handler {
	return map[string]tasks.Handler{
		"itest-sleep": func(ctx context.Context, t *tasks.Task, spec json.RawMessage) error {
			var p struct{ Steps int }
			json.Unmarshal(spec, &p)
			for i := 1; i <= p.Steps; i++ {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(100 * time.Millisecond):
				}
				t.Logf("step %d of %d", i, p.Steps)
			}
			return nil
		},
	}
}

// Env is a simulated cluster with pvesnap on every node.
type Env struct {
	T       *testing.T
	Sim     *simpve.Cluster
	Port    int
	Daemons map[string]*server.Daemon
	Tasks   map[string]*tasks.Service
	Restore map[string]*restore.Module
	stops   map[string]func()
	// Extra modules for every daemon (test-only routes).
	Extra func(node string, ts *tasks.Service) []server.Module
	// Offloadable, when set, stands for the devices' offload check of thick LVM copies
	// (the simulated devices have none); set it before StartNode.
	Offloadable func(ctx context.Context, vg string) (bool, string)
	moveToken   string // allocateOnly's
	logs        *syncBuffer
	fa          *flasharray.Server // started by the first test that needs an array
	// invReady: VM 100 with a disk on the array exists (inventoryVM).
	invReady bool
	// hwNodes are the nodes' fake hardware (hw).
	hwNodes map[string]*enginetest.Node
}

// hw is a node's fake hardware: its sysfs and /dev, and devices answering the commands pvesnap
// sends them (enginetest).
func (e *Env) hw(node string) *enginetest.Node {
	if e.hwNodes == nil {
		e.hwNodes = map[string]*enginetest.Node{}
	}
	if n := e.hwNodes[node]; n != nil {
		return n
	}
	hw := e.setup(node).HW
	n := enginetest.NewNode(filepath.Join(hw, "sys"), filepath.Join(hw, "dev"))
	e.hwNodes[node] = n
	return n
}

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Start runs a cluster of nodes (default one, "pve1") with pvesnap on each.
func Start(t *testing.T, nodes ...string) *Env { return StartWith(t, simpve.Options{}, nodes...) }

// StartWith is Start with simulator options (the GUI page and static files).
func StartWith(t *testing.T, o simpve.Options, nodes ...string) *Env {
	t.Helper()
	if len(nodes) == 0 {
		nodes = []string{"pve1"}
	}
	// pveproxy closes idle connections after 5 s; sooner here, so that load tests measure the
	// daemon with its pools to pveproxy drained as they are between bursts.
	o.Dir, o.Nodes, o.ClusterName, o.AuthFailDelay, o.PvestatdInterval, o.Timeout = t.TempDir(), nodes, "lab", time.Millisecond, time.Hour, 300*time.Millisecond
	sim, err := simpve.Start(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	if err := sim.SetStorageConfig(simpve.DefaultStorageConfig + sanStorage); err != nil {
		t.Fatal(err)
	}
	e := &Env{T: t, Sim: sim, Port: freePort(t), Daemons: map[string]*server.Daemon{}, Tasks: map[string]*tasks.Service{},
		stops: map[string]func(){}, Extra: testModules, logs: &syncBuffer{}}
	for _, n := range nodes {
		e.StartNode(n)
	}
	t.Cleanup(e.Stop)
	return e
}

func (e *Env) setup(node string) workerSetup {
	p := e.Sim.NodePaths(node)
	return workerSetup{Node: node, Tasks: p.Tasks, PVE: p.PVE, Lock: p.Lock, State: p.State,
		Pools: map[string]string{"rpool/data": e.Sim.StorageDir(node, "local-zfs")},
		VGs:   map[string]string{"pve": e.Sim.StorageDir(node, "local-lvm"), "vgsan1": e.Sim.StorageDir(node, "san1")},
		Thin:  map[string]string{"pve": "data"},
		PVs:   map[string][]string{"vgsan1": {"/dev/sdb"}},
		HW:    filepath.Join(p.State, "hw"), Run: p.Run, Port: strconv.Itoa(e.Port)}
}

// StartNode starts (or restarts) pvesnap on node.
func (e *Env) StartNode(node string) {
	t := e.T
	i := indexOf(e.Sim.Nodes(), node)
	ctx, cancel := context.WithCancel(context.Background())
	p := e.Sim.NodePaths(node)
	yaml := fmt.Sprintf("listen: 127.0.0.%d:%d\nupstream: %s\nnode: %s\npveproxy_config: %s\ntimeouts:\n  auth_fail_delay: 0s\npaths:\n  pve: %s\n  tasks: %s\n  state: %s\n  run: %s\n  lock: %s\n",
		i+1, e.Port, e.Sim.URL(node), node, e.PveproxyConfig(node), p.PVE, p.Tasks, p.State, p.Run, p.Lock)
	cfgPath := filepath.Join(p.State, "pvesnap.yaml")
	os.WriteFile(cfgPath, []byte(yaml), 0o644)
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	db, err := store.Open(filepath.Join(p.State, "pvesnap.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	setup, _ := json.Marshal(e.setup(node))
	exe, _ := os.Executable()
	dir := &tasks.Dir{Root: p.Tasks}
	ts := &tasks.Service{Dir: dir, DB: db, Node: node, StopGrace: 2 * time.Second, Logger: slog.New(slog.DiscardHandler),
		Spawner: &tasks.Spawner{Exe: exe, Dir: dir, Env: []string{"PVESNAP_ITEST_ROLE=worker", "PVESNAP_ITEST_SETUP=" + string(setup)}}}
	iscsi := filepath.Join(p.State, "iscsi")
	os.MkdirAll(iscsi, 0o755)
	os.WriteFile(filepath.Join(iscsi, "initiatorname.iscsi"), []byte("## generated\nInitiatorName=iqn.1993-08.org.debian:01:"+node+"\n"), 0o644)
	logger := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	inv := e.setup(node).inventory(db)
	inv.Logger = logger.With("component", "inventory")
	restorer := e.setup(node).restorer(db, inv)
	sm := e.setup(node).storageModule(ts)
	if e.Offloadable != nil {
		sm.Offloadable = e.Offloadable
	}
	mods := []server.Module{ts, sm,
		&arrays.Module{Config: &arrays.Config{PVE: p.PVE}, Node: arrays.NodePaths{ISCSI: iscsi}, Logger: logger.With("component", "arrays")},
		&inventory.Module{Inv: inv, Tasks: ts, ScanInterval: time.Hour, Devices: &inventory.Devices{Inv: inv, Open: e.hw(node).Openers()}},
		e.restoreModule(node, &restore.Module{R: restorer, Tasks: ts, RecoverEvery: time.Hour}),
		// the storage plugin's socket, served to the uid running the tests (root in production)
		&provider.Provider{Socket: filepath.Join(p.Run, "provider.sock"), Inv: inv, Storage: inv.Storage, DB: db, Stager: restorer,
			LVM: inv.LVM, Dev: filepath.Join(e.setup(node).HW, "dev"), PeerUID: os.Getuid(), RecoverEvery: time.Hour,
			Logger: logger.With("component", "provider")}}
	if e.Extra != nil {
		mods = append(mods, e.Extra(node, ts)...)
	}
	d, err := server.New(cfg, logger, mods, []server.Static{www.Static{}}, www.Inject)
	if err != nil {
		t.Fatal(err)
	}
	ts.Upstream = d.UpstreamTaskList
	if _, err := d.Listen(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	e.Daemons[node] = d
	e.Tasks[node] = ts
	e.stops[node] = func() { cancel(); <-done }
}

// PveproxyConfig is the node's /etc/default/pveproxy (absent unless a test writes it).
func (e *Env) PveproxyConfig(node string) string {
	return filepath.Join(e.Sim.NodePaths(node).State, "default-pveproxy")
}

func (e *Env) restoreModule(node string, m *restore.Module) *restore.Module {
	if e.Restore == nil {
		e.Restore = map[string]*restore.Module{}
	}
	e.Restore[node] = m
	return m
}

// StopNode stops pvesnap on node (its task workers keep running).
func (e *Env) StopNode(node string) {
	if stop := e.stops[node]; stop != nil {
		stop()
		delete(e.stops, node)
	}
}

// Stop shuts every daemon down, after the task workers still running have ended (they write
// into the test's directories).
func (e *Env) Stop() {
	deadline := time.Now().Add(30 * time.Second)
	for _, ts := range e.Tasks {
		for time.Now().Before(deadline) {
			active, _ := ts.Dir.Active()
			running := false
			for _, a := range active {
				if u, err := tasks.ParseUPID(a.UPID); err == nil && a.EndTime == 0 && ts.Dir.IsRunning(u) {
					running = true
				}
			}
			if !running {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	for n := range e.stops {
		e.StopNode(n)
	}
}

func indexOf(l []string, s string) int {
	for i, x := range l {
		if x == s {
			return i
		}
	}
	return -1
}

// URL is pvesnap's address on node.
func (e *Env) URL(node string) string {
	for i, n := range e.Sim.Nodes() {
		if n == node {
			return "https://127.0.0." + strconv.Itoa(i+1) + ":" + strconv.Itoa(e.Port)
		}
	}
	return ""
}

// Client returns an API client for pvesnap on node (no credentials).
func (e *Env) Client(node string) *simpve.Client {
	c, err := simpve.NewClient(e.URL(node), e.Sim.CAFile())
	if err != nil {
		e.T.Fatal(err)
	}
	return c
}

// Root returns a client logged in as root@pam through pvesnap.
func (e *Env) Root(node string) *simpve.Client {
	c := e.Client(node)
	if err := c.Login("root@pam", "pvesnap"); err != nil {
		e.T.Fatal(err)
	}
	return c
}

// Token creates user with role on path and a token (privsep off) and returns a client using it.
func (e *Env) Token(node, user string, acls map[string]string) (*simpve.Client, string) {
	e.Sim.AddUser(user, "pw-"+user)
	for path, role := range acls {
		e.Sim.AddACL(path, user, role, true)
	}
	id, secret, err := e.Sim.AddToken(user, "csi", false)
	if err != nil {
		e.T.Fatal(err)
	}
	c := e.Client(node)
	c.Token = id + "=" + secret
	return c, secret
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func volMeta() volstore.Meta { return volstore.Meta{} }

func t0ctx() context.Context { return context.Background() }

func jobSleep(steps int) tasks.Job {
	spec, _ := json.Marshal(map[string]int{"steps": steps})
	return tasks.Job{Type: "pvesnaptest", ID: "100", User: "root@pam", Kind: "itest-sleep", Spec: spec}
}

// syncBuffer collects the daemons' logs for tests that check what is (not) logged.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write keeps the last 4 MiB: load tests log hundreds of thousands of calls.
func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.b.Len() > 4<<20 {
		keep := append([]byte(nil), s.b.Bytes()[s.b.Len()-2<<20:]...)
		s.b.Reset()
		s.b.Write(keep)
	}
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
