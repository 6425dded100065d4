package itest

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pvesnap/pvesnap/lab/webdriver"
	simpve "github.com/pvesnap/pvesnap/sim/pve"
	"github.com/pvesnap/pvesnap/sim/volstore"
)

// extjsDir is Ext JS GPL from npm, installed by lab/deps.sh.
func extjsDir() string {
	if d := os.Getenv("PVESNAP_EXTJS"); d != "" {
		return d
	}
	return "/var/tmp/pvesnap-npm/node_modules/extjs-gpl/build"
}

// TestBrowserPanel drives the panel in headless Chromium on the GUI page pvesnap passes
// through (and injects itself into): the tree with its deleted and predates-disk markers, the
// disabled Restore button with its tooltip, a snapshot taken and a restore started from the
// panel, each followed to the end of its task.
func TestBrowserPanel(t *testing.T) {
	if err := webdriver.Available(); err != nil {
		browserUnavailable(t, err)
	}
	if _, err := os.Stat(filepath.Join(extjsDir(), "ext-all.js")); err != nil {
		browserUnavailable(t, fmt.Errorf("Ext JS GPL not installed (lab/deps.sh installs npm extjs-gpl): %w", err))
	}
	e := StartWith(t, simpve.Options{ExtJS: extjsDir()})
	e.inventoryVM()
	fa := e.fa.Array
	// A deleted VM with a snapshot of its disk; a snapshot older than VM 100's disk.
	st := e.Sim.Store("pve1", "san1")
	must(t, st.Create("vm-300-disk-0", 1<<30, volstore.Meta{Created: time.Now().Add(-5 * time.Hour).Unix()}))
	must(t, e.Sim.WriteVMConfig("pve1", 300, fmt.Sprintf("name: legacy\nmeta: ctime=%d\nvirtio0: san1:vm-300-disk-0\n", time.Now().Add(-5*time.Hour).Unix())))
	root := e.Root("pve1")
	if r, _ := root.Do("GET", "/nodes/pve1/pvesnap/vms", nil); r.Code != 200 {
		t.Fatalf("vms: %d", r.Code)
	}
	fa.Now = func() time.Time { return time.Now().Add(-3 * time.Hour) }
	_, err := fa.SnapshotVolumes("before-disk", "pve-san1")
	must(t, err)
	fa.Now = time.Now
	_, err = fa.SnapshotVolumes("nightly", "pve-san1")
	must(t, err)
	must(t, os.Remove(filepath.Join(e.Sim.NodePaths("pve1").PVE, "nodes", "pve1", "qemu-server", "300.conf")))
	must(t, st.Destroy("vm-300-disk-0", false))
	if r, _ := root.Do("GET", "/nodes/pve1/pvesnap/vms", url.Values{"refresh": {"1"}}); r.Code != 200 {
		t.Fatalf("refresh: %d", r.Code)
	}

	s, err := webdriver.Start(1280, 800)
	must(t, err)
	defer s.Close()
	shots := os.Getenv("PVESNAP_SCREENSHOTS")
	if shots == "" {
		shots = t.TempDir()
	}
	shot := func(name string) {
		if err := s.Screenshot(filepath.Join(shots, name)); err != nil {
			t.Errorf("screenshot %s: %v", name, err)
		}
	}
	base := e.URL("pve1")
	ticket, _, err := e.Sim.Ticket("root@pam")
	must(t, err)
	must(t, s.Navigate(base+"/pvesnap/ui/pvesnap.js")) // a page of the origin, to set its cookie
	must(t, s.SetCookie("PVEAuthCookie", url.PathEscape(ticket)))
	must(t, s.Navigate(base+"/"))
	tree := `Ext.ComponentQuery.query('pvesnapVMTree')[0]`
	if err := s.WaitFor(`return !!(window.Ext && window.PVESnap && PVESnap.loaded && `+tree+` && `+tree+`.getRootNode().childNodes.length >= 2)`, 30*time.Second); err != nil {
		var diag any
		s.Eval(`return {ext: !!window.Ext, ps: !!window.PVESnap, loaded: window.PVESnap && PVESnap.loaded, html: document.documentElement.outerHTML.slice(0, 3000),
			tree: !!(window.Ext && Ext.ComponentQuery.query('pvesnapVMTree')[0]), text: document.body.innerText.slice(0, 500), proxmox: window.Proxmox};`, &diag)
		shot("failed.png")
		t.Fatalf("%v\n%v", err, diag)
	}

	var rows []map[string]string
	must(t, s.Eval(`return `+tree+`.getRootNode().childNodes.map(function (n) { return {text: n.get('text'), marker: n.get('marker') || '', state: n.get('state')}; });`, &rows))
	if len(rows) != 2 || rows[0]["text"] != "100 (web)" || rows[0]["state"] != "live" || rows[1]["text"] != "300 (legacy)" || !strings.HasPrefix(rows[1]["marker"], "deleted ") {
		t.Fatalf("tree rows: %v", rows)
	}
	// VM 100's restore points: the old snapshot carries the predates-disk marker on screen.
	must(t, s.Eval(`var n = `+tree+`.getRootNode().findChild('vmid', 100); n.expand(); return true;`, nil))
	must(t, s.WaitFor(`var n = `+tree+`.getRootNode().findChild('vmid', 100); return n.childNodes.length >= 2;`, 20*time.Second))
	must(t, s.WaitFor(`return document.body.innerText.indexOf('predates disk scsi0') >= 0 && document.body.innerText.indexOf('fa1:nightly') >= 0;`, 10*time.Second))
	selectPoint := func(id string) {
		t.Helper()
		must(t, s.Eval(`var n = `+tree+`.getRootNode().findChild('vmid', 100).findChild('point', arguments[0]); `+tree+`.getSelectionModel().select(n); return true;`, nil, id))
	}
	var btn struct {
		Disabled bool   `json:"disabled"`
		Tip      string `json:"tip"`
		DOM      bool   `json:"dom"`
	}
	restoreBtn := tree + `.down('#restore')`
	readBtn := `var b = ` + restoreBtn + `; return {disabled: b.isDisabled(), tip: b.pvesnapTooltip || '', dom: b.el.hasCls('x-btn-disabled')};`
	selectPoint("fa1:before-disk")
	must(t, s.Eval(readBtn, &btn))
	if !btn.Disabled || !btn.DOM || !strings.Contains(btn.Tip, "taken before disk scsi0 was created") {
		t.Fatalf("Restore on a predating snapshot: %+v", btn)
	}
	selectPoint("fa1:nightly")
	must(t, s.Eval(readBtn, &btn))
	if btn.Disabled || btn.DOM {
		t.Fatalf("Restore on a good snapshot: %+v", btn)
	}
	shot("tree.png")

	// Snapshot now, from the panel, followed to its end in the task window.
	must(t, s.Eval(`PVESnap.ownTaskWindow = true; var n = `+tree+`.getRootNode().findChild('vmid', 100); `+tree+`.getSelectionModel().select(n);
		`+tree+`.down('#snapshot').el.dom.click(); return true;`, nil))
	taskDone := `var w = Ext.ComponentQuery.query('pvesnapTaskWindow').pop(); return !!(w && w.taskStatus && w.taskStatus.status === 'stopped');`
	must(t, s.WaitFor(taskDone, 60*time.Second))
	var status string
	must(t, s.Eval(`return Ext.ComponentQuery.query('pvesnapTaskWindow').pop().down('#status').el.dom.textContent;`, &status))
	if status != "stopped: OK" && !strings.HasPrefix(status, "stopped: WARNINGS") {
		t.Fatalf("snapshot task shows %q", status)
	}
	must(t, s.Eval(`Ext.ComponentQuery.query('pvesnapTaskWindow').forEach(function (w) { w.close(); }); return true;`, nil))
	must(t, s.WaitFor(`return document.body.innerText.indexOf('fa1:pvesnap-100-') >= 0;`, 20*time.Second))

	// Restore as a new VM from the dialog; the task runs to its end (here it fails at the
	// device wait, there being no SCSI bus; the lab runs the real thing) and the window says how.
	selectPoint("fa1:nightly")
	must(t, s.Eval(restoreBtn+`.el.dom.click(); return true;`, nil))
	must(t, s.WaitFor(`return Ext.ComponentQuery.query('pvesnapRestore').length === 1;`, 10*time.Second))
	must(t, s.Eval(`var w = Ext.ComponentQuery.query('pvesnapRestore')[0]; w.down('[name=newid]').setValue(150); w.down('[name=link-down]').setValue(true); return true;`, nil))
	shot("restore-dialog.png")
	must(t, s.Eval(`Ext.ComponentQuery.query('pvesnapRestore')[0].down('#submit').el.dom.click(); return true;`, nil))
	must(t, s.WaitFor(taskDone, 60*time.Second))
	var logText string
	must(t, s.Eval(`var w = Ext.ComponentQuery.query('pvesnapTaskWindow').pop(); return w.down('#status').el.dom.textContent + '\n' + w.down('#log').getValue();`, &logText))
	if !strings.HasPrefix(logText, "stopped: ") || !strings.Contains(logText, "restore new of VM 100") || !strings.Contains(logText, "link") && !strings.Contains(logText, "VMID 150 reserved") {
		t.Fatalf("restore task window:\n%s", logText)
	}
	shot("restore-task.png")
}

// browserUnavailable skips, unless the run requires the browser tests (make test does).
func browserUnavailable(t *testing.T, err error) {
	t.Helper()
	if os.Getenv("PVESNAP_REQUIRE_BROWSER") == "1" {
		t.Fatalf("browser test required but cannot run: %v", err)
	}
	t.Skipf("SKIP: %v", err)
}
