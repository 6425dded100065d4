package www

import (
	"net/http/httptest"
	"strings"
	"testing"
)

func TestInject(t *testing.T) {
	page := "<html><head>\n<script type=\"text/javascript\" src=\"/pve2/js/pvemanagerlib.js?ver=9.1.1\"></script>\n<script>Ext.onReady(...)</script>\n</head><body></body></html>"
	out := string(Inject([]byte(page)))
	i, j := strings.Index(out, "pvemanagerlib.js"), strings.Index(out, "/pvesnap/ui/pvesnap.js?ver="+Version())
	if j < 0 || j < i || j > strings.Index(out, "Ext.onReady") {
		t.Fatalf("script not right after pvemanagerlib.js:\n%s", out)
	}
	if string(Inject([]byte(out))) != out {
		t.Fatal("injected twice")
	}
	if o := string(Inject([]byte("<html><head></head></html>"))); !strings.Contains(o, "pvesnap.js") || strings.Index(o, "pvesnap.js") > strings.Index(o, "</head>") {
		t.Fatalf("no pvemanagerlib.js: %s", o)
	}
	if o := Inject([]byte("plain text")); string(o) != "plain text" {
		t.Fatal("a page without head changed")
	}
}

func TestStatic(t *testing.T) {
	rec := httptest.NewRecorder()
	Static{}.ServeHTTP(rec, httptest.NewRequest("GET", "/pvesnap/ui/pvesnap.js", nil))
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), "Ext.define('PVESnap.VMTree'") || !strings.HasPrefix(rec.Header().Get("Content-Type"), "application/javascript") {
		t.Fatalf("%d %s", rec.Code, rec.Header())
	}
	rec = httptest.NewRecorder()
	Static{}.ServeHTTP(rec, httptest.NewRequest("GET", "/pvesnap/ui/../www.go", nil))
	if rec.Code != 404 {
		t.Fatalf("other files: %d", rec.Code)
	}
}
