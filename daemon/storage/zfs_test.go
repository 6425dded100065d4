package storage

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pvesnap/pvesnap/daemon/runner"
	"github.com/pvesnap/pvesnap/daemon/tasks"
	"github.com/pvesnap/pvesnap/sim/fakecli"
	"github.com/pvesnap/pvesnap/sim/volstore"
)

func fakePool(t *testing.T, vols ...string) (*fakecli.ZFS, volstore.Store) {
	t.Helper()
	st := volstore.Store{Dir: t.TempDir()}
	for _, v := range vols {
		if err := st.Create(v, 4<<20, volstore.Meta{}); err != nil {
			t.Fatal(err)
		}
	}
	return &fakecli.ZFS{Pools: map[string]volstore.Store{"rpool/data": st}}, st
}

// failing is a runner whose every command fails with err.
type failing struct{ err error }

func (f failing) Run(context.Context, []string, ...runner.Option) ([]byte, error) { return nil, f.err }

func TestExistingOneCommand(t *testing.T) {
	z, st := fakePool(t, "vm-100-disk-0")
	if err := st.Snapshot("vm-100-disk-0", "pvesnap-a"); err != nil {
		t.Fatal(err)
	}
	got, err := ZFS{Run: runner.Emulator(z.Command)}.Existing(context.Background(), "rpool/data/vm-100-disk-0", "rpool/data/vm-101-disk-0", "rpool/data/vm-100-disk-0@pvesnap-a")
	if err != nil {
		t.Fatal(err)
	}
	if !got["rpool/data/vm-100-disk-0"] || got["rpool/data/vm-101-disk-0"] || !got["rpool/data/vm-100-disk-0@pvesnap-a"] || len(got) != 2 {
		t.Fatalf("existing: %v", got)
	}
	if len(z.Calls) != 1 {
		t.Fatalf("%d zfs commands for one question: %v", len(z.Calls), z.Calls)
	}
	// A failure that is not "does not exist" is an error, not a "no".
	denied := failing{&runner.ExecError{Argv: []string{"zfs"}, ExitCode: 1,
		Stderr: "cannot open 'rpool/data/vm-100-disk-0': dataset does not exist\nPermission denied the ZFS utilities must be run as root.\n"}}
	if _, err := (ZFS{Run: denied}).Existing(context.Background(), "rpool/data/vm-100-disk-0"); err == nil || !strings.Contains(err.Error(), "Permission denied") {
		t.Fatalf("zfs refused: %v", err)
	}
	if _, err := (ZFS{Run: runner.Emulator(z.Command)}).Existing(context.Background(), "rpool/data/../x"); err == nil {
		t.Fatal("an invalid name reached zfs")
	}
}

// A target that appears between the call's check and the worker: the clone fails, the copy
// says so in PVE's words, and the snapshot taken for it is removed again.
func TestCloneOntoTargetMadeMeanwhile(t *testing.T) {
	z, st := fakePool(t, "vm-100-disk-0", "vm-9999-snap")
	m := &Module{Run: runner.Emulator(z.Command), LockDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)}
	spec, _ := json.Marshal(CopySpec{Storage: "local-zfs", Pool: "rpool/data", Source: "vm-100-disk-0", Target: "vm-9999-snap"})
	var log bytes.Buffer
	err := m.zfsClone(context.Background(), tasks.NewTask(tasks.UPID{Node: "pve1"}, tasks.Job{}, &log), spec)
	if err == nil || err.Error() != "volume 'local-zfs:vm-9999-snap' already exists" {
		t.Fatalf("clone onto an existing target: %v", err)
	}
	if snaps, _ := st.Snapshots("vm-100-disk-0"); len(snaps) != 0 {
		t.Fatalf("snapshot left on the source: %+v\n%s", snaps, log.String())
	}
}

// Without a usable /dev/zfs the zfs command does the work: a missing device, and a device
// that answers ENOTTY (here a regular file: no ZFS module behind it) fall back to it; nothing
// is done twice.
func TestKernelFallsBackToCommand(t *testing.T) {
	notZFS := t.TempDir() + "/zfs"
	if err := os.WriteFile(notZFS, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, dev := range []string{t.TempDir() + "/missing", notZFS} {
		z, st := fakePool(t, "vm-100-disk-0")
		zz := ZFS{Run: runner.Emulator(z.Command), Dev: dev}
		got, err := zz.Existing(context.Background(), "rpool/data/vm-100-disk-0", "rpool/data/vm-101-disk-0")
		if err != nil || !got["rpool/data/vm-100-disk-0"] || got["rpool/data/vm-101-disk-0"] {
			t.Fatalf("%s: existing %v %v", dev, got, err)
		}
		if err := zz.TakeSnapshot(context.Background(), "rpool/data/vm-100-disk-0", "pvesnap-a"); err != nil {
			t.Fatal(err)
		}
		if err := zz.Clone(context.Background(), "rpool/data/vm-100-disk-0@pvesnap-a", "rpool/data/vm-101-disk-0"); err != nil {
			t.Fatal(err)
		}
		err = zz.Clone(context.Background(), "rpool/data/vm-100-disk-0@pvesnap-a", "rpool/data/vm-101-disk-0")
		if !errors.Is(err, ErrDatasetExists) {
			t.Fatalf("%s: clone onto an existing dataset: %v", dev, err)
		}
		if snaps, _ := st.Snapshots("vm-100-disk-0"); len(snaps) != 1 {
			t.Fatalf("%s: snapshots %+v", dev, snaps)
		}
		if len(z.Calls) != 4 {
			t.Fatalf("%s: %d zfs commands, want 4 (list, snapshot, clone, clone): %v", dev, len(z.Calls), z.Calls)
		}
	}
	// A device that cannot be opened for another reason is an error, not a silent fallback.
	if _, err := (ZFS{Run: failing{errors.New("must not run")}, Dev: t.TempDir()}).Existing(context.Background(), "rpool/data/x"); err == nil {
		t.Fatal("a directory opened as /dev/zfs")
	}
}

// A loaded ZFS module of a series whose ioctl layouts were not checked is driven by the zfs
// command, its /dev/zfs never opened (here a directory, which would fail the copy if opened);
// a checked one is opened.
func TestUncheckedModuleVersionUsesCommand(t *testing.T) {
	sys := t.TempDir()
	if err := os.MkdirAll(sys+"/module/zfs", 0o755); err != nil {
		t.Fatal(err)
	}
	dev := t.TempDir() // not a device: opening it fails
	for _, c := range []struct {
		version string
		kernel  bool
	}{{"2.4.0-1~bpo13+1", false}, {"2.2.7-pve1", false}, {"2.3.9-1", true}} {
		if err := os.WriteFile(sys+"/module/zfs/version", []byte(c.version+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		z, _ := fakePool(t, "vm-100-disk-0")
		got, err := ZFS{Run: runner.Emulator(z.Command), Dev: dev, Sys: sys}.Existing(context.Background(), "rpool/data/vm-100-disk-0")
		switch {
		case !c.kernel && (err != nil || !got["rpool/data/vm-100-disk-0"] || len(z.Calls) != 1):
			t.Errorf("module %s: %v %v, %d zfs commands: want the zfs command", c.version, got, err, len(z.Calls))
		case c.kernel && (err == nil || len(z.Calls) != 0):
			t.Errorf("module %s: %v, %d zfs commands: want /dev/zfs opened", c.version, err, len(z.Calls))
		}
	}
}

// Moves send and receive through /dev/zfs alone, so on a module of a series whose ioctl
// layouts were not checked a node does not take part in them (the call goes to PVE), and a
// move's worker never opens the device there.
func TestMovesNeedACheckedModule(t *testing.T) {
	sys := t.TempDir()
	if err := os.MkdirAll(sys+"/module/zfs", 0o755); err != nil {
		t.Fatal(err)
	}
	dev := filepath.Join(t.TempDir(), "zfs")
	if err := os.WriteFile(dev, nil, 0o600); err != nil { // opens like the device would
		t.Fatal(err)
	}
	m := &Module{ZFSDev: dev, Sys: sys, LockDir: t.TempDir()}
	for _, c := range []struct {
		version string
		checked bool
	}{{"2.2.7-pve1", false}, {"2.4.0-1~bpo13+1", false}, {"2.3.9-1", true}} {
		if err := os.WriteFile(sys+"/module/zfs/version", []byte(c.version+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if got := m.hasZFSDevice(); got != c.checked {
			t.Errorf("module %s: moves through /dev/zfs %v, want %v", c.version, got, c.checked)
		}
		d, release, err := m.lockedDevice(context.Background(), "rpool", "rpool/data/vm-100-disk-0")
		if (err == nil) != c.checked {
			t.Errorf("module %s: the worker's device %v, %v", c.version, d, err)
		}
		if err == nil {
			release()
		}
	}
}
