// Package pve simulates a Proxmox VE cluster closely enough that passing against it means
// something: each node has its own pveproxy (TLS, PVE's envelope and reason phrases, its
// header and body limits, the 401 delay), every parameter is checked against PVE's own API
// schema, the cluster filesystem is a directory with the files PVE keeps there, access control
// follows pve-access-control (ACL propagation, groups, pools, NoAccess, privilege-separated
// tokens, expiry, tickets, CSRF), tasks are written as PVE writes them, VM configs are parsed
// with the config schema's formats, and storages hold real bytes in files.
//
// It is an independent reading of PVE's sources and documentation: it shares no code with
// pvesnap's daemon, so a misreading in either shows up as a disagreement in the tests.
package pve

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/pvesnap/pvesnap/sim/pveschema"
	"github.com/pvesnap/pvesnap/sim/reference"
)

// Options configure a simulated cluster.
type Options struct {
	// Dir holds everything the cluster writes; it is created if needed.
	Dir string
	// Nodes are the node names (default: one node "pve1").
	Nodes []string
	// ClusterName is reported by /cluster/status (empty: a standalone node).
	ClusterName string
	// Listen maps node names to listen addresses (default 127.0.0.1:0 each).
	Listen map[string]string
	// AuthFailDelay holds back 401s like pveproxy (default 3 s; negative: none).
	AuthFailDelay time.Duration
	// Timeout is pveproxy's connection timeout: idle keep-alive connections and requests
	// whose header broke the limits are closed after it (default 5 s).
	Timeout time.Duration
	// PvestatdInterval is how often finished tasks are archived and the task list is
	// broadcast, like pvestatd (default 10 s).
	PvestatdInterval time.Duration
	// Release is the PVE version reported (default 9.1.7); it picks the API schema (8.x or
	// 9.x) and the texts of failed logins (9.1.5 and later: "Authentication failed!").
	Release string
	// RootPassword is root@pam's password (default "pvesnap").
	RootPassword string
	// ExtJS, when set, is an Ext JS build directory: the node then serves a stand-in of the
	// web GUI's page at GET / and /pve2/ext6/ from it (gui.go).
	ExtJS string
	// Volumes, when set, backs storages with something other than the simulator's files
	// (the lab: real ZFS and LVM-thin); a nil answer keeps the files for that storage.
	Volumes func(node string, st *Storage) Volumes
	Logger  *slog.Logger
}

// Cluster is a running simulated cluster.
type Cluster struct {
	o        Options
	shared   string // the cluster filesystem (what /etc/pve is on every node)
	nodes    map[string]*Node
	names    []string
	access   *accessStore
	schema   reference.PVESchema
	vmProps  map[string]pveschema.Schema // the VM config schema ($confdesc)
	stProps  map[string]pveschema.Schema // storage.cfg properties
	mu       sync.Mutex                  // VM runtime state, in-process tasks, task lists
	vms      map[int64]*vmRuntime
	simTask  map[int64]*simTask // running in-process tasks by pstart
	tasklist map[string][]map[string]any
	ptick    int64
	logger   *slog.Logger
	stop     chan struct{}
	wg       sync.WaitGroup
	pid      int64
	pstart   int64
}

// Node is one simulated node and its pveproxy.
type Node struct {
	Name   string
	Root   string // per-node directory
	IP     string
	c      *Cluster
	srv    *proxyServer
	ln     net.Listener
	routes []*route
	tasks  *taskDir
}

// Paths are where a node's files are, in the roles pvesnap's config knows them by.
type Paths struct {
	PVE, Tasks, State, Run, Lock, Storage string
}

// Start creates the cluster's files (keeping existing ones) and starts every node's pveproxy.
func Start(o Options) (*Cluster, error) {
	if o.Dir == "" {
		return nil, errors.New("sim/pve: Options.Dir is required")
	}
	if len(o.Nodes) == 0 {
		o.Nodes = []string{"pve1"}
	}
	if o.AuthFailDelay == 0 {
		o.AuthFailDelay = 3 * time.Second
	}
	if o.AuthFailDelay < 0 {
		o.AuthFailDelay = 0
	}
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Second
	}
	if o.PvestatdInterval == 0 {
		o.PvestatdInterval = 10 * time.Second
	}
	if o.Release == "" {
		o.Release = "9.1.7"
	}
	if o.RootPassword == "" {
		o.RootPassword = "pvesnap"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	for _, n := range o.Nodes {
		if pveschema.CheckFormat("pve-node", n, "") != nil {
			return nil, fmt.Errorf("sim/pve: bad node name %q", n)
		}
	}
	version := "pve9"
	if strings.HasPrefix(o.Release, "8.") {
		version = "pve8"
	}
	schema, err := reference.PVE(version)
	if err != nil {
		return nil, fmt.Errorf("sim/pve: API schema %s: %w", version, err)
	}
	c := &Cluster{o: o, shared: filepath.Join(o.Dir, "pve"), nodes: map[string]*Node{}, names: o.Nodes, schema: schema,
		vms: map[int64]*vmRuntime{}, simTask: map[int64]*simTask{}, tasklist: map[string][]map[string]any{},
		logger: o.Logger, stop: make(chan struct{}), pid: int64(os.Getpid())}
	c.vmProps = propsOf(schema["/nodes/{node}/qemu/{vmid}/config"]["GET"].Returns["properties"])
	delete(c.vmProps, "digest")
	c.stProps = propsOf(toAny(schema["/storage"]["POST"].Parameters.Properties))
	if ide, ok := c.vmProps["ide[n]"]["format"].(map[string]any); ok {
		// qemu-server registers its IDE drive format by name for 'cdrom'.
		pveschema.Register("pve-qm-ide", pveschema.Format{Props: propsOf(ide)})
	}
	ps, ok := procStartTime(c.pid)
	if !ok {
		return nil, errors.New("sim/pve: cannot read this process's start time from /proc")
	}
	c.pstart = ps
	if err := c.layout(); err != nil {
		return nil, fmt.Errorf("sim/pve: %w", err)
	}
	c.access = &accessStore{dir: c.shared, keys: &ticketKeys{dir: c.shared}}
	if err := c.ensureRoot(o.RootPassword); err != nil {
		return nil, err
	}
	for i, name := range o.Nodes {
		n := &Node{Name: name, Root: filepath.Join(o.Dir, "node", name), IP: fmt.Sprintf("127.0.0.%d", i+1), c: c}
		n.tasks = &taskDir{root: filepath.Join(n.Root, "tasks"), running: c.taskRunning}
		c.nodes[name] = n
	}
	for _, name := range o.Nodes {
		if err := c.nodes[name].start(); err != nil {
			c.Close()
			return nil, err
		}
	}
	if err := c.writeMembers(); err != nil {
		c.Close()
		return nil, err
	}
	c.wg.Add(1)
	go c.pvestatd()
	return c, nil
}

func propsOf(v any) map[string]pveschema.Schema {
	out := map[string]pveschema.Schema{}
	m, _ := v.(map[string]any)
	for k, s := range m {
		if sm, ok := s.(map[string]any); ok {
			out[k] = sm
		}
	}
	return out
}

// layout creates the shared cluster filesystem and each node's view of it.
func (c *Cluster) layout() error {
	for _, d := range []string{"", "priv", "nodes", "pvesnap", "priv/pvesnap", "virtual-guest"} {
		if err := os.MkdirAll(filepath.Join(c.shared, d), 0o755); err != nil {
			return err
		}
	}
	os.Chmod(filepath.Join(c.shared, "priv"), 0o700)
	if err := ensureCerts(c.shared, c.o.Nodes); err != nil {
		return err
	}
	for _, f := range []struct{ name, content string }{
		{"storage.cfg", "dir: local\n\tpath /var/lib/vz\n\tcontent iso,vztmpl,backup\n"},
		{"datacenter.cfg", "keyboard: en-us\n"},
		{"user.cfg", ""},
		{"priv/token.cfg", ""},
	} {
		p := filepath.Join(c.shared, f.name)
		if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
			if err := os.WriteFile(p, []byte(f.content), 0o640); err != nil {
				return err
			}
		}
	}
	for _, name := range c.o.Nodes {
		root := filepath.Join(c.o.Dir, "node", name)
		view := filepath.Join(root, "etc-pve")
		for _, d := range []string{view, filepath.Join(root, "tasks"), filepath.Join(root, "state"),
			filepath.Join(root, "run"), filepath.Join(root, "lock"), filepath.Join(root, "storage"),
			filepath.Join(c.shared, "nodes", name, "qemu-server")} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return err
			}
		}
		// The node's /etc/pve: every shared entry, plus "local" and "qemu-server" pointing at
		// this node's directory, as pmxcfs presents them.
		entries, err := os.ReadDir(c.shared)
		if err != nil {
			return err
		}
		links := map[string]string{"local": filepath.Join(c.shared, "nodes", name),
			"qemu-server": filepath.Join(c.shared, "nodes", name, "qemu-server")}
		for _, e := range entries {
			links[e.Name()] = filepath.Join(c.shared, e.Name())
		}
		for l, target := range links {
			p := filepath.Join(view, l)
			if cur, err := os.Readlink(p); err == nil && cur == target {
				continue
			}
			os.Remove(p)
			if err := os.Symlink(target, p); err != nil {
				return err
			}
		}
	}
	return nil
}

// writeMembers writes each node's .members (nodename differs per node, like pmxcfs).
func (c *Cluster) writeMembers() error {
	var list []string
	for i, name := range c.names {
		list = append(list, fmt.Sprintf(`"%s": { "id": %d, "online": 1, "ip": "%s"}`, name, i+1, c.nodes[name].IP))
	}
	clusterPart := ""
	if c.o.ClusterName != "" {
		clusterPart = fmt.Sprintf(`"cluster": { "name": "%s", "version": 2, "nodes": %d, "quorate": 1 },`+"\n", c.o.ClusterName, len(c.names))
	}
	for _, name := range c.names {
		b := fmt.Sprintf("{\n\"nodename\": \"%s\",\n\"version\": 7,\n%s\"nodelist\": {\n  %s\n  }\n}\n", name, clusterPart, strings.Join(list, ",\n  "))
		if err := os.WriteFile(filepath.Join(c.nodes[name].Root, "etc-pve", ".members"), []byte(b), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func (n *Node) start() error {
	cert, err := tls.LoadX509KeyPair(filepath.Join(n.c.shared, "nodes", n.Name, "pve-ssl.pem"),
		filepath.Join(n.c.shared, "nodes", n.Name, "pve-ssl.key"))
	if err != nil {
		return err
	}
	addr := n.c.o.Listen[n.Name]
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	if n.ln, err = net.Listen("tcp", addr); err != nil {
		return err
	}
	if n.routes, err = n.c.routeTable(n); err != nil {
		n.ln.Close()
		return err
	}
	n.srv = &proxyServer{handle: n.serve, timeout: n.c.o.Timeout, logger: n.c.logger.With("node", n.Name),
		tls: &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}, MinVersion: tls.VersionTLS12}}
	go n.srv.serve(n.ln)
	return nil
}

// serve is pveproxy's handle_request: /api2 calls, the GUI page, its static files.
func (n *Node) serve(req *request) *response {
	path := req.URL.Path
	if p, err := url.PathUnescape(path); err == nil {
		path = p
	}
	if strings.HasPrefix(path, "/api2") {
		return n.serveAPI(req, path)
	}
	if n.c.o.ExtJS != "" && req.Method == "GET" {
		if path == "/" {
			return n.indexPage(req)
		}
		if r := n.guiFile(path); r != nil {
			return r
		}
	}
	return rawError(500, fmt.Sprintf("no such file '%s'\n", path))
}

// URL is the https URL of a node's pveproxy.
func (c *Cluster) URL(node string) string { return "https://" + c.nodes[node].ln.Addr().String() }

// Addr is the listen address of a node's pveproxy.
func (c *Cluster) Addr(node string) string { return c.nodes[node].ln.Addr().String() }

// NodePaths returns the directories of a node, for pvesnap's config.
func (c *Cluster) NodePaths(node string) Paths {
	r := c.nodes[node].Root
	return Paths{PVE: filepath.Join(r, "etc-pve"), Tasks: filepath.Join(r, "tasks"), State: filepath.Join(r, "state"),
		Run: filepath.Join(r, "run"), Lock: filepath.Join(r, "lock"), Storage: filepath.Join(r, "storage")}
}

// Shared is the cluster filesystem directory.
func (c *Cluster) Shared() string { return c.shared }

// Nodes lists node names in order.
func (c *Cluster) Nodes() []string { return append([]string(nil), c.names...) }

// CAFile is the cluster CA certificate.
func (c *Cluster) CAFile() string { return filepath.Join(c.shared, "pve-root-ca.pem") }

// Release is the PVE version the cluster reports.
func (c *Cluster) Release() string { return c.o.Release }

// Close stops every node.
func (c *Cluster) Close() error {
	select {
	case <-c.stop:
	default:
		close(c.stop)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, n := range c.nodes {
		if n.srv != nil {
			n.srv.shutdown(ctx)
		}
	}
	c.wg.Wait()
	return nil
}

// pvestatd archives finished tasks and broadcasts every node's task list, as pvestatd's
// update loop does.
func (c *Cluster) pvestatd() {
	defer c.wg.Done()
	t := time.NewTicker(c.o.PvestatdInterval)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
			c.Pvestatd()
		}
	}
}

// Pvestatd runs one pass now: active_workers on every node and broadcast_tasklist.
func (c *Cluster) Pvestatd() {
	for _, name := range c.names {
		n := c.nodes[name]
		list, err := n.tasks.activeWorkers("")
		if err != nil {
			c.logger.Warn("pvestatd: active workers", "node", n.Name, "err", err)
			continue
		}
		c.broadcastTasklist(n.Name, list)
	}
}

// nodeOf returns the node, or the error pveproxy gives for a name it cannot resolve.
func (c *Cluster) nodeOf(name string) (*Node, error) {
	n, ok := c.nodes[name]
	if !ok {
		return nil, httpErr(500, "hostname lookup '%s' failed - failed to get address info for: %s: Name or service not known", name, name)
	}
	return n, nil
}
