package main

import (
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/pvesnap/pvesnap/lab/cluster"
	"github.com/pvesnap/pvesnap/lab/guest"
	simpve "github.com/pvesnap/pvesnap/sim/pve"
)

// moveRounds is how often each move case runs, interleaved (the median is reported).
const moveRounds = 3

// Names of the move cases.
const (
	moveOwn   = "1 GiB zvol moved to another node: pvesnap (copy with target_node), call to task OK"
	moveTCP   = "1 GiB zvol moved to another node: pvesnap over plain TCP (migration type=insecure), call to task OK"
	moveFloor = "1 GiB zvol: zfs send | zfs recv, piped locally between the two pools"
	moveSSH   = "1 GiB zvol: zfs send | ssh root@127.0.0.1 zfs recv"
)

// moveCases moves a 1 GiB zvol full of data from node pve1 (pool poola) to node pve2 (pool
// poolb) through the two daemons, as proxmox-csi-plugin's copy with target_node does, against
// zfs send | zfs recv through a kernel pipe (the floor: no network, no encryption, no copy
// through user space) and zfs send | ssh … zfs recv over loopback (what PVE's own copy does).
// Every round sends the whole volume: what a round leaves is removed before the next.
func moveCases() ([]Case, error) {
	if err := run("modprobe", "zfs"); err != nil {
		return nil, err
	}
	parts, err := guest.Partition("/dev/vdb", 2)
	if err != nil {
		return nil, err
	}
	for i, p := range []string{"poola", "poolb"} {
		if err := run("zpool", "create", "-f", "-O", "compression=off", p, parts[i]); err != nil {
			return nil, err
		}
		defer run("zpool", "destroy", "-f", p)
		if err := run("zfs", "create", p+"/data"); err != nil {
			return nil, err
		}
	}
	ns, err := cluster.StartNodes("/tmp/bench-move", "", []string{"pve1", "pve2"}, cluster.TwoNodeStorage)
	if ns != nil {
		defer ns.Close()
	}
	if err != nil {
		return nil, err
	}
	api := ns.API["pve1"]
	const vol = "vm-100-disk-0"
	src := "poola/data/" + vol
	if _, err := api.Must("POST", "/nodes/pve1/storage/zfs-a/content", url.Values{"filename": {vol}, "size": {"1G"}, "vmid": {"100"}}); err != nil {
		return nil, err
	}
	dev, err := cluster.ZvolDevice(src, 20*time.Second)
	if err != nil {
		return nil, err
	}
	if err := guest.WritePattern(dev, 41, 0, size); err != nil {
		return nil, err
	}
	run("sync")
	if err := run("zfs", "snapshot", src+"@bench"); err != nil {
		return nil, err
	}
	ssh, sshErr := startSSH("/tmp/bench-ssh")
	if ssh != nil {
		defer ssh.stop()
	}
	times := map[string][]float64{}
	dc := filepath.Join(ns.Sim.Shared(), "datacenter.cfg")
	// pvesnapMove times the call, then the sending task's status until it stops; it checks
	// the moved zvol once, and removes it and the move's snapshots (every move is a full one).
	pvesnapMove := func(name string, insecure bool, check bool) error {
		cfg := "keyboard: en-us\n"
		if insecure {
			cfg += "migration: type=insecure\n"
		}
		if err := os.WriteFile(dc, []byte(cfg), 0o640); err != nil {
			return err
		}
		t := time.Now()
		d, err := api.Must("POST", "/nodes/pve1/storage/zfs-a/content/"+vol, url.Values{"target": {"zfs-b:" + vol}, "target_node": {"pve2"}})
		if err != nil {
			return err
		}
		if st, err := cluster.WaitTask(api, simpve.UPIDOf(d), 200*time.Millisecond, 30*time.Minute); err != nil || st != "OK" {
			return fmt.Errorf("%s: %q %v", name, st, err)
		}
		times[name] = append(times[name], time.Since(t).Seconds())
		if check { // once: reading both takes a while under TCG
			tdev, err := cluster.ZvolDevice("poolb/data/"+vol, 20*time.Second)
			if err == nil {
				err = guest.SameContent(dev, tdev, 0, 0, size)
			}
			if err != nil {
				return fmt.Errorf("%s: the moved zvol: %w", name, err)
			}
		}
		run("zfs", "destroy", "-r", "poolb/data/"+vol)
		if out, err := guest.Output("zfs", "list", "-H", "-t", "snapshot", "-o", "name", src); err == nil {
			for _, sn := range strings.Fields(out) {
				if strings.Contains(sn, "@pvesnap-move-") {
					run("zfs", "destroy", sn)
				}
			}
		}
		return nil
	}
	// settle waits until both pools have freed what the last case destroyed and written it
	// out: ZFS frees a destroyed zvol in the background, and the case after it would pay.
	settle := func() error {
		for _, p := range []string{"poola", "poolb"} {
			if err := run("zpool", "wait", "-t", "free", p); err != nil {
				return err
			}
		}
		return nil
	}
	send := func(name string, through []string, dst string) error {
		secs, err := pipeSendRecv(src+"@bench", through, dst)
		if err != nil {
			return err
		}
		times[name] = append(times[name], secs)
		return run("zfs", "destroy", "-r", dst)
	}
	cases := []func(r int) error{
		func(r int) error { return pvesnapMove(moveOwn, false, r == 0) },
		func(r int) error { return pvesnapMove(moveTCP, true, r == 0) },
		func(int) error { return send(moveFloor, nil, "poolb/data/floor") },
	}
	if ssh != nil {
		cases = append(cases, func(int) error { return send(moveSSH, ssh.command(), "poolb/data/ssh") })
	}
	for r := 0; r < moveRounds; r++ {
		// Each round starts with another case: none always runs first, or after the same one.
		for i := range cases {
			if err := settle(); err != nil {
				return nil, err
			}
			if err := cases[(r+i)%len(cases)](r); err != nil {
				return nil, err
			}
		}
		fmt.Fprintf(os.Stderr, "move round %d: %v\n", r+1, times)
	}
	median := func(name string) (float64, string) {
		l := append([]float64(nil), times[name]...)
		sort.Float64s(l)
		return l[len(l)/2], fmt.Sprintf("median of %d interleaved runs, %.1f-%.1f s", len(l), l[0], l[len(l)-1])
	}
	own, ownNote := median(moveOwn)
	tcp, tcpNote := median(moveTCP)
	floor, floorNote := median(moveFloor)
	out := []Case{{Name: moveOwn, Seconds: own, Table: tableMove, Peers: []string{moveFloor},
		Note: "default: TLS between the daemons with the nodes' certificates, ZFS send and receive through /dev/zfs; " + ownNote},
		{Name: moveTCP, Seconds: tcp, Table: tableMove, Peers: []string{moveFloor},
			Note: "datacenter.cfg migration: type=insecure, PVE's switch for a private migration network: plain TCP, the kernel sending into and receiving from the sockets; " + tcpNote},
		{Name: moveFloor, Seconds: floor, Table: tableMove, Note: "floor: a kernel pipe, no network, no encryption; " + floorNote}}
	if ssh != nil {
		s, note := median(moveSSH)
		out[0].Peers = append(out[0].Peers, moveSSH)
		out = append(out, Case{Name: moveSSH, Seconds: s, Table: tableMove, Note: "peer: PVE's copy (ssh with its default cipher, over loopback); " + note})
	} else {
		out = append(out, Case{Name: moveSSH, Table: tableMove, Note: "SKIP " + moveSSH + ": " + sshErr.Error()})
	}
	return out, nil
}

// pipeSendRecv times zfs send snap | [through...] zfs recv dst, connected by kernel pipes
// (a shell's pipeline): through is the command the stream passes (ssh), nil for none.
func pipeSendRecv(snap string, through []string, dst string) (float64, error) {
	recvArgv := []string{"zfs", "recv", dst}
	if through != nil {
		recvArgv = append(append([]string(nil), through...), recvArgv...)
	}
	send := exec.Command("zfs", "send", snap)
	recv := exec.Command(recvArgv[0], recvArgv[1:]...)
	r, w, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	send.Stdout, recv.Stdin = w, r
	var serr, rerr strings.Builder
	send.Stderr, recv.Stderr = &serr, &rerr
	t := time.Now()
	if err := recv.Start(); err != nil {
		return 0, err
	}
	if err := send.Start(); err != nil {
		return 0, err
	}
	r.Close()
	w.Close()
	e1, e2 := send.Wait(), recv.Wait()
	if e1 != nil || e2 != nil {
		return 0, fmt.Errorf("%v | %v: %v %s / %v %s", send.Args, recv.Args, e1, serr.String(), e2, rerr.String())
	}
	return time.Since(t).Seconds(), nil
}

// sshServer is an sshd on 127.0.0.1:2222 that lets root in with a key of its own.
type sshServer struct {
	dir string
	cmd *exec.Cmd
}

// startSSH starts sshd, or says why it cannot (the guest may have no ssh).
func startSSH(dir string) (*sshServer, error) {
	for _, p := range []string{"ssh", "sshd", "ssh-keygen"} {
		if _, err := exec.LookPath(p); err != nil {
			return nil, fmt.Errorf("the lab guest has no %s (packages openssh-client and openssh-server)", p)
		}
	}
	os.RemoveAll(dir)
	os.MkdirAll(dir, 0o700)
	os.MkdirAll("/run/sshd", 0o755) // sshd's privilege separation directory
	for _, k := range []string{"host", "id"} {
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, k)).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("ssh-keygen: %v %s", err, out)
		}
	}
	pub, _ := os.ReadFile(filepath.Join(dir, "id.pub"))
	os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o600)
	cfg := fmt.Sprintf("Port 2222\nListenAddress 127.0.0.1\nHostKey %[1]s/host\nAuthorizedKeysFile %[1]s/authorized_keys\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile %[1]s/sshd.pid\n", dir)
	os.WriteFile(filepath.Join(dir, "sshd_config"), []byte(cfg), 0o600)
	sshd, _ := exec.LookPath("sshd")
	s := &sshServer{dir: dir, cmd: exec.Command(sshd, "-D", "-e", "-f", filepath.Join(dir, "sshd_config"))}
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	for i := 0; i < 100; i++ {
		if exec.Command(s.command()[0], append(s.command()[1:], "true")...).Run() == nil {
			return s, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.stop()
	return nil, fmt.Errorf("sshd on 127.0.0.1:2222 did not let root in")
}

// command is the ssh client invocation, as PVE's storage_migrate runs it (batch mode, no
// escape character), with the server's key not checked (a throwaway server).
func (s *sshServer) command() []string {
	return []string{"ssh", "-e", "none", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
		"-o", "LogLevel=ERROR", "-p", "2222", "-i", filepath.Join(s.dir, "id"), "root@127.0.0.1", "--"}
}

func (s *sshServer) stop() { s.cmd.Process.Kill(); s.cmd.Wait() }
