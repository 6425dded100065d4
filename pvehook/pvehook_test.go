package pvehook

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The shape of pve-manager's index.html.tpl around the scripts (PVE 8/9).
const template = `<!DOCTYPE html>
<html>
  <head>
    <script type="text/javascript" src="/pve2/ext6/ext-all.js?ver=7.0.0"></script>
    <script type="text/javascript" src="/proxmoxlib.js?ver=[% wtversion %]"></script>
    <script type="text/javascript" src="/pve2/js/pvemanagerlib.js?ver=[% version %]"></script>
    <script type="text/javascript" src="/pve2/ext6/locale/locale-[% lang %].js?ver=7.0.0"></script>
    <script type="text/javascript">
    if (typeof(PVE) === 'undefined') PVE = {};
    Ext.onReady(function() { Ext.create('PVE.StdWorkspace');});
    </script>
  </head>
  <body></body>
</html>
`

func TestInstallRemove(t *testing.T) {
	dir := t.TempDir()
	p := Paths{Template: filepath.Join(dir, "index.html.tpl"), JSDir: filepath.Join(dir, "js")}
	if err := Install(p); !errors.Is(err, ErrNoGUI) {
		t.Fatalf("without pve-manager: %v", err)
	}
	os.WriteFile(p.Template, []byte(template), 0o644)
	if err := Install(p); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p.Template)
	s := string(b)
	lib, tag, locale := strings.Index(s, "pvemanagerlib.js"), strings.Index(s, "/pve2/js/pvesnap.js?ver="), strings.Index(s, "locale-")
	if !(lib < tag && tag < locale) {
		t.Fatalf("tag not right after pvemanagerlib.js:\n%s", s)
	}
	if js, err := os.ReadFile(filepath.Join(p.JSDir, "pvesnap.js")); err != nil || !strings.Contains(string(js), "PVESnap") {
		t.Fatalf("script: %v", err)
	}
	if inst, cur, err := Status(p); !inst || !cur || err != nil {
		t.Fatalf("status %v %v %v", inst, cur, err)
	}
	// Re-applying (the dpkg trigger after a pve-manager upgrade, or a newer pvesnap) keeps one line.
	if err := Install(p); err != nil {
		t.Fatal(err)
	}
	b2, _ := os.ReadFile(p.Template)
	if string(b2) != s || strings.Count(string(b2), "pvesnap.js") != 1 {
		t.Fatalf("installed twice:\n%s", b2)
	}
	// A pve-manager upgrade replaces the template: the trigger puts the line back.
	os.WriteFile(p.Template, []byte(template), 0o644)
	if inst, _, _ := Status(p); inst {
		t.Fatal("status after the template was replaced")
	}
	Install(p)
	if err := Remove(p); err != nil {
		t.Fatal(err)
	}
	b3, _ := os.ReadFile(p.Template)
	if string(b3) != template {
		t.Fatalf("removal left changes:\n%s", b3)
	}
	if _, err := os.Stat(filepath.Join(p.JSDir, "pvesnap.js")); !os.IsNotExist(err) {
		t.Fatal("script left behind")
	}
	if err := Remove(p); err != nil {
		t.Fatalf("removing twice: %v", err)
	}
}
