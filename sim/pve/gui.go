package pve

import (
	"mime"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// guiPage stands in for pveproxy's index.html.tpl: Ext JS, the Proxmox globals the template
// renders, pvemanagerlib.js (a stand-in: pvesnap's panel must work without PVE's classes), a
// login window when there is no ticket, and a viewport holding pvesnap's panel, which pvesnap
// injects after pvemanagerlib.js on :8009.
const guiPage = `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>[% NodeName %] - Proxmox Virtual Environment</title>
<link rel="stylesheet" type="text/css" href="/pve2/ext6/classic/theme-crisp/resources/theme-crisp-all.css">
<link rel="stylesheet" type="text/css" href="/pve2/ext6/packages/font-awesome/resources/font-awesome-all.css">
<script type="text/javascript" src="/pve2/ext6/ext-all.js"></script>
<script type="text/javascript" src="/pve2/ext6/classic/theme-crisp/theme-crisp.js"></script>
<script type="text/javascript">
Proxmox = {Setup: {auth_cookie_name: 'PVEAuthCookie'}, NodeName: '[% NodeName %]', UserName: '[% UserName %]',
  CSRFPreventionToken: '[% CSRFPreventionToken %]'};
</script>
<script type="text/javascript" src="/pve2/js/pvemanagerlib.js?ver=[% version %]"></script>
<script type="text/javascript">
Ext.onReady(function () {
  if (!Proxmox.UserName) {
    var w = Ext.create('Ext.window.Window', {title: 'Proxmox VE Login (simulated: root@pam / pvesnap)', width: 360, closable: false,
      items: [{xtype: 'form', bodyPadding: 10, items: [
        {xtype: 'textfield', name: 'username', fieldLabel: 'User name', value: 'root@pam'},
        {xtype: 'textfield', name: 'password', fieldLabel: 'Password', inputType: 'password'}]}],
      buttons: [{text: 'Login', handler: function () {
        Ext.Ajax.request({url: '/api2/json/access/ticket', method: 'POST', params: w.down('form').getValues(),
          success: function (r) { var d = Ext.decode(r.responseText).data;
            document.cookie = 'PVEAuthCookie=' + encodeURIComponent(d.ticket) + '; path=/; secure; samesite=lax';
            window.location.reload(); },
          failure: function () { Ext.Msg.alert('Login', 'login failed'); }});
      }}]});
    w.show();
    return;
  }
  Ext.create('Ext.container.Viewport', {layout: 'fit', items: [{xtype: 'pvesnapPanel'}]});
});
</script>
</head><body></body></html>`

// indexPage renders the GUI page the way pveproxy renders index.html.tpl: with a valid
// ticket cookie the page carries the user's name and a CSRF token ([% UserName %],
// [% CSRFPreventionToken %]); [% NodeName %] is the node.
func (n *Node) indexPage(req *request) *response {
	user, token := "", ""
	if t := extractAuthValue(strings.Join(req.Header.Values("Cookie"), "; "), "PVEAuthCookie"); t != "" {
		if u, err := n.c.access.keys.verifyTicket(t, time.Now()); err == nil {
			if csrf, err := n.c.access.keys.makeCSRF(u, time.Now()); err == nil {
				user, token = u, csrf
			}
		}
	}
	page := strings.NewReplacer("[% UserName %]", user, "[% CSRFPreventionToken %]", token, "[% NodeName %]", n.Name,
		"[% version %]", n.c.o.Release).Replace(guiPage)
	return &response{Code: 200, Header: http.Header{"Content-Type": {"text/html; charset=utf-8"}}, Body: []byte(page)}
}

// guiFile serves the GUI's static paths as pveproxy does from its aliases: /pve2/ext6/ from
// the Ext JS build, and a stand-in pvemanagerlib.js; nil when path is none of them.
func (n *Node) guiFile(path string) *response {
	switch {
	case path == "/pve2/js/pvemanagerlib.js":
		return &response{Code: 200, Header: http.Header{"Content-Type": {"application/javascript"}},
			Body: []byte("// pvemanagerlib.js stand-in: PVE's own classes are not part of the simulator\n")}
	case strings.HasPrefix(path, "/pve2/ext6/"):
		// Clean under "/" first: a path cannot climb out of the build directory.
		rel := filepath.Clean("/" + strings.TrimPrefix(path, "/pve2/ext6/"))
		b, err := os.ReadFile(filepath.Join(n.c.o.ExtJS, rel))
		if err != nil {
			p, _ := url.PathUnescape(path)
			return rawError(500, "unable to open file '"+p+"' - "+err.Error()+"\n")
		}
		ct := mime.TypeByExtension(filepath.Ext(rel))
		if ct == "" {
			ct = "application/octet-stream"
		}
		return &response{Code: 200, Header: http.Header{"Content-Type": {ct}}, Body: b}
	}
	return nil
}
