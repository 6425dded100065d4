package pve_test

import (
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	simpve "github.com/pvesnap/pvesnap/sim/pve"
)

// TestGUIPage checks the GUI stand-in the browser test and the demo log in through: the page
// carries the user and a CSRF token only with a valid ticket cookie (the token then works for
// a write, as the GUI uses it), the stand-ins of the stock GUI's code are served, and
// /pve2/ext6/ serves the Ext JS build and nothing above it.
func TestGUIPage(t *testing.T) {
	dir := t.TempDir()
	ext := filepath.Join(dir, "extjs")
	if err := os.MkdirAll(ext, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ext, "ext-all.js"), []byte("var Ext = {};\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "secret"), []byte("not for the web\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, cl := startClusterWith(t, simpve.Options{ExtJS: ext}, "pve1")
	get := func(path, cookie string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", c.URL("pve1")+path, nil)
		if cookie != "" {
			req.AddCookie(&http.Cookie{Name: "PVEAuthCookie", Value: url.PathEscape(cookie)})
		}
		r, err := cl.HTTP.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		b, _ := io.ReadAll(r.Body)
		return r.StatusCode, string(b)
	}

	code, page := get("/", "")
	if code != 200 || !strings.Contains(page, "UserName: ''") || !strings.Contains(page, "CSRFPreventionToken: ''") ||
		!strings.Contains(page, "<title>pve1 - Proxmox Virtual Environment</title>") || !strings.Contains(page, "pvemanagerlib.js?ver=9.1.7") {
		t.Fatalf("page without a ticket: %d\n%s", code, page)
	}
	ticket, _, err := c.Ticket("root@pam")
	if err != nil {
		t.Fatal(err)
	}
	if _, page := get("/", ticket[:len(ticket)-4]+"AAAA"); !strings.Contains(page, "UserName: ''") {
		t.Errorf("a forged ticket got a user onto the page")
	}
	_, page = get("/", ticket)
	m := regexp.MustCompile(`UserName: 'root@pam',\s+CSRFPreventionToken: '([^']+)'`).FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("page with a ticket carries no user and token:\n%s", page)
	}
	cl.Ticket, cl.CSRF = ticket, m[1]
	r, err := cl.Do("POST", "/nodes/pve1/qemu", url.Values{"vmid": {"150"}})
	if err != nil {
		t.Fatal(err)
	}
	if r.Code != 200 {
		t.Errorf("a write with the page's CSRF token: %d %s", r.Code, r.Status)
	}

	// The stand-ins of the stock GUI's code load in the template's order: the toolkit, then
	// pve-manager (a panel is injected after it).
	if i, j := strings.Index(page, "/proxmoxlib.js"), strings.Index(page, "/pve2/js/pvemanagerlib.js"); i < 0 || j < i {
		t.Errorf("proxmoxlib.js then pvemanagerlib.js: %d %d", i, j)
	}
	for path, want := range map[string]string{"/proxmoxlib.js": "Ext.define('Proxmox.Utils'", "/pve2/js/pvemanagerlib.js": "Ext.define('PVE.panel.Config'",
		"/pve2/locale/pve-lang-qps.js": "function gettext("} {
		if code, body := get(path, ""); code != 200 || !strings.Contains(body, want) {
			t.Errorf("%s: %d, lacks %q", path, code, want)
		}
	}
	if code, body := get("/pve2/ext6/ext-all.js", ""); code != 200 || body != "var Ext = {};\n" {
		t.Errorf("ext-all.js: %d %q", code, body)
	}
	for _, p := range []string{"/pve2/ext6/../secret", "/pve2/ext6/%2e%2e/secret", "/pve2/ext6/..%2fsecret"} {
		if _, body := get(p, ""); strings.Contains(body, "not for the web") {
			t.Errorf("%s served a file above the Ext JS build", p)
		}
	}
}
