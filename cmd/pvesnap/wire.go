package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pvesnap/pvesnap/daemon/api"
	"github.com/pvesnap/pvesnap/daemon/arrays"
	"github.com/pvesnap/pvesnap/daemon/config"
	"github.com/pvesnap/pvesnap/daemon/inventory"
	"github.com/pvesnap/pvesnap/daemon/logging"
	"github.com/pvesnap/pvesnap/daemon/peer"
	"github.com/pvesnap/pvesnap/daemon/provider"
	"github.com/pvesnap/pvesnap/daemon/pure"
	"github.com/pvesnap/pvesnap/daemon/pve"
	"github.com/pvesnap/pvesnap/daemon/restore"
	"github.com/pvesnap/pvesnap/daemon/runner"
	"github.com/pvesnap/pvesnap/daemon/server"
	"github.com/pvesnap/pvesnap/daemon/storage"
	"github.com/pvesnap/pvesnap/daemon/store"
	"github.com/pvesnap/pvesnap/daemon/tasks"
	"github.com/pvesnap/pvesnap/lvm"
	"github.com/pvesnap/pvesnap/lvm/engine"
	"github.com/pvesnap/pvesnap/www"
)

// env holds what the daemon's modules and the task workers share.
type env struct {
	cfg     *config.Config
	logger  *slog.Logger
	runner  *runner.Exec
	taskDir *tasks.Dir
	db      *store.DB
	tasks   *tasks.Service
	storage *storage.Module
	arrays  *arrays.Module
	inv     *inventory.Inventory
	invMod  *inventory.Module
	restore *restore.Module
	// provider answers PVE's storage plugin (perl/) on a root-only socket.
	provider *provider.Provider
}

func newEnv(cfg *config.Config, logger *slog.Logger) (*env, error) {
	e := &env{cfg: cfg, logger: logger}
	var search []string
	if cfg.Paths.Bin != "" {
		search = strings.Split(cfg.Paths.Bin, ":")
	}
	e.runner = &runner.Exec{Search: search, Timeout: cfg.Timeouts.Command.D(), Logger: logger.With("component", "exec")}
	e.taskDir = &tasks.Dir{Root: cfg.Paths.Tasks, Proc: cfg.Paths.Proc}
	db, err := store.Open(filepath.Join(cfg.Paths.State, "pvesnap.db"))
	if err != nil {
		return nil, err
	}
	e.db = db
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("locating own binary for task workers: %w", err)
	}
	e.tasks = &tasks.Service{Dir: e.taskDir, DB: db, Node: cfg.Node, StopGrace: 5 * time.Second, Logger: logger.With("component", "tasks"),
		Spawner: &tasks.Spawner{Exe: exe, Args: []string{"--config", cfg.File(), "worker"}, Dir: e.taskDir,
			Env: workerEnv(), Logger: logger.With("component", "worker")}}
	roots := engine.Roots{Sys: cfg.Paths.Sys, Dev: cfg.Paths.Dev}
	e.storage = &storage.Module{Node: cfg.Node, Storage: pve.NewStorageConfig(cfg.Paths.PVE), Run: e.runner, Tasks: e.tasks,
		ZFSDev: filepath.Join(cfg.Paths.Dev, "zfs"), Sys: cfg.Paths.Sys, LockDir: filepath.Join(cfg.Paths.Lock, "pvesnap"), Logger: logger.With("component", "storage"), InstantWait: 10 * time.Second,
		Offloadable: storage.OffloadableVG(e.runner, roots), Engine: engine.Options{Roots: roots, Proc: cfg.Paths.Proc},
		Peers: peers(cfg), RunDir: cfg.Paths.Run}
	e.arrays = &arrays.Module{Config: arraysConfig(cfg), Node: nodePaths(cfg), Logger: logger.With("component", "arrays")}
	e.inv = &inventory.Inventory{Node: cfg.Node, PVE: cfg.Paths.PVE, Storage: e.storage.Storage, Arrays: arraysConfig(cfg),
		LVM: &lvm.LVM{Run: e.runner}, Roots: inventory.Roots{Dev: cfg.Paths.Dev, Sys: cfg.Paths.Sys}, DB: db,
		Tasks: e.taskDir, Logger: logger.With("component", "inventory"), Run: e.runner, NodePaths: nodePaths(cfg),
		ClientOptions: pure.Options{Timeout: cfg.Timeouts.Command.D()}}
	e.invMod = &inventory.Module{Inv: e.inv, Tasks: e.tasks, RefreshInterval: cfg.RefreshInterval.D()}
	e.restore = &restore.Module{Tasks: e.tasks, R: &restore.Restorer{Node: cfg.Node, Inv: e.inv, NodePaths: nodePaths(cfg),
		LVM: e.inv.LVM, Host: restore.Host{Sys: cfg.Paths.Sys, Dev: cfg.Paths.Dev, Run: e.runner, Settle: 10 * time.Second},
		VMs: restore.VMs{PVE: cfg.Paths.PVE, Lock: cfg.Paths.Lock, Node: cfg.Node, Run: e.runner}, DB: db,
		Engine: engine.Options{Roots: roots, Proc: cfg.Paths.Proc}, Logger: logger.With("component", "restore")}}
	e.provider = &provider.Provider{Socket: filepath.Join(cfg.Paths.Run, "provider.sock"), Inv: e.inv, Storage: e.storage.Storage,
		DB: db, Stager: e.restore.R, LVM: e.inv.LVM, Dev: cfg.Paths.Dev, Proc: cfg.Paths.Proc, DaemonVersion: server.Version,
		Logger: logger.With("component", "provider")}
	return e, nil
}

// peers are the other nodes' pvesnap, reached on this node's port; none without TLS (the
// nodes prove who they are with their certificates).
func peers(cfg *config.Config) *peer.Peers {
	_, port, _ := net.SplitHostPort(cfg.Listen)
	if cfg.TLS.Disable || port == "" {
		return nil
	}
	return &peer.Peers{PVE: cfg.Paths.PVE, Node: cfg.Node, Port: port}
}

// commandEnv is the environment of a one-shot command (inventory, restore) run from a shell:
// the configured modules, logging to stderr. The caller closes e.db.
func commandEnv(c *cli.Context) (*env, error) {
	cfg, err := loadConfig(c)
	if err != nil {
		return nil, err
	}
	return newEnv(cfg, logging.New(cfg.SlogLevel(), os.Stderr))
}

// workerEnv is the environment of task workers: a fixed PATH and locale, plus the lab's
// fault-injection hooks (PVESNAP_FAULT_STEP stops a restore worker after that journaled step,
// PVESNAP_FAULT_MARK says how).
func workerEnv() []string {
	env := []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}
	for _, k := range []string{"PVESNAP_FAULT_STEP", "PVESNAP_FAULT_MARK"} {
		if v := os.Getenv(k); v != "" {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// modules are the daemon's route providers and background work.
func (e *env) modules() []server.Module {
	return []server.Module{e.tasks, e.storage, e.arrays, e.invMod, e.restore, e.provider, spareWorker{e.tasks.Spawner}}
}

// spareWorker keeps a task worker started ahead of need while the daemon runs, so a task
// (an instant copy above all) does not wait for a process start.
type spareWorker struct{ s *tasks.Spawner }

func (spareWorker) Routes() []*api.Route { return nil }

func (w spareWorker) Start(ctx context.Context) error { w.s.KeepSpare(ctx); return nil }

// statics serve the panel's assets.
func (e *env) statics() []server.Static { return []server.Static{www.Static{}} }

// injectGUI adds the panel's loader to the GUI page.
func (e *env) injectGUI(page []byte) []byte { return www.Inject(page) }

// handlers are the job kinds a worker can run.
func (e *env) handlers() map[string]tasks.Handler {
	h := map[string]tasks.Handler{}
	for _, m := range []map[string]tasks.Handler{e.storage.Handlers(), e.invMod.Handlers(), e.restore.Handlers()} {
		for k, v := range m {
			h[k] = v
		}
	}
	return h
}
