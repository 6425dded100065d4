// Package pve simulates a Proxmox VE cluster closely enough that passing against it means
// something: each node has its own pveproxy (TLS, PVE's envelope, reason phrases, 401 delay),
// the cluster filesystem is a directory with the files PVE keeps there, access control follows
// PVE's rules (ACL propagation, groups, pools, privilege-separated tokens, tickets, CSRF), tasks
// are written as PVE writes them, and storages hold real bytes in files.
package pve

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/pvesnap/pvesnap/daemon/api"
	"github.com/pvesnap/pvesnap/daemon/auth"
	"github.com/pvesnap/pvesnap/daemon/httpd"
	"github.com/pvesnap/pvesnap/daemon/pve"
	"github.com/pvesnap/pvesnap/daemon/tasks"
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
	// AuthFailDelay holds back 401s like pveproxy (default 3 s; tests set less).
	AuthFailDelay time.Duration
	// PvestatdInterval is how often finished tasks are archived, like pvestatd (default 10 s).
	PvestatdInterval time.Duration
	// Release is the PVE version reported (default 9.1.1).
	Release string
	// RootPassword is root@pam's password (default "pvesnap").
	RootPassword string
	// ExtJS, when set, is an Ext JS build directory: the node then serves a stand-in of the
	// web GUI's page at GET / and /pve2/ext6/ from it (gui.go).
	ExtJS string
	// Volumes, when set, backs storages with something other than the simulator's files
	// (the lab: real ZFS and LVM-thin); a nil answer keeps the files for that storage.
	Volumes func(node string, st *pve.Storage) Volumes
	Logger  *slog.Logger
}

// Cluster is a running simulated cluster.
type Cluster struct {
	o       Options
	shared  string // the cluster filesystem (what /etc/pve is on every node)
	nodes   map[string]*Node
	names   []string
	access  *accessStore
	mu      sync.Mutex // VM runtime state, in-process tasks
	vms     map[int64]*vmRuntime
	simTask map[uint64]*simTask // running in-process tasks by pstart
	ptick   uint64
	logger  *slog.Logger
	stop    chan struct{}
	wg      sync.WaitGroup
	pid     int
	pstart  uint64
}

// Node is one simulated node and its pveproxy.
type Node struct {
	Name   string
	Root   string // per-node directory
	IP     string
	c      *Cluster
	srv    *httpd.Server
	ln     net.Listener
	mux    *api.Mux
	tasks  *tasks.Dir
	tlsCfg *tls.Config
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
	if o.PvestatdInterval == 0 {
		o.PvestatdInterval = 10 * time.Second
	}
	if o.Release == "" {
		o.Release = "9.1.1"
	}
	if o.RootPassword == "" {
		o.RootPassword = "pvesnap"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	for _, n := range o.Nodes {
		if err := pve.CheckNode(n); err != nil || strings.Contains(n, ".") {
			return nil, fmt.Errorf("sim/pve: bad node name %q", n)
		}
	}
	c := &Cluster{o: o, shared: filepath.Join(o.Dir, "pve"), nodes: map[string]*Node{}, names: o.Nodes,
		vms: map[int64]*vmRuntime{}, simTask: map[uint64]*simTask{}, logger: o.Logger, stop: make(chan struct{}),
		pid: os.Getpid()}
	ps, err := tasks.ProcStartTime("/proc", c.pid)
	if err != nil {
		return nil, err
	}
	c.pstart = ps
	if err := c.layout(); err != nil {
		return nil, fmt.Errorf("sim/pve: %w", err)
	}
	c.access = newAccessStore(c.shared, o.AuthFailDelay)
	if err := c.access.ensureRoot(o.RootPassword); err != nil {
		return nil, err
	}
	for i, name := range o.Nodes {
		n := &Node{Name: name, Root: filepath.Join(o.Dir, "node", name), IP: fmt.Sprintf("127.0.0.%d", i+1), c: c}
		n.tasks = &tasks.Dir{Root: filepath.Join(n.Root, "tasks"), Running: c.taskRunning}
		c.nodes[name] = n
	}
	for _, n := range c.nodes {
		if err := n.start(); err != nil {
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
	for _, name := range c.names {
		n := c.nodes[name]
		list = append(list, fmt.Sprintf(`"%s": { "id": %d, "online": 1, "ip": "%s"}`, name, indexOf(c.names, name)+1, n.IP))
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

func indexOf(l []string, s string) int {
	for i, x := range l {
		if x == s {
			return i
		}
	}
	return -1
}

func (n *Node) start() error {
	cert, err := tls.LoadX509KeyPair(filepath.Join(n.c.shared, "nodes", n.Name, "pve-ssl.pem"),
		filepath.Join(n.c.shared, "nodes", n.Name, "pve-ssl.key"))
	if err != nil {
		return err
	}
	n.tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}, MinVersion: tls.VersionTLS12}
	addr := n.c.o.Listen[n.Name]
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	n.ln, err = net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	n.mux, err = api.NewMux(n.c.routes(n), api.Options{Authz: &simAuthz{c: n.c}, PassThrough: http.HandlerFunc(n.notImplemented),
		Peer: n.c, LocalNode: n.Name, Logger: n.c.logger.With("node", n.Name)})
	if err != nil {
		return err
	}
	n.srv = &httpd.Server{Handler: n, TLSConfig: n.tlsCfg, ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout: 60 * time.Second, Logger: n.c.logger}
	go n.srv.Serve(n.ln)
	return nil
}

// ServeHTTP is the node's pveproxy: the GUI page, then the API.
func (n *Node) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Server", "pve-api-daemon/3.0")
	switch {
	case r.URL.Path == "/" && n.c.o.ExtJS != "" && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write(n.indexPage(r))
		return
	case strings.HasPrefix(r.URL.Path, "/api2/"):
		if !knownMethod(r.Method) {
			api.WriteError(w, api.JSON, api.Errorf(http.StatusNotImplemented, "method '%s' not available", r.Method))
			return
		}
		n.mux.ServeHTTP(w, r)
		return
	case n.c.o.ExtJS != "":
		guiFiles{extjs: n.c.o.ExtJS}.ServeHTTP(w, r)
		return
	}
	httpd.WriteHeader(w, http.StatusNotImplemented, "no such file '"+r.URL.Path+"'")
}

// indexPage renders the GUI page the way pveproxy renders index.html.tpl: with a valid
// ticket cookie the page carries the user's name and a CSRF token ([% UserName %],
// [% CSRFPreventionToken %]); [% NodeName %] is the node.
func (n *Node) indexPage(r *http.Request) []byte {
	user, token := "", ""
	if ck, err := r.Cookie("PVEAuthCookie"); err == nil {
		t, _ := url.PathUnescape(ck.Value)
		if u, ok := n.c.access.verifyTicket(t, time.Now()); ok {
			if key, err := os.ReadFile(filepath.Join(n.c.shared, "pve-www.key")); err == nil {
				user, token = u, auth.MakeCSRF(key, u, time.Now())
			}
		}
	}
	return []byte(strings.NewReplacer("[% UserName %]", user, "[% CSRFPreventionToken %]", token, "[% NodeName %]", n.Name,
		"[% version %]", n.c.o.Release).Replace(guiPage))
}

func knownMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodPost || m == http.MethodPut || m == http.MethodDelete
}

// notImplemented is pveproxy's answer for a path or method no handler declares.
func (n *Node) notImplemented(w http.ResponseWriter, r *http.Request) {
	f := api.FormatOf(r.URL.Path)
	if f == "" {
		f = api.JSON
	}
	api.WriteError(w, f, api.Errorf(http.StatusNotImplemented, "Method '%s %s' not implemented", r.Method, api.PathOf(r.URL.Path)))
}

// Forward implements api.Peer: pveproxy's proxyto, in process.
func (c *Cluster) Forward(w http.ResponseWriter, r *http.Request, node string) error {
	n, ok := c.nodes[node]
	if !ok {
		return api.Errorf(http.StatusInternalServerError, "hostname lookup '%s' failed - failed to get address info for: %s: Name or service not known", node, node)
	}
	if r.GetBody != nil {
		r.Body, _ = r.GetBody()
	}
	n.mux.ServeHTTP(w, r)
	return nil
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

// Tasks is a node's task directory.
func (c *Cluster) Tasks(node string) *tasks.Dir { return c.nodes[node].tasks }

// CAFile is the cluster CA certificate.
func (c *Cluster) CAFile() string { return filepath.Join(c.shared, "pve-root-ca.pem") }

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
			n.srv.Shutdown(ctx)
		}
	}
	c.wg.Wait()
	return nil
}

// pvestatd archives finished tasks on every node, as pvestatd's update_status does.
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

// Pvestatd runs one archiving pass now.
func (c *Cluster) Pvestatd() {
	for _, n := range c.nodes {
		if _, err := n.tasks.ActiveWorkers(""); err != nil {
			c.logger.Warn("pvestatd: active workers", "node", n.Name, "err", err)
		}
	}
}

// nodeOf returns the node or PVE's error for an unknown one.
func (c *Cluster) nodeOf(name string) (*Node, error) {
	n, ok := c.nodes[name]
	if !ok {
		return nil, api.Errorf(http.StatusInternalServerError, "hostname lookup '%s' failed - failed to get address info for: %s: Name or service not known", name, name)
	}
	return n, nil
}

func sortedNames[M ~map[string]V, V any](m M) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
