package restore

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pvesnap/pvesnap/daemon/arrays"
	"github.com/pvesnap/pvesnap/daemon/inventory"
	"github.com/pvesnap/pvesnap/daemon/pure"
	"github.com/pvesnap/pvesnap/sim/flasharray"
)

// cluster is two nodes (pve1, pve2) of one cluster filesystem with a simulated array: each a
// Restorer over a fake SAN of its own.
type cluster struct {
	fa    *flasharray.Array
	pve   string
	nodes map[string]*Restorer
	sans  map[string]*san
	cli   *pure.Client
}

func newCluster(t *testing.T) *cluster {
	root := t.TempDir()
	c := &cluster{pve: filepath.Join(root, "pve"), nodes: map[string]*Restorer{}, sans: map[string]*san{}}
	must(t, os.MkdirAll(c.pve, 0o755))
	must(t, os.WriteFile(filepath.Join(c.pve, "pve-root-ca.pem"), []byte("the cluster's CA"), 0o644))
	must(t, os.WriteFile(filepath.Join(c.pve, ".members"), []byte(`{"nodename":"pve1","version":3,"cluster":{"name":"lab","version":2,"nodes":2,"quorate":1},
		"nodelist":{"pve1":{"id":1,"online":1,"ip":"10.0.0.1"},"pve2":{"id":2,"online":1,"ip":"10.0.0.2"}}}`), 0o644))
	c.fa = flasharray.New("fa-lab", nil)
	srv, err := flasharray.Listen(c.fa, "127.0.0.1:0", filepath.Join(root, "fa"))
	must(t, err)
	t.Cleanup(func() { srv.Close() })
	tok, _ := os.ReadFile(srv.TokenFile)
	ac := &arrays.Config{PVE: c.pve}
	must(t, ac.Add(arrays.Array{ID: "fa1", Type: arrays.TypeFlashArray, Endpoint: srv.URL, CA: srv.CAFile}, strings.TrimSpace(string(tok))))
	c.cli, err = pure.New(srv.URL, strings.TrimSpace(string(tok)), pure.Options{CAFile: srv.CAFile})
	must(t, err)
	for _, n := range []string{"pve1", "pve2"} {
		iscsi := filepath.Join(root, n, "iscsi")
		must(t, os.MkdirAll(iscsi, 0o755))
		must(t, os.WriteFile(filepath.Join(iscsi, "initiatorname.iscsi"), []byte("InitiatorName=iqn.1993-08.org.debian:01:"+n+"\n"), 0o644))
		must(t, c.fa.CreateHost(n, []string{"iqn.1993-08.org.debian:01:" + n}, nil, nil))
		s := newSAN(t)
		c.sans[n] = s
		inv := &inventory.Inventory{Node: n, PVE: c.pve, Arrays: ac}
		c.nodes[n] = &Restorer{Node: n, Inv: inv, NodePaths: arrays.NodePaths{ISCSI: iscsi}, Host: s.host(true),
			VMs: VMs{PVE: c.pve, Node: n}, DB: openDB(t), Logger: slog.New(slog.DiscardHandler)}
	}
	return c
}

// tempVolume makes a temporary volume of node's job and returns its serial.
func (c *cluster) tempVolume(t *testing.T, node, job string) (string, string) {
	id, err := NewIdentity(c.pve, node)
	must(t, err)
	name := id.TempVolume(job, 0)
	v, err := c.cli.CreateVolume(ctx, name, 1<<20)
	must(t, err)
	return name, v.Serial
}

func logTo(lines *[]string) context.Context {
	return context.WithValue(ctx, logKey{}, func(f string, a ...any) { *lines = append(*lines, fmt.Sprintf(f, a...)) })
}

// SafeMode refuses the eradication of a temporary volume: the undo is done (the volume is
// destroyed), the task log says why and on which date the array eradicates it, and pvesnap
// lists it as pending; a sweep names it too.
func TestSafeModePendingEradication(t *testing.T) {
	c := newCluster(t)
	c.fa.SafeMode = true
	c.fa.DisabledDelay = 7 * 24 * time.Hour
	r := c.nodes["pve1"]
	name, serial := c.tempVolume(t, "pve1", "abc1234")
	var log []string
	if err := r.Exec(logTo(&log), Action{Kind: "array-destroy-volume", Args: map[string]string{"array": "fa1", "volume": name}}); err != nil {
		t.Fatalf("undo under SafeMode: %v", err)
	}
	want := time.Now().Add(c.fa.DisabledDelay).UTC()
	got := regexp.MustCompile(`array fa1 refuses to eradicate ` + name + ` \(Eradication is disabled\.; SafeMode: manual eradication is disabled on the array\): it stays destroyed, its name taken, until the array eradicates it by itself on (\d{4}-\d\d-\d\d \d\d:\d\d) UTC`).FindStringSubmatch(strings.Join(log, "\n"))
	if got == nil {
		t.Fatalf("task log:\n%s", strings.Join(log, "\n"))
	}
	if at, err := time.Parse("2006-01-02 15:04", got[1]); err != nil || at.Sub(want).Abs() > 2*time.Minute {
		t.Fatalf("eradication date %s, want about %s", got[1], want)
	}
	v, err := c.cli.Volume(ctx, name)
	if err != nil || !v.Destroyed {
		t.Fatalf("the volume is not destroyed: %+v %v", v, err)
	}
	pending, err := r.Pending(ctx)
	must(t, err)
	if len(pending) != 1 || pending[0].Volume != name || pending[0].Serial != serial || pending[0].Job != "abc1234" ||
		pending[0].Manual != "all-disabled" || time.Unix(pending[0].Eradicates, 0).Sub(want).Abs() > time.Minute {
		t.Fatalf("pending %+v", pending)
	}
	// An array that cannot be asked is a row of its own, not a failure of the whole list.
	must(t, r.Inv.Arrays.Add(arrays.Array{ID: "fz", Type: arrays.TypeFlashArray, Endpoint: "https://127.0.0.1:1"}, "token-0123456"))
	pending, err = r.Pending(ctx)
	must(t, err)
	if len(pending) != 2 || pending[1].Array != "fz" || !strings.Contains(pending[1].Error, "unreachable") {
		t.Fatalf("pending with an unreachable array: %+v", pending)
	}
	must(t, r.Inv.Arrays.Remove("fz"))
	var sweepLog []string
	if _, err := r.Sweep(ctx, true, 0, func(f string, a ...any) { sweepLog = append(sweepLog, fmt.Sprintf(f, a...)) }); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(sweepLog, "\n"), name+" is destroyed, pending eradication by the array on "+got[1]) {
		t.Fatalf("sweep log:\n%s", strings.Join(sweepLog, "\n"))
	}
}

// A copy an earlier pvesnap connected to a whole host group: the disconnect asks the peers,
// each node removes its own stale devices once the array presents the volume no more, and
// the request goes when every member is done. A request cannot take a device the array
// still presents, nor one of a volume that is not pvesnap's.
func TestHostGroupDevicesCleanedThroughPeers(t *testing.T) {
	c := newCluster(t)
	must(t, c.fa.CreateHostGroup("pve-cluster", "pve1", "pve2"))
	name, serial := c.tempVolume(t, "pve1", "abc1234")
	_, err := c.cli.Connect(ctx, name, pure.Target{HostGroup: "pve-cluster"})
	must(t, err)
	c.sans["pve1"].path("sdc", serial)
	c.sans["pve2"].path("sdh", serial)
	// The request waits while the array still presents the volume: nothing is removed.
	must(t, c.nodes["pve1"].RequestPeerCleanup(serial, "fa1", name, "pve-cluster"))
	if err := c.nodes["pve2"].CleanStaleDevices(ctx, noLog); err == nil || !strings.Contains(err.Error(), "still presents") || c.sans["pve2"].deleted("sdh") {
		t.Fatalf("cleanup while connected: %v", err)
	}
	// The journal of an earlier pvesnap: disconnect from the group, without a serial.
	var log []string
	must(t, c.nodes["pve1"].Exec(logTo(&log), Action{Kind: "array-disconnect", Args: map[string]string{"array": "fa1", "volume": name, "host": "", "hostgroup": "pve-cluster"}}))
	if !c.sans["pve1"].deleted("sdc") || !strings.Contains(strings.Join(log, "\n"), "asked the cluster's nodes to remove their devices of "+name) {
		t.Fatalf("disconnecting node: devices %v, log %v", c.sans["pve1"].gone, log)
	}
	must(t, c.nodes["pve2"].CleanStaleDevices(ctx, noLog))
	if !c.sans["pve2"].deleted("sdh") {
		t.Fatal("the peer's stale device stayed")
	}
	dir := filepath.Join(c.pve, "priv", "pvesnap", "stale-devices", serial)
	if _, err := os.Stat(filepath.Join(dir, "done-pve2")); err != nil {
		t.Fatalf("pve2 not marked done: %v", err)
	}
	must(t, c.nodes["pve1"].CleanStaleDevices(ctx, noLog))
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("request kept after every member was done: %v", err)
	}
	// A request naming a volume that is not pvesnap's takes nothing.
	c.sans["pve2"].path("sdk", "6C1B16CE1C034D1C000B9FAD")
	must(t, c.nodes["pve1"].RequestPeerCleanup("6C1B16CE1C034D1C000B9FAD", "fa1", "pve-san1", "pve-cluster"))
	if err := c.nodes["pve2"].CleanStaleDevices(ctx, noLog); err == nil || c.sans["pve2"].deleted("sdk") {
		t.Fatalf("a request for the storage's own LUN: %v", err)
	}
}

// The disconnect of a copy connected to this node's host removes what came back of its
// devices since host-remove-devices ran (here: a path a rescan brought back).
func TestDisconnectRemovesReappearedDevices(t *testing.T) {
	c := newCluster(t)
	name, serial := c.tempVolume(t, "pve1", "abc1234")
	_, err := c.cli.Connect(ctx, name, pure.Target{Host: "pve1"})
	must(t, err)
	c.sans["pve1"].path("sdd", serial)
	must(t, c.nodes["pve1"].Exec(ctx, Action{Kind: "array-disconnect", Args: map[string]string{"array": "fa1", "volume": name, "host": "pve1", "serial": serial}}))
	if !c.sans["pve1"].deleted("sdd") {
		t.Fatal("the path came back after the disconnect and stayed")
	}
	if cs, _ := c.cli.Connections(ctx, name, nil); len(cs) != 0 {
		t.Fatalf("still connected: %+v", cs)
	}
}
