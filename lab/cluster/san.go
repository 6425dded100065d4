package cluster

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/pvesnap/pvesnap/daemon/pure"
	"github.com/pvesnap/pvesnap/lab/guest"
	"github.com/pvesnap/pvesnap/sim/lio"
)

// The lab's SAN fabrics between the node and its simulated array.
//
// Loopback (tcm_loop, the default): a LUN mapped on the target appears on the node's SCSI bus
// at once and goes when it is unmapped, which hides every stale-device problem of a real SAN.
//
// iSCSI: the array's LUNs are exported by LIO's iSCSI target on two portals (two addresses on
// lo), the node logs in to both with open-iscsi and runs dm-multipath over the two paths, as a
// production node does. A LUN the array maps appears only after a rescan; one it unmaps stays
// on the node (both paths and the map) until something removes it; and a path can be taken
// down (its address removed: the session fails as on a pulled cable) and brought back. The
// guest has no udev, so multipathd hears of no new path by itself: every new device is added
// to it explicitly, as pvesnap does when it finds a device without a map.
const (
	FabricLoop  = ""
	FabricISCSI = "iscsi"
)

// Portals are the lab iSCSI target's addresses, one per path.
var Portals = []string{"10.200.0.1", "10.200.0.2"}

// TargetIQN is the simulated array's iSCSI target.
const TargetIQN = "iqn.2010-06.com.purestorage:flasharray.pvesnaplab"

// iscsiFabric is the running iSCSI setup.
type iscsiFabric struct {
	target     *lio.ISCSITarget
	acl        *lio.ACL
	iscsid     *exec.Cmd
	multipathd *exec.Cmd
	work       string
}

// multipathConf: WWIDs read from sysfs (uid_attribute "": there is no udev), maps named by
// WWID, no maps but the ones asked for (find_multipaths strict: new LUNs are pvesnap's to
// add), paths checked every 2 s, I/O queued 30 s when no path is left. LIO's LUNs support
// ALUA, and multipath's built-in entry for them asks for the kernel's ALUA device handler,
// whose module (scsi_dh_alua) the guest does not have: without a handler, both paths are used
// alike, which is what two portals of one LIO target are.
const multipathConf = `defaults {
	uid_attribute ""
	user_friendly_names no
	find_multipaths strict
	polling_interval 2
	path_checker tur
	no_path_retry 15
	path_grouping_policy multibus
}
blacklist {
	devnode "^(vd|zd|nvme|loop|ram|nullb|dm-)"
}
devices {
	device {
		vendor "LIO-ORG"
		product ".*"
		hardware_handler "0"
		path_grouping_policy multibus
		prio const
		no_path_retry 15
	}
}
`

// startISCSI sets the iSCSI fabric up for initiator: target, portals, ACL, iscsid and its
// sessions over both portals, multipathd.
func startISCSI(li *lio.LIO, initiator, work string) (*iscsiFabric, error) {
	mods := append(append([]string{"-a"}, lio.ISCSIModules...), "scsi_transport_iscsi", "libiscsi", "libiscsi_tcp", "iscsi_tcp",
		"dm_multipath", "dm_round_robin", "dm_service_time")
	if out, err := guest.Run("modprobe", mods...); err != nil {
		return nil, fmt.Errorf("modprobe %v: %v %s", mods, err, out)
	}
	for _, a := range Portals {
		guest.Run("ip", "addr", "add", a+"/32", "dev", "lo")
	}
	f := &iscsiFabric{work: work}
	var nps []string
	for _, a := range Portals {
		nps = append(nps, a+":3260")
	}
	var err error
	if f.target, err = li.CreateISCSITarget(TargetIQN, nps...); err != nil {
		return nil, err
	}
	if f.acl, err = f.target.ACL(initiator); err != nil {
		f.close()
		return nil, err
	}
	if err := f.startInitiator(initiator); err != nil {
		f.close()
		return nil, err
	}
	return f, nil
}

func (f *iscsiFabric) startInitiator(initiator string) error {
	// open-iscsi's own state, fresh: the node's name, and short timeouts so a dead path fails
	// over in seconds (as multipath setups configure it), not after the default 120 s.
	os.RemoveAll("/etc/iscsi/nodes")
	os.RemoveAll("/etc/iscsi/send_targets")
	os.MkdirAll("/etc/iscsi", 0o755)
	os.MkdirAll("/run/lock/iscsi", 0o755)
	if err := os.WriteFile("/etc/iscsi/initiatorname.iscsi", []byte("InitiatorName="+initiator+"\n"), 0o644); err != nil {
		return err
	}
	conf := "node.startup = manual\nnode.session.timeo.replacement_timeout = 10\nnode.conn[0].timeo.noop_out_interval = 2\n" +
		"node.conn[0].timeo.noop_out_timeout = 4\nnode.conn[0].timeo.login_timeout = 5\nnode.session.initial_login_retry_max = 2\n" +
		"node.session.scan = manual\n"
	if err := os.WriteFile("/etc/iscsi/iscsid.conf", []byte(conf), 0o644); err != nil {
		return err
	}
	var err error
	if f.iscsid, err = background(filepath.Join(f.work, "iscsid.log"), "iscsid", "-f"); err != nil {
		return err
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, err := guest.Run("iscsiadm", "-m", "discovery", "-t", "sendtargets", "-p", Portals[0]+":3260")
		if err == nil && strings.Count(out, TargetIQN) == len(Portals) {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("iSCSI discovery on %s: %v %s", Portals[0], err, out)
		}
		time.Sleep(300 * time.Millisecond)
	}
	if out, err := guest.Run("iscsiadm", "-m", "node", "-T", TargetIQN, "--login"); err != nil {
		return fmt.Errorf("iSCSI login: %v %s", err, out)
	}
	if n := len(f.sessions()); n != len(Portals) {
		return fmt.Errorf("%d iSCSI sessions after the login, want %d", n, len(Portals))
	}
	if err := os.MkdirAll("/etc/multipath", 0o755); err != nil {
		return err
	}
	os.Remove("/etc/multipath/wwids")
	if err := os.WriteFile("/etc/multipath.conf", []byte(multipathConf), 0o644); err != nil {
		return err
	}
	if f.multipathd, err = background(filepath.Join(f.work, "multipathd.log"), "multipathd", "-d", "-s", "-v2"); err != nil {
		return err
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if _, err := guest.Run("multipathd", "show", "daemon"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("multipathd did not answer: %s", tail(filepath.Join(f.work, "multipathd.log"), 2000))
		}
	}
	// pvesnap's Host looks for the pid file to know multipathd runs.
	return os.WriteFile("/run/multipathd.pid", []byte(fmt.Sprintf("%d\n", f.multipathd.Process.Pid)), 0o644)
}

// background starts a daemon in the foreground mode, its output in log.
func background(log, name string, args ...string) (*exec.Cmd, error) {
	lf, err := os.OpenFile(log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	// A session of its own: iscsid signals its whole process group when it stops.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, err
	}
	go func() { cmd.Wait(); lf.Close() }()
	return cmd, nil
}

// sessions are the iSCSI sessions (sysfs names).
func (f *iscsiFabric) sessions() []string {
	ss, _ := filepath.Glob("/sys/class/iscsi_session/session*")
	var out []string
	for _, s := range ss {
		out = append(out, filepath.Base(s))
	}
	return out
}

// attach makes a LUN the array just mapped appear on the node through its multipath map, as
// an administrator does on a node without udev: a rescan of both sessions, then the paths
// and the map added to multipathd.
func (f *iscsiFabric) attach(serial string) (string, error) {
	if out, err := guest.Run("iscsiadm", "-m", "session", "--rescan"); err != nil {
		return "", fmt.Errorf("iscsiadm --rescan: %v %s", err, out)
	}
	naa := pure.NAA(serial)
	var paths []string
	for deadline := time.Now().Add(20 * time.Second); len(paths) < len(Portals); time.Sleep(200 * time.Millisecond) {
		paths = ScsiPaths(serial)
		if time.Now().After(deadline) {
			return "", fmt.Errorf("%d paths of NAA %s after the rescan, want %d", len(paths), naa, len(Portals))
		}
	}
	for _, p := range paths {
		guest.Run("multipathd", "add", "path", p)
	}
	if out, err := guest.Run("multipathd", "add", "map", "3"+naa); err != nil {
		return "", fmt.Errorf("multipathd add map 3%s: %v %s", naa, err, out)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if m := MultipathMap(serial); m != "" {
			return m, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no multipath map over %v: %s", paths, tail(filepath.Join(f.work, "multipathd.log"), 2000))
		}
	}
}

// detach removes a LUN's map and paths from the node (before the array unmaps it).
func (f *iscsiFabric) detach(serial string) {
	if m := MultipathMap(serial); m != "" {
		guest.Run("multipathd", "remove", "map", "3"+pure.NAA(serial))
	}
	for _, p := range ScsiPaths(serial) {
		guest.Run("multipathd", "remove", "path", p)
		os.WriteFile("/sys/block/"+p+"/device/delete", []byte("1"), 0o200)
	}
}

func (f *iscsiFabric) close() {
	if f.multipathd != nil {
		guest.Run("multipathd", "shutdown")
		waitExit(f.multipathd, 10*time.Second)
		os.Remove("/run/multipathd.pid")
	}
	if f.iscsid != nil {
		guest.Run("iscsiadm", "-m", "node", "--logout")
		guest.Run("iscsiadm", "-m", "node", "-o", "delete")
		f.iscsid.Process.Signal(syscall.SIGTERM)
		waitExit(f.iscsid, 10*time.Second)
	}
	if f.target != nil {
		f.target.Delete()
	}
	for _, a := range Portals {
		guest.Run("ip", "addr", "del", a+"/32", "dev", "lo")
	}
}

func waitExit(cmd *exec.Cmd, within time.Duration) {
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if cmd.Process.Signal(syscall.Signal(0)) != nil {
			return
		}
	}
	cmd.Process.Kill()
}

// ScsiPaths are the node's SCSI devices of a volume (sdX names).
func ScsiPaths(serial string) []string {
	ms, _ := filepath.Glob("/sys/block/sd*/device/wwid")
	var out []string
	for _, m := range ms {
		if b, _ := os.ReadFile(m); strings.TrimSpace(string(b)) == "naa."+pure.NAA(serial) {
			out = append(out, filepath.Base(filepath.Dir(filepath.Dir(m))))
		}
	}
	return out
}

// MultipathMap is the /dev/dm-N of a volume's multipath map ("" when none).
func MultipathMap(serial string) string {
	ms, _ := filepath.Glob("/sys/block/dm-*/dm/uuid")
	for _, m := range ms {
		if b, _ := os.ReadFile(m); strings.TrimSpace(string(b)) == "mpath-3"+pure.NAA(serial) {
			return "/dev/" + filepath.Base(filepath.Dir(filepath.Dir(m)))
		}
	}
	return ""
}

// PathDown takes path i (0 or 1) down: its portal address goes away, and with it every packet
// of that session, as when a cable is pulled. The session's recovery fails its I/O after the
// replacement timeout (10 s) and dm-multipath carries on over the other path.
func (n *Node) PathDown(i int) error {
	if n.iscsi == nil {
		return fmt.Errorf("no iSCSI fabric")
	}
	if out, err := guest.Run("ip", "addr", "del", Portals[i]+"/32", "dev", "lo"); err != nil {
		return fmt.Errorf("taking path %d (%s) down: %v %s", i, Portals[i], err, out)
	}
	return nil
}

// PathUp brings path i back; the session logs in again by itself.
func (n *Node) PathUp(i int) error {
	if n.iscsi == nil {
		return fmt.Errorf("no iSCSI fabric")
	}
	if out, err := guest.Run("ip", "addr", "add", Portals[i]+"/32", "dev", "lo"); err != nil {
		return fmt.Errorf("bringing path %d (%s) up: %v %s", i, Portals[i], err, out)
	}
	return nil
}

// SessionsLoggedIn waits until every iSCSI session is logged in (after a path came back).
func (n *Node) SessionsLoggedIn(within time.Duration) error {
	if n.iscsi == nil {
		return nil
	}
	for deadline := time.Now().Add(within); ; time.Sleep(500 * time.Millisecond) {
		bad := 0
		for _, s := range n.iscsi.sessions() {
			st, _ := os.ReadFile(filepath.Join("/sys/class/iscsi_session", s, "state"))
			if strings.TrimSpace(string(st)) != "LOGGED_IN" {
				bad++
			}
		}
		if bad == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d iSCSI session(s) not logged in after %s", bad, within)
		}
	}
}

// SessionLUNs are the LUNs of the node's iSCSI sessions as the SCSI layer lists them
// ("H:C:T:L wwid"), what the array left on the node.
func (n *Node) SessionLUNs() []string {
	if n.iscsi == nil {
		return nil
	}
	var out []string
	for _, s := range n.iscsi.sessions() {
		devs, _ := filepath.Glob(filepath.Join("/sys/class/iscsi_session", s, "device", "target*", "*:*:*:*"))
		for _, d := range devs {
			w, _ := os.ReadFile(filepath.Join(d, "wwid"))
			out = append(out, filepath.Base(d)+" "+strings.TrimSpace(string(w)))
		}
	}
	return out
}

// MappedLUNs are the LUN numbers the array maps to the node's ACL.
func (n *Node) MappedLUNs() []string {
	if n.iscsi == nil {
		return nil
	}
	return n.iscsi.acl.MappedLUNs()
}

// MultipathdMaps are the maps multipathd knows (their WWIDs).
func (n *Node) MultipathdMaps() []string {
	if n.iscsi == nil {
		return nil
	}
	out, _ := guest.Output("multipathd", "show", "maps", "raw", "format", "%w")
	var maps []string
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if w := strings.TrimSpace(sc.Text()); w != "" {
			maps = append(maps, w)
		}
	}
	return maps
}

// Attach waits for a volume the array just connected to this node and returns its device: the
// SCSI disk (loopback), or the multipath map over its paths after a rescan (iSCSI).
func (n *Node) Attach(serial string) (string, error) {
	if n.iscsi != nil {
		return n.iscsi.attach(serial)
	}
	return lio.WaitForNAA(pure.NAA(serial), 10*time.Second)
}

// Detach removes a volume's devices from this node before the array disconnects it.
func (n *Node) Detach(serial string) {
	if n.iscsi != nil {
		n.iscsi.detach(serial)
	}
}

// SAN is the iSCSI fabric by itself, without a node or an array simulator: the benchmarks
// copy between LUNs that the host reaches as a production node reaches its array (two
// sessions, dm-multipath), where commands take a network round trip.
type SAN struct{ f *iscsiFabric }

// StartSAN starts the fabric on li for initiator; its daemons' logs go to work.
func StartSAN(li *lio.LIO, initiator, work string) (*SAN, error) {
	os.MkdirAll(work, 0o755)
	f, err := startISCSI(li, initiator, work)
	if err != nil {
		return nil, err
	}
	return &SAN{f}, nil
}

// Attach exports lun, whose Pure serial is serial, as LUN n and returns its multipath map
// on the host.
func (s *SAN) Attach(lun *lio.LUN, n int, serial string) (string, error) {
	if err := s.f.acl.Map(lun, n); err != nil {
		return "", err
	}
	return s.f.attach(serial)
}

// Close removes the devices of serials from the host and takes the fabric down.
func (s *SAN) Close(serials ...string) {
	for _, sr := range serials {
		s.f.detach(sr)
	}
	s.f.close()
}
