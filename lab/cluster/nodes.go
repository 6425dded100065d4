package cluster

import (
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	simpve "github.com/pvesnap/pvesnap/sim/pve"
)

// TwoNodeStorage is the storage.cfg of two nodes in one guest, each with a ZFS pool and an
// LVM thin pool of its own (poola, vga on pve1; poolb, vgb on pve2) as storages restricted to
// it: one guest cannot hold two pools of one name, so a move names the target node's storage
// in its target ("<storage>:<volume>").
const TwoNodeStorage = `dir: local
	path /var/lib/vz
	content iso,vztmpl,backup

zfspool: zfs-a
	pool poola/data
	content images,rootdir
	sparse 1
	nodes pve1

zfspool: zfs-b
	pool poolb/data
	content images,rootdir
	sparse 1
	nodes pve2

lvmthin: thin-a
	thinpool data
	vgname vga
	content rootdir,images
	nodes pve1

lvmthin: thin-b
	thinpool data
	vgname vgb
	content rootdir,images
	nodes pve2
`

// Nodes are several PVE nodes in one guest: a simulated cluster whose pveproxies list and
// allocate on the guest's real pools (RealVolumes), and the real pvesnap in front of each
// node, all on one port at the node's own address (127.0.0.<n>, as .members gives it), so
// the daemons reach each other the way they do between machines.
type Nodes struct {
	Sim     *simpve.Cluster
	URL     map[string]string // each node's pvesnap
	API     map[string]*simpve.Client
	daemons map[string]*daemon
}

// StartNodes starts the cluster with storage.cfg storageCfg and pvesnap on every node.
func StartNodes(work, binary string, names []string, storageCfg string) (*Nodes, error) {
	if binary == "" {
		binary = "/mnt/host/bin/pvesnap"
	}
	os.RemoveAll(work)
	if err := os.MkdirAll(work, 0o755); err != nil {
		return nil, err
	}
	ns := &Nodes{URL: map[string]string{}, API: map[string]*simpve.Client{}, daemons: map[string]*daemon{}}
	var err error
	ns.Sim, err = simpve.Start(simpve.Options{Dir: filepath.Join(work, "sim"), Nodes: names, ClusterName: "lab",
		AuthFailDelay: time.Millisecond, PvestatdInterval: time.Second, Volumes: RealVolumes})
	if err != nil {
		return nil, err
	}
	if err := ns.Sim.SetStorageConfig(storageCfg); err != nil {
		ns.Close()
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		ns.Close()
		return nil, err
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	ln.Close()
	for i, name := range names {
		addr := fmt.Sprintf("127.0.0.%d:%s", i+1, port)
		cfg := filepath.Join(work, name+".yaml")
		if err := writeConfig(cfg, name, addr, ns.Sim.URL(name), ns.Sim.NodePaths(name), ""); err != nil {
			ns.Close()
			return nil, err
		}
		ns.URL[name] = "https://" + addr
		d, err := startDaemon(binary, cfg, filepath.Join(work, name+".log"), ns.URL[name], ns.Sim.CAFile(), nil)
		if err != nil {
			ns.Close()
			return nil, err
		}
		ns.daemons[name], ns.API[name] = d, d.api
	}
	return ns, nil
}

// Close stops the daemons (SIGTERM) and the simulator.
func (ns *Nodes) Close() {
	for _, d := range ns.daemons {
		d.cmd.Process.Signal(syscall.SIGTERM)
		<-d.exited
	}
	ns.daemons = map[string]*daemon{}
	if ns.Sim != nil {
		ns.Sim.Close()
	}
}

// WaitTask polls a task's status through api every interval (under TCG, a poll is not free:
// it competes with the task for the CPU) until it stops, and returns its exit status.
func WaitTask(api *simpve.Client, upid string, interval, timeout time.Duration) (string, error) {
	f := strings.Split(upid, ":")
	if len(f) < 2 {
		return "", fmt.Errorf("not a UPID: %q", upid)
	}
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(interval) {
		d, err := api.Must("GET", "/nodes/"+f[1]+"/tasks/"+url.PathEscape(upid)+"/status", nil)
		if err != nil {
			return "", err
		}
		var st struct{ Status, Exitstatus string }
		json.Unmarshal(d, &st)
		if st.Status == "stopped" {
			return st.Exitstatus, nil
		}
	}
	return "", fmt.Errorf("task %s still running after %s", upid, timeout)
}
