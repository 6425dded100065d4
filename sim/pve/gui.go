package pve

import (
	"embed"
	"mime"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// guiPage stands in for pveproxy's index.html.tpl: Ext JS, gettext (English, or the locale
// of the PVELangCookie when the node has one: only the test pseudo-locale "qps", picked in
// the page rather than by the server as pveproxy does), the Proxmox globals the template renders,
// proxmoxlib.js and pvemanagerlib.js (stand-ins, see guistub/), a login window when there is
// no ticket, and the workspace. pvesnap injects its panel after pvemanagerlib.js on :8009.
const guiPage = `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>[% NodeName %] - Proxmox Virtual Environment</title>
<link rel="stylesheet" type="text/css" href="/pve2/ext6/classic/theme-crisp/resources/theme-crisp-all.css">
<link rel="stylesheet" type="text/css" href="/pve2/ext6/packages/font-awesome/resources/font-awesome-all.css">
<script type="text/javascript">
if (/(?:^|; )PVELangCookie=qps(?:;|$)/.test(document.cookie)) {
  document.write('<script type="text/javascript" src="/pve2/locale/pve-lang-qps.js"><\/script>');
} else {
  window.gettext = function (message) { return message; };
  window.ngettext = function (singular, plural, count) { return count === 1 ? singular : plural; };
  window.pgettext = function (context, message) { return message; };
  window.npgettext = function (context, singular, plural, count) { return count === 1 ? singular : plural; };
}
</script>
<script type="text/javascript" src="/pve2/ext6/ext-all.js"></script>
<script type="text/javascript" src="/pve2/ext6/classic/theme-crisp/theme-crisp.js"></script>
<script type="text/javascript">
Proxmox = {Setup: {auth_cookie_name: 'PVEAuthCookie'}, NodeName: '[% NodeName %]', UserName: '[% UserName %]',
  CSRFPreventionToken: '[% CSRFPreventionToken %]'};
</script>
<script type="text/javascript" src="/proxmoxlib.js?ver=[% version %]"></script>
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
  Ext.create('PVE.StdWorkspace');
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

//go:embed guistub/*.js
var guiStub embed.FS

// guiStubs are the stand-ins of proxmoxlib.js, pvemanagerlib.js and the test pseudo-locale.
var guiStubs = map[string]string{"/proxmoxlib.js": "guistub/proxmoxlib.js", "/pve2/js/pvemanagerlib.js": "guistub/pvemanagerlib.js",
	"/pve2/locale/pve-lang-qps.js": "guistub/pve-lang-qps.js"}

// guiFile serves the GUI's static paths as pveproxy does from its aliases: /pve2/ext6/ from
// the Ext JS build, and the stand-ins (guiStubs); nil when path is none of them.
func (n *Node) guiFile(path string) *response {
	switch {
	case guiStubs[path] != "":
		b, _ := guiStub.ReadFile(guiStubs[path])
		return &response{Code: 200, Header: http.Header{"Content-Type": {"application/javascript"}}, Body: b}
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
