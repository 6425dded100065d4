//go:build lab

package restore_test

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pvesnap/pvesnap/daemon/restore"
	"github.com/pvesnap/pvesnap/daemon/store"
	"github.com/pvesnap/pvesnap/lab/cluster"
	"github.com/pvesnap/pvesnap/lab/guest"
)

// A power cut on the node, emulated at the block layer. pvesnap's state directory is an ext4
// file system on a device-mapper device; cutting the power switches that device to the error
// target (no write reaches it any more, in-flight ones complete), kills every pvesnap process
// (daemon, workers, the frozen worker) with SIGKILL, deactivates every LV and unmounts the
// file system, which throws its page cache away: what was not on the device is lost, exactly
// what a power cut loses on the node. "Booting" maps the device back, mounts it (ext4 replays
// its journal) and starts the daemon, whose recovery runs at start. The array keeps what it
// acknowledged, as a real one does (its simulator runs on, its LUNs on their own disk), and so
// does the cluster file system (pmxcfs commits each write).
//
// Why not a QEMU kill: the array simulator, the simulated cluster and LIO live in this guest
// and would have to be rebuilt from disk on every boot, and a boot per step of both modes
// costs minutes under TCG; the device-mapper cut loses the same things on the node's side.
type stateDisk struct {
	t       *testing.T
	dir     string // mount point
	img     string
	loop    string
	name    string // device-mapper name
	sectors int64
}

func newStateDisk(t *testing.T) *stateDisk {
	const size = 256 << 20
	d := &stateDisk{t: t, dir: "/tmp/lab-state", img: "/tmp/lab-state.img", name: "pvesnap-lab-state", sectors: size / 512}
	guest.Run("umount", d.dir)
	guest.Run("dmsetup", "remove", d.name)
	guest.Run("modprobe", "loop") // no udev in the guest: /dev/loop-control comes with the module
	f, err := os.Create(d.img)
	must(t, err)
	must(t, f.Truncate(size))
	f.Close()
	out, err := guest.Output("losetup", "-f", "--show", d.img)
	must(t, err)
	d.loop = strings.TrimSpace(out)
	d.table("linear " + d.loop + " 0")
	if out, err := guest.Run("mkfs.ext4", "-F", "-q", "/dev/mapper/"+d.name); err != nil {
		t.Fatalf("mkfs.ext4: %v %s", err, out)
	}
	must(t, os.MkdirAll(d.dir, 0o755))
	d.mount()
	t.Cleanup(func() {
		guest.Run("umount", d.dir)
		guest.Run("dmsetup", "remove", d.name)
		guest.Run("losetup", "-d", d.loop)
		os.Remove(d.img)
	})
	return d
}

// table creates the device with target, or switches it to target: suspended without
// flushing the file system (a cut must not sync), loaded, resumed.
func (d *stateDisk) table(target string) {
	tbl := fmt.Sprintf("0 %d %s", d.sectors, target)
	if _, err := os.Stat("/dev/mapper/" + d.name); errors.Is(err, os.ErrNotExist) {
		if out, err := guest.Run("dmsetup", "create", "--noudevsync", d.name, "--table", tbl); err != nil {
			d.t.Fatalf("dmsetup create: %v %s", err, out)
		}
		guest.Run("dmsetup", "mknodes", d.name) // no udev in the guest
		return
	}
	for _, argv := range [][]string{{"suspend", "--nolockfs", "--noflush", d.name}, {"load", d.name, "--table", tbl}, {"resume", d.name}} {
		if out, err := guest.Run("dmsetup", argv...); err != nil {
			d.t.Fatalf("dmsetup %v: %v %s", argv, err, out)
		}
	}
}

func (d *stateDisk) mount() {
	if out, err := guest.Run("mount", "-t", "ext4", "/dev/mapper/"+d.name, d.dir); err != nil {
		d.t.Fatalf("mount state: %v %s", err, out)
	}
}

// killPvesnap kills every process running the pvesnap binary (the daemon, task workers, the
// spare worker, qm stand-ins), as a power cut does.
func killPvesnap(bin string) {
	ps, _ := filepath.Glob("/proc/[0-9]*/exe")
	for _, p := range ps {
		if exe, err := os.Readlink(p); err == nil && exe == bin {
			if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p))); err == nil && pid != os.Getpid() {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
}

// holders lists processes with a file, a mapping or their working directory under dir.
func holders(dir string) map[int]string {
	out := map[int]string{}
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		pid, err := strconv.Atoi(filepath.Base(p))
		if err != nil {
			continue
		}
		var uses []string
		if cwd, err := os.Readlink(p + "/cwd"); err == nil && strings.HasPrefix(cwd, dir) {
			uses = append(uses, "cwd "+cwd)
		}
		fds, _ := filepath.Glob(p + "/fd/*")
		for _, fd := range fds {
			if t, err := os.Readlink(fd); err == nil && strings.HasPrefix(t, dir) {
				uses = append(uses, t)
			}
		}
		if m, err := os.ReadFile(p + "/maps"); err == nil && strings.Contains(string(m), dir+"/") {
			uses = append(uses, "mapped")
		}
		if len(uses) > 0 {
			exe, _ := os.Readlink(p + "/exe")
			out[pid] = exe + ": " + strings.Join(uses, ", ")
		}
	}
	return out
}

// powerLoss cuts the node's power at the worker's fault step and boots it again.
// The daemon that boots is set up for the next round's fault step (its recovery at start does
// not use it), which spares a restart per round.
func (l *lab) powerLoss(d *stateDisk, nextFault string) {
	d.table("error")
	killPvesnap(l.O.Binary)
	l.KillDaemon()
	guest.Run("vgchange", "-an") // a reboot leaves no LV active
	// Every process with a file there is gone before the unmount: a lazy unmount would keep
	// the page cache alive for the next mount, which is no power cut at all.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		hs := holders(d.dir)
		if len(hs) == 0 {
			break
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("processes still hold the state file system: %v", hs)
		}
		for pid := range hs {
			if pid == os.Getpid() {
				l.t.Fatalf("the test itself holds the state file system: %v", hs)
			}
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if out, err := guest.Run("umount", d.dir); err != nil {
		l.t.Fatalf("umount of the cut state file system: %v %s", err, out)
	}
	// Boot: the device is back, with what reached it before the cut.
	d.table("linear " + d.loop + " 0")
	d.mount()
	// LVM's activation at boot. Cut between connecting a temporary volume and importing its
	// VG, the clone of vgsan1's PV is still there: LVM sees duplicate PVs and refuses to
	// activate vgsan1 (it never picks one) until the daemon's recovery removed the clone.
	guest.Run("vgchange", "-aay")
	must(l.t, l.StartDaemon(nextFault))
}

// recovered waits for the daemon's recovery to finish every job.
func (l *lab) recovered() error {
	deadline := time.Now().Add(3 * time.Minute)
	for {
		db, err := store.Open(filepath.Join(l.StateDir(), "pvesnap.db"))
		if err != nil {
			return err
		}
		jobs, _ := restore.Unfinished(ctx, db)
		db.Close()
		if len(jobs) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("recovery did not finish: %+v", jobs)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestRestorePowerLoss cuts the node's power right after each journaled step of an in-place
// and of a new-VM restore in turn (after the step's effect on the array, LVM or the VM's
// config, before the step is marked done). After the next boot and daemon start, the array,
// LVM, the VM configs and locks hold no leftover, and each VM holds either its old or its
// restored data, by hash.
func TestRestorePowerLoss(t *testing.T) {
	d := newStateDisk(t)
	mark := "/tmp/lab-fault-mark"
	l := newLabWith(t, 32*mib, cluster.Options{State: d.dir, FaultMark: mark})
	covered, leaks, wrong := 0, 0, 0
	for _, mode := range []string{restore.Overwrite, restore.NewVM} {
		for step := 1; step < 60; step++ {
			pre := l.hashes(100)
			if pre == l.hashA {
				l.fill(2)
				pre = l.hashes(100)
			}
			os.Remove(mark)
			if step == 1 { // later rounds: the boot after the previous cut started it so
				l.StopDaemon()
				must(t, l.StartDaemon(strconv.Itoa(step)))
			}
			params := url.Values{"vmid": {"100"}, "point": {"fa1:before"}, "mode": {mode}, "safety-snapshot": {"0"}}
			if mode == restore.NewVM {
				params.Set("newid", "200")
			}
			upid, r := l.restore(params)
			if r.Code != 200 {
				t.Fatalf("%s step %d: restore: %d %s", mode, step, r.Code, r.Status)
			}
			if !l.waitMark(mark, upid) {
				t.Logf("%s: the restore ran to the end: each of its %d steps had its power cut once", mode, step-1)
				if mode == restore.NewVM {
					l.dropVM200()
				}
				break
			}
			l.powerLoss(d, strconv.Itoa(step+1))
			if err := l.recovered(); err != nil {
				t.Errorf("%s step %d: %v", mode, step, err)
				leaks++
			}
			// The VMs' disks, for the hashes (PVE activates them when a VM starts).
			if out, err := guest.Run("vgchange", "-ay", "vgsan1"); err != nil {
				t.Fatalf("%s step %d: vgsan1 does not activate after recovery: %v %s", mode, step, err, out)
			}
			for _, lo := range l.leftovers(false) {
				t.Errorf("%s step %d: %s", mode, step, lo)
				leaks++
			}
			switch mode {
			case restore.Overwrite:
				switch got := l.hashes(100); got {
				case pre:
					t.Logf("%s step %d: power cut; rolled back, VM unchanged", mode, step)
				case l.hashA:
					t.Logf("%s step %d: power cut; the committed restore was completed", mode, step)
				default:
					t.Errorf("%s step %d: VM 100's disks are neither its old data nor the restored data", mode, step)
					wrong++
				}
			case restore.NewVM:
				if got := l.hashes(100); got != pre {
					t.Errorf("%s step %d: the source VM 100 changed", mode, step)
					wrong++
				}
				switch state, err := l.vm200(); {
				case err != nil:
					t.Errorf("%s step %d: %v", mode, step, err)
					wrong++
				default:
					t.Logf("%s step %d: power cut; VM 200 %s", mode, step, state)
				}
				l.dropVM200()
			}
			covered++
		}
	}
	fmt.Printf("RESULT restore_power_loss steps_covered=%d leaks=%d wrong_data=%d\n", covered, leaks, wrong)
	if covered < 20 {
		t.Errorf("only %d steps covered", covered)
	}
}

// waitMark waits until the worker froze at its fault step (true) or the task ended (false).
func (l *lab) waitMark(mark, upid string) bool {
	deadline := time.Now().Add(5 * time.Minute)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(mark); err == nil {
			return true
		}
		d, err := l.API.Must("GET", "/nodes/pve1/tasks/"+url.PathEscape(upid)+"/status", nil)
		if err == nil && strings.Contains(string(d), `"status":"stopped"`) {
			if _, err := os.Stat(mark); err == nil {
				return true
			}
			if !strings.Contains(string(d), `"exitstatus":"OK"`) {
				l.t.Fatalf("the restore failed before its fault step: %s\n%s", d, l.taskLog(upid))
			}
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
	l.t.Fatalf("the restore neither reached its fault step nor ended")
	return false
}

// vm200 says what a new-VM restore cut by a power loss left: nothing, or the whole VM (its
// config unlocked, its disks with the snapshot's data).
func (l *lab) vm200() (string, error) {
	conf := filepath.Join(l.Sim.NodePaths("pve1").PVE, "nodes", "pve1", "qemu-server", "200.conf")
	cfg, err := os.ReadFile(conf)
	lvs, _ := guest.Output("lvs", "--noheadings", "-o", "lv_name", "vgsan1")
	if errors.Is(err, os.ErrNotExist) {
		if strings.Contains(lvs, "vm-200-") {
			return "", fmt.Errorf("VM 200 has no config but disks: %s", lvs)
		}
		return "rolled back: no config, no disk", nil
	}
	if strings.Contains(string(cfg), "lock:") || strings.Contains(string(cfg), "pvesnap restore job") {
		return "", fmt.Errorf("VM 200's config is still locked or marked:\n%s", cfg)
	}
	if got := l.hashes(200); got != l.hashA {
		return "", fmt.Errorf("VM 200 exists but its disks do not hold the snapshot's data:\n%s", cfg)
	}
	return "complete: config and the snapshot's data", nil
}

// dropVM200 removes what a new-VM restore made, for the next round.
func (l *lab) dropVM200() {
	os.Remove(filepath.Join(l.Sim.NodePaths("pve1").PVE, "nodes", "pve1", "qemu-server", "200.conf"))
	for i := 0; i < 2; i++ {
		guest.Run("lvremove", "-f", fmt.Sprintf("vgsan1/vm-200-disk-%d", i))
	}
}
