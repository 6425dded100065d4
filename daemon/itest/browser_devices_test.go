package itest

import (
	"strings"
	"testing"
	"time"
)

const storagesGrid = `Ext.ComponentQuery.query('pvesnapStorages')[0]`

// storageDevices opens the Storage mapping, waits for the devices under its storages and
// opens every row on them.
func (b *browser) storageDevices() {
	b.t.Helper()
	b.js(`var p = Ext.ComponentQuery.query('pvesnapPanel')[0]; p.setActiveTab(p.down('pvesnapStorages')); return true;`, nil)
	b.wait(`var g = `+storagesGrid+`, r = g.getStore().findRecord('storage', 'san1');
		return !!r && Ext.isArray(r.get('devices')) && r.get('devices').length > 0;`, 20*time.Second)
	b.js(`var g = `+storagesGrid+`, x = g.getPlugin('devices');
		g.getStore().each(function (r, i) { x.toggleRow(i, r); }); return true;`, nil)
}

// The Storage mapping shows what the devices under each storage say about themselves: the
// failure prediction the LU behind san1 reports is a warning on the row, with its text, and
// the row opens on the device: paths, identity, size and blocks, copy offload (refused, with
// the reason) and health with where it was read.
func TestBrowserDeviceHealth(t *testing.T) {
	b := newBrowser(t)
	b.e.hw("pve1").LU("sdb").SetIE(0x5D, 0x00)
	b.login(b.e.URL("pve1"), "root@pam", "", false)
	b.open("root", "pvesnap")
	b.storageDevices()
	var got struct {
		Row   string `json:"row"`
		Icon  bool   `json:"icon"`
		Red   bool   `json:"red"`
		Grid  string `json:"grid"`
		Calls int    `json:"calls"`
	}
	b.js(`var g = `+storagesGrid+`, v = g.getView(), n = v.getNode(g.getStore().findExact('storage', 'san1'));
		return {row: n.textContent, icon: !!n.querySelector('.critical .fa-exclamation-triangle'), red: !!n.querySelector('.critical'),
			grid: v.el.dom.innerText, calls: (window.pvesnapXHR || []).filter(function (c) { return /\/pvesnap\/devices/.test(c.url); }).length};`, &got)
	const warn = "sdb: failing: failure prediction threshold exceeded (ASC/ASCQ 0x5D/0x00)"
	if !strings.Contains(got.Row, warn) || !got.Icon || !got.Red {
		t.Errorf("san1's row %q (warning sign %v): want the warning %q", got.Row, got.Icon, warn)
	}
	for _, want := range []string{"Physical volume /dev/sdb", "sdb: PURE FlashArray, serial ", "firmware 8888", "1.00 TiB, blocks 512 B, PI none",
		"Copy offload: EXTENDED COPY: 1 segment(s)/command", "not offloaded: sdb: it reports itself failing (failure prediction threshold exceeded",
		"Health:", "failing: failure prediction threshold exceeded (ASC/ASCQ 0x5D/0x00) (SCSI Informational Exceptions log page)"} {
		if !strings.Contains(got.Grid, want) {
			t.Errorf("the opened row lacks %q:\n%s", want, got.Grid)
		}
	}
	if got.Calls != 1 {
		t.Errorf("%d calls to /devices, want 1", got.Calls)
	}
	b.shot("storage-mapping.png")
	// Refresh asks the devices again: the LU no longer predicts its failure.
	b.e.hw("pve1").LU("sdb").SetIE(0, 0)
	b.js(storagesGrid+`.down('button').el.dom.click(); return true;`, nil)
	b.wait(`var r = `+storagesGrid+`.getStore().findRecord('storage', 'san1'); return !!r && r.get('warning') === '' && /sdb: ok/.test(r.get('health'));`, 20*time.Second)
}
