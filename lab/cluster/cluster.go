// Package cluster builds, inside the lab guest, one Proxmox VE node as pvesnap meets it: a
// simulated PVE node (sim/pve), a simulated FlashArray whose volumes are LIO LUNs on this
// guest's SCSI bus, a shared LVM storage (san1, VG vgsan1) on one of its volumes, VMs with
// disks on it, and the real pvesnap daemon in front. The restore tests and `make demo` use it.
package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/pvesnap/pvesnap/daemon/arrays"
	"github.com/pvesnap/pvesnap/daemon/pure"
	"github.com/pvesnap/pvesnap/daemon/runner"
	"github.com/pvesnap/pvesnap/lab/guest"
	"github.com/pvesnap/pvesnap/lvm"
	"github.com/pvesnap/pvesnap/sim/flasharray"
	"github.com/pvesnap/pvesnap/sim/lio"
	simpve "github.com/pvesnap/pvesnap/sim/pve"
)

var ctx = context.Background()

// MiB is a mebibyte.
const MiB = int64(1) << 20

// Options shape the node.
type Options struct {
	Work     string // working directory (emptied)
	DataDisk string // block device for the array's volume files ("": the working directory)
	// Listen is pvesnap's address ("": 127.0.0.1 on a free port).
	Listen string
	// Binary is the pvesnap executable (default /mnt/host/bin/pvesnap).
	Binary string
	// Sim are simulator options (the demo's GUI page and static files); Dir is set here.
	Sim     simpve.Options
	LogPath string // the daemon's log ("": Work/daemon.log)
	// State is pvesnap's state directory ("": the simulator's node state directory); the
	// power-loss test gives it a file system of its own, on a device it can cut.
	State string
	// FaultMark is passed as PVESNAP_FAULT_MARK with a fault step: the worker then freezes
	// at that step after creating this file, instead of killing itself.
	FaultMark string
	// Fabric is how the node reaches the array: FabricLoop or FabricISCSI (san.go).
	Fabric string
}

// Node is the running node.
type Node struct {
	O      Options
	Sim    *simpve.Cluster
	FA     *flasharray.Array
	FASrv  *flasharray.Server
	FACli  *pure.Client
	Serial string // of pve-san1
	Dev    string // its device
	Config string // pvesnap.yaml
	URL    string // pvesnap
	API    *simpve.Client
	daemon *exec.Cmd
	exited chan error // the daemon's exit status, once
	lv     *lvm.LVM
	mounts []string
	target *lio.Target
	iscsi  *iscsiFabric
	plane  *flasharray.LIO
}

// Start builds the node (without VMs) and starts pvesnap.
func Start(o Options) (*Node, error) {
	if o.Binary == "" {
		o.Binary = "/mnt/host/bin/pvesnap"
	}
	n := &Node{O: o, lv: &lvm.LVM{Run: &runner.Exec{Timeout: 2 * time.Minute}}}
	guest.Run("umount", filepath.Join(o.Work, "fa-data"))
	os.RemoveAll(o.Work)
	if err := os.MkdirAll(filepath.Join(o.Work, "bin"), 0o755); err != nil {
		return nil, err
	}
	data := filepath.Join(o.Work, "fa-data")
	os.MkdirAll(data, 0o755)
	if o.DataDisk != "" {
		// The array's copies are full-size files once XCOPY has written them: they get a
		// disk of their own, not the guest's tmpfs.
		if out, err := guest.Run("mkfs.ext4", "-F", "-q", o.DataDisk); err != nil {
			return nil, fmt.Errorf("mkfs.ext4 %s: %v %s", o.DataDisk, err, out)
		}
		if out, err := guest.Run("mount", o.DataDisk, data); err != nil {
			return nil, fmt.Errorf("mount %s: %v %s", o.DataDisk, err, out)
		}
		n.mounts = append(n.mounts, data)
	}
	li, err := guest.SetupLIO()
	if err != nil {
		return nil, err
	}
	const iqn = "iqn.2026-11.org.pvesnap:lab"
	plane := &flasharray.LIO{Files: &flasharray.Files{Dir: data}, L: li}
	n.plane = plane
	if o.Fabric == FabricISCSI {
		if n.iscsi, err = startISCSI(li, iqn, o.Work); err != nil {
			return nil, err
		}
		plane.ISCSI = map[string]*lio.ACL{"lab": n.iscsi.acl}
	} else {
		if n.target, err = li.CreateTarget(51); err != nil {
			return nil, err
		}
		plane.Targets = map[string]*lio.Target{"lab": n.target}
	}
	n.FA = flasharray.New("fa-lab", plane)
	if err := n.FA.CreateHost("lab", []string{iqn}, nil, nil); err != nil {
		return nil, err
	}
	os.MkdirAll(filepath.Join(o.Work, "iscsi"), 0o755)
	os.WriteFile(filepath.Join(o.Work, "iscsi", "initiatorname.iscsi"), []byte("InitiatorName="+iqn+"\n"), 0o644)
	if n.FASrv, err = flasharray.Listen(n.FA, "127.0.0.1:0", filepath.Join(o.Work, "fa")); err != nil {
		return nil, err
	}
	tok, _ := os.ReadFile(n.FASrv.TokenFile)
	if n.FACli, err = pure.New(n.FASrv.URL, strings.TrimSpace(string(tok)), pure.Options{CAFile: n.FASrv.CAFile}); err != nil {
		return nil, err
	}

	// The shared LVM storage: VG vgsan1 on array volume pve-san1, connected to this node.
	vol, err := n.FACli.CreateVolume(ctx, "pve-san1", 1<<30)
	if err != nil {
		return nil, err
	}
	n.Serial = vol.Serial
	if _, err := n.FACli.Connect(ctx, vol.Name, pure.Target{Host: "lab"}); err != nil {
		return nil, err
	}
	if n.Dev, err = n.Attach(vol.Serial); err != nil {
		return nil, err
	}
	for _, argv := range [][]string{{"pvcreate", "-ff", "-y", n.Dev}, {"vgcreate", "vgsan1", n.Dev}} {
		if out, err := guest.Run(argv[0], argv[1:]...); err != nil {
			return nil, fmt.Errorf("%s: %v %s", argv[0], err, out)
		}
	}

	so := o.Sim
	so.Dir, so.AuthFailDelay, so.PvestatdInterval = filepath.Join(o.Work, "sim"), time.Millisecond, time.Second
	if n.Sim, err = simpve.Start(so); err != nil {
		return nil, err
	}
	if err := n.Sim.SetStorageConfig(simpve.DefaultStorageConfig + "\nlvm: san1\n\tvgname vgsan1\n\tcontent images\n\tshared 1\n"); err != nil {
		return nil, err
	}
	p := n.Sim.NodePaths("pve1")
	if err := (&arrays.Config{PVE: p.PVE}).Add(arrays.Array{ID: "fa1", Type: arrays.TypeFlashArray, Endpoint: n.FASrv.URL, CA: n.FASrv.CAFile},
		strings.TrimSpace(string(tok))); err != nil {
		return nil, err
	}
	// qm for the workers: the simulator's stand-in.
	conn, _ := json.Marshal(map[string]string{"url": n.Sim.URL("pve1"), "ca": n.Sim.CAFile(), "node": "pve1", "root_password": "pvesnap"})
	os.WriteFile(filepath.Join(o.Work, "sim.json"), conn, 0o600)
	os.WriteFile(filepath.Join(o.Work, "bin", "qm"), []byte("#!/bin/sh\nexec "+o.Binary+" sim qm --conn "+o.Work+"/sim.json -- \"$@\"\n"), 0o755)
	listen := o.Listen
	if listen == "" {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		listen = ln.Addr().String()
		ln.Close()
	}
	_, port, _ := net.SplitHostPort(listen)
	n.URL = "https://127.0.0.1:" + port
	n.Config = filepath.Join(o.Work, "pvesnap.yaml")
	p.State = n.StateDir() // the power-loss test keeps it on a file system of its own
	if err := writeConfig(n.Config, "pve1", listen, n.Sim.URL("pve1"), p, fmt.Sprintf("  iscsi: %s\n  bin: %s/bin:/usr/sbin:/usr/bin:/sbin:/bin\n",
		filepath.Join(o.Work, "iscsi"), o.Work)); err != nil {
		return nil, err
	}
	if err := n.StartDaemon(""); err != nil {
		return nil, err
	}
	return n, nil
}

// StateDir is where pvesnap keeps its state database.
func (n *Node) StateDir() string {
	if n.O.State != "" {
		return n.O.State
	}
	return n.Sim.NodePaths("pve1").State
}

// AddVM creates VM vmid's LVs (size each) on san1 and its config; it returns the disk paths.
func (n *Node) AddVM(vmid int, name string, disks int, size int64, ctime time.Time) ([]string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "name: %s\nmemory: 1024\nmeta: creation-qemu=9.2.0,ctime=%d\nnet0: virtio=BC:24:11:12:%02X:%02X,bridge=vmbr0\n",
		name, ctime.Unix(), vmid/256%256, vmid%256)
	var paths []string
	for i := 0; i < disks; i++ {
		lvName := fmt.Sprintf("vm-%d-disk-%d", vmid, i)
		if err := n.lv.Create(ctx, "vgsan1", lvName, size, lvm.CreateOptions{Tags: []string{fmt.Sprintf("pve-vm-%d", vmid)}}); err != nil {
			return nil, err
		}
		fmt.Fprintf(&b, "scsi%d: san1:%s,size=%dM\n", i, lvName, size/MiB)
		paths = append(paths, "/dev/vgsan1/"+lvName)
	}
	return paths, n.Sim.WriteVMConfig("pve1", int64(vmid), b.String())
}

// StartDaemon runs pvesnap (with the fault hook when fault is set) and logs in through it.
func (n *Node) StartDaemon(fault string) error {
	env := []string{"PVESNAP_FAULT_STEP=" + fault}
	if fault != "" && n.O.FaultMark != "" {
		env = append(env, "PVESNAP_FAULT_MARK="+n.O.FaultMark)
	}
	logPath := n.O.LogPath
	if logPath == "" {
		logPath = filepath.Join(n.O.Work, "daemon.log")
	}
	d, err := startDaemon(n.O.Binary, n.Config, logPath, n.URL, n.Sim.CAFile(), env)
	if err != nil {
		return err
	}
	n.daemon, n.exited, n.API = d.cmd, d.exited, d.api
	return nil
}

// daemon is a running pvesnap and a client logged in through it as root@pam.
type daemon struct {
	cmd    *exec.Cmd
	exited chan error // its exit status, once
	api    *simpve.Client
}

// startDaemon runs pvesnap with config, its output in logPath, and waits until a root@pam
// login through url works.
func startDaemon(binary, config, logPath, url, caFile string, env []string) (*daemon, error) {
	cmd := exec.Command(binary, "--config", config, "serve")
	cmd.Env = append(os.Environ(), env...)
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); logf.Close(); close(exited) }()
	c, err := simpve.NewClient(url, caFile)
	if err != nil {
		return nil, err
	}
	// Generous: under TCG, with the host busy, reading the binary over 9p and starting can
	// take many seconds. A daemon that exits is reported at once, with its log.
	deadline := time.Now().Add(90 * time.Second)
	for {
		if err = c.Login("root@pam", "pvesnap"); err == nil {
			return &daemon{cmd: cmd, exited: exited, api: c}, nil
		}
		select {
		case werr := <-exited:
			return nil, fmt.Errorf("pvesnap exited at start (%v); its log %s ends:\n%s", werr, logPath, tail(logPath, 2000))
		default:
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			return nil, fmt.Errorf("pvesnap did not come up in 90 s: %v; its log %s ends:\n%s", err, logPath, tail(logPath, 2000))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// writeConfig writes a node's pvesnap.yaml: its node name, address, pveproxy and the
// simulator's directories for it, plus extra lines.
func writeConfig(path, node, listen, upstream string, p simpve.Paths, extra string) error {
	return os.WriteFile(path, []byte(fmt.Sprintf(`node: %s
listen: %s
upstream: %s
refresh_interval: 0s
timeouts:
  auth_fail_delay: 0s
paths:
  pve: %s
  tasks: %s
  state: %s
  run: %s
  lock: %s
%s`, node, listen, upstream, p.PVE, p.Tasks, p.State, p.Run, p.Lock, extra)), 0o644)
}

// StopDaemon stops pvesnap (SIGTERM, as systemd does).
func (n *Node) StopDaemon() {
	if n.daemon != nil {
		n.daemon.Process.Signal(syscall.SIGTERM)
		<-n.exited
		n.daemon = nil
	}
}

// KillDaemon kills pvesnap with SIGKILL, as the OOM killer or a crash would: no draining,
// nothing written on the way out. Task workers run on (they are their own sessions).
func (n *Node) KillDaemon() {
	if n.daemon != nil {
		n.daemon.Process.Signal(syscall.SIGKILL)
		<-n.exited
		n.daemon = nil
	}
}

// Wait waits for the daemon to exit (the demo runs until it is stopped).
func (n *Node) Wait() error {
	if n.daemon == nil {
		return errors.New("pvesnap is not running")
	}
	return <-n.exited
}

// tail is the last n bytes of a file, for error messages.
func tail(path string, n int64) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if int64(len(b)) > n {
		b = b[int64(len(b))-n:]
	}
	return string(b)
}

// Close takes everything down: daemon, simulators, the VG's activation, the array's LUN.
func (n *Node) Close() {
	n.StopDaemon()
	if n.Sim != nil {
		n.Sim.Close()
	}
	guest.Run("vgchange", "-an", "vgsan1")
	if n.Serial != "" {
		n.Detach(n.Serial)
	}
	if n.FACli != nil {
		n.FACli.Disconnect(ctx, "pve-san1", pure.Target{Host: "lab"})
	}
	if n.iscsi != nil {
		n.iscsi.close()
	}
	if n.FASrv != nil {
		n.FASrv.Close()
	}
	if n.target != nil {
		n.target.Delete() // the next node in this guest makes the same target again
	}
	if n.plane != nil {
		n.plane.Close() // what a failed test left connected holds files on the data disk
	}
	for _, m := range n.mounts {
		guest.Run("umount", m)
	}
}
