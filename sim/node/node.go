// Package node assembles one simulated Proxmox VE node a person (or a test) can drive from
// outside: the simulated pveproxy (sim/pve) with a zfspool, an lvmthin and a thick LVM
// storage, users and an API token, and real executables for the node's command line tools
// (zfs, lvs, pvs, lvcreate, lvchange, lvremove, qm) — symbolic links to the pvesnap binary,
// which answers as the tool its name says (RunCommand). It writes the pvesnap.yaml that runs
// `pvesnap serve` against the node and the environment a client needs.
package node

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	simpve "github.com/pvesnap/pvesnap/sim/pve"
)

// Commands are the tools a simulated node has as executables.
var Commands = []string{"zfs", "lvs", "pvs", "lvcreate", "lvchange", "lvremove", "qm"}

// IsCommand reports whether an executable name (argv[0]'s base) is one of Commands.
func IsCommand(name string) bool {
	for _, c := range Commands {
		if c == name {
			return true
		}
	}
	return false
}

// Options shape the node.
type Options struct {
	// Dir holds everything: the cluster filesystem, storages, bin/, pvesnap.yaml, env.
	Dir string
	// Name is the node's name (default pve1).
	Name string
	// Listen is pveproxy's address (default 127.0.0.1:8006).
	Listen string
	// PvesnapListen is the address written into pvesnap.yaml (default 127.0.0.1:8009).
	PvesnapListen string
	// Exe is the pvesnap binary the tools link to (default: this process's executable).
	Exe          string
	RootPassword string // default "pvesnap"
	// Users are created with these passwords ("user@realm" -> password).
	Users map[string]string
	// ACLs grant roles: "path:ugid:role" (ugid a user, @group or token id), propagating.
	ACLs []string
	// Token is created with privilege separation off and granted TokenRole on TokenPath
	// ("" for none; default csi@pve!csi, PVEDatastoreAdmin on /storage and PVEVMAdmin on /vms).
	Token     string
	TokenRole string
	TokenPath string
	// The simulator's own knobs.
	AuthFailDelay time.Duration
	Release       string
	ExtJS         string
	Logger        *slog.Logger
}

// Node is a running simulated node.
type Node struct {
	O       Options
	Cluster *simpve.Cluster
	// Bin is the directory of the tool executables; Config is pvesnap.yaml.
	Bin, Config string
	// TokenID and Secret are the API token's ("" when none was asked for).
	TokenID, Secret string
	// Fingerprint is the SHA-256 fingerprint of pveproxy's certificate.
	Fingerprint string
}

// storageConfig is the node's storages: ZFS, LVM-thin and thick LVM on a "disk".
const storageConfig = simpve.DefaultStorageConfig + `
lvm: local-thick
	vgname vgthick
	content images
`

// toolConfig tells the executables which storage directory stands for which pool and VG,
// and how qm reaches the node. It lives beside them in bin/.
type toolConfig struct {
	Pools map[string]string `json:"pools"` // zfs pool -> volume directory
	VGs   map[string]vgSpec `json:"vgs"`
	QM    qmSpec            `json:"qm"`
}

type vgSpec struct {
	Dir      string   `json:"dir"`
	ThinPool string   `json:"thinpool,omitempty"`
	PVs      []string `json:"pvs,omitempty"`
}

type qmSpec struct {
	URL      string `json:"url"`
	CA       string `json:"ca"`
	Node     string `json:"node"`
	Password string `json:"root_password"`
}

const toolConfigName = "sim-node.json"

// Start builds the node (keeping what Dir already holds) and starts its pveproxy.
func Start(o Options) (*Node, error) {
	if o.Dir == "" {
		return nil, errors.New("sim/node: Options.Dir is required")
	}
	if o.Name == "" {
		o.Name = "pve1"
	}
	if o.Listen == "" {
		o.Listen = "127.0.0.1:8006"
	}
	if o.PvesnapListen == "" {
		o.PvesnapListen = "127.0.0.1:8009"
	}
	if o.RootPassword == "" {
		o.RootPassword = "pvesnap"
	}
	if o.Exe == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		o.Exe = exe
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return nil, err
	}
	o.Dir = dir
	cl, err := simpve.Start(simpve.Options{Dir: filepath.Join(dir, "cluster"), Nodes: []string{o.Name},
		Listen: map[string]string{o.Name: o.Listen}, RootPassword: o.RootPassword, AuthFailDelay: o.AuthFailDelay,
		Release: o.Release, ExtJS: o.ExtJS, Logger: o.Logger})
	if err != nil {
		return nil, err
	}
	n := &Node{O: o, Cluster: cl, Bin: filepath.Join(dir, "bin"), Config: filepath.Join(dir, "pvesnap.yaml")}
	if err := n.setup(); err != nil {
		cl.Close()
		return nil, err
	}
	return n, nil
}

func (n *Node) setup() error {
	o, cl := n.O, n.Cluster
	if err := cl.SetStorageConfig(storageConfig); err != nil {
		return err
	}
	for _, d := range []string{n.Bin, filepath.Join(o.Dir, "iscsi")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	for _, name := range Commands {
		p := filepath.Join(n.Bin, name)
		os.Remove(p)
		if err := os.Symlink(o.Exe, p); err != nil {
			return err
		}
	}
	tc := toolConfig{Pools: map[string]string{"rpool/data": cl.StorageDir(o.Name, "local-zfs")},
		VGs: map[string]vgSpec{"pve": {Dir: cl.StorageDir(o.Name, "local-lvm"), ThinPool: "data"},
			"vgthick": {Dir: cl.StorageDir(o.Name, "local-thick"), PVs: []string{"/dev/sdb"}}},
		QM: qmSpec{URL: cl.URL(o.Name), CA: cl.CAFile(), Node: o.Name, Password: o.RootPassword}}
	b, _ := json.MarshalIndent(tc, "", "  ")
	if err := os.WriteFile(filepath.Join(n.Bin, toolConfigName), b, 0o600); err != nil {
		return err
	}
	for _, u := range slices.Sorted(maps.Keys(o.Users)) {
		if err := cl.AddUser(u, o.Users[u]); err != nil {
			return fmt.Errorf("user %s: %w", u, err)
		}
	}
	if o.Token != "" {
		user, name, ok := strings.Cut(o.Token, "!")
		if !ok {
			return fmt.Errorf("token %q: want user@realm!name", o.Token)
		}
		if user != "root@pam" {
			// The token's user exists for the token only: nobody knows its password.
			pw := make([]byte, 16)
			rand.Read(pw)
			if err := cl.AddUser(user, hex.EncodeToString(pw)); err != nil {
				return err
			}
		}
		id, secret, err := cl.AddToken(user, name, false)
		if err != nil {
			return err
		}
		n.TokenID, n.Secret = id, secret
		if o.TokenRole != "" {
			path := o.TokenPath
			if path == "" {
				path = "/"
			}
			if err := cl.AddACL(path, user, o.TokenRole, true); err != nil {
				return err
			}
		}
	}
	for _, a := range o.ACLs {
		f := strings.SplitN(a, ":", 3)
		if len(f) != 3 {
			return fmt.Errorf("ACL %q: want path:ugid:role", a)
		}
		if err := cl.AddACL(f[0], f[1], f[2], true); err != nil {
			return err
		}
	}
	fp, err := fingerprint(filepath.Join(cl.Shared(), "nodes", o.Name, "pve-ssl.pem"))
	if err != nil {
		return err
	}
	n.Fingerprint = fp
	p := cl.NodePaths(o.Name)
	os.WriteFile(filepath.Join(o.Dir, "iscsi", "initiatorname.iscsi"), []byte("InitiatorName=iqn.1993-08.org.debian:01:"+o.Name+"\n"), 0o644)
	yaml := fmt.Sprintf(`# pvesnap against the simulated node in %s: pvesnap --config %s serve
node: %s
listen: %s
upstream: %s
upstream_ca: %s
paths:
  pve: %s
  tasks: %s
  state: %s
  run: %s
  lock: %s
  iscsi: %s
  bin: %s
`, o.Dir, n.Config, o.Name, o.PvesnapListen, cl.URL(o.Name), cl.CAFile(), p.PVE, p.Tasks, p.State, p.Run, p.Lock,
		filepath.Join(o.Dir, "iscsi"), n.Bin)
	if err := os.WriteFile(n.Config, []byte(yaml), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(o.Dir, "env"), []byte(n.Env()), 0o600)
}

// Env is what a client needs, as shell assignments.
func (n *Node) Env() string {
	o, cl := n.O, n.Cluster
	vars := [][2]string{
		{"PVE_URL", cl.URL(o.Name)},
		{"PVE_NODE", o.Name},
		{"PVE_CA", cl.CAFile()},
		{"REQUESTS_CA_BUNDLE", cl.CAFile()},
		{"PVE_FINGERPRINT", n.Fingerprint},
		{"PVE_USER", "root@pam"},
		{"PVE_PASSWORD", o.RootPassword},
	}
	if n.TokenID != "" {
		user, name, _ := strings.Cut(n.TokenID, "!")
		vars = append(vars, [2]string{"PVE_TOKEN_ID", n.TokenID}, [2]string{"PVE_TOKEN_SECRET", n.Secret},
			[2]string{"PVE_TOKEN_USER", user}, [2]string{"PVE_TOKEN_NAME", name},
			[2]string{"PVE_API_TOKEN", "PVEAPIToken=" + n.TokenID + "=" + n.Secret})
	}
	vars = append(vars, [2]string{"PVESNAP_CONFIG", n.Config}, [2]string{"PVESNAP_URL", "https://" + o.PvesnapListen},
		[2]string{"PVE_SIM_BIN", n.Bin})
	var b strings.Builder
	for _, v := range vars {
		fmt.Fprintf(&b, "%s='%s'\n", v[0], strings.ReplaceAll(v[1], "'", `'\''`))
	}
	return b.String()
}

// fingerprint is the SHA-256 fingerprint of a certificate, as pvecm and the GUI show it.
func fingerprint(certFile string) (string, error) {
	b, err := os.ReadFile(certFile)
	if err != nil {
		return "", err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return "", fmt.Errorf("%s: no certificate", certFile)
	}
	if _, err := x509.ParseCertificate(blk.Bytes); err != nil {
		return "", err
	}
	sum := sha256.Sum256(blk.Bytes)
	parts := make([]string, len(sum))
	for i, x := range sum {
		parts[i] = fmt.Sprintf("%02X", x)
	}
	return strings.Join(parts, ":"), nil
}

// Close stops the node.
func (n *Node) Close() error { return n.Cluster.Close() }
