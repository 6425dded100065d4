// Package www holds the panel pvesnap adds to the Proxmox VE web UI (pvesnap.js), embedded in
// the binary, served at /pvesnap/ui/ and loaded into the GUI page by Inject.
package www

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"net/http"
	"strings"
	"time"
)

//go:embed pvesnap.js
var assets embed.FS

// Prefix is where the assets are served.
const Prefix = "/pvesnap/ui/"

// Script returns the panel's code.
func Script() []byte {
	b, _ := assets.ReadFile("pvesnap.js")
	return b
}

// Version is a short hash of the panel's code, for cache busting.
func Version() string {
	h := sha256.Sum256(Script())
	return hex.EncodeToString(h[:6])
}

// Tag is the script element that loads the panel from src's directory.
func Tag(dir string) string {
	return `<script type="text/javascript" src="` + dir + `pvesnap.js?ver=` + Version() + `"></script>`
}

// Inject adds the panel's script to the GUI page right after pvemanagerlib.js (so PVE's
// classes exist when the overrides run), or before </head> when the page has no such tag.
// A page that already loads it is returned unchanged.
func Inject(page []byte) []byte {
	if bytes.Contains(page, []byte("pvesnap.js")) {
		return page
	}
	tag := []byte("\n    " + Tag(Prefix))
	if i := bytes.Index(page, []byte("pvemanagerlib.js")); i >= 0 {
		if j := bytes.Index(page[i:], []byte("</script>")); j >= 0 {
			at := i + j + len("</script>")
			return append(append(append([]byte(nil), page[:at]...), tag...), page[at:]...)
		}
	}
	if i := bytes.Index(page, []byte("</head>")); i >= 0 {
		return append(append(append([]byte(nil), page[:i]...), append(tag, '\n')...), page[i:]...)
	}
	return page
}

// Static serves the assets (unauthenticated, like pveproxy's /pve2/js/).
type Static struct{}

// Prefix implements server.Static.
func (Static) Prefix() string { return Prefix }

var started = time.Now()

func (Static) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, Prefix)
	if name != "pvesnap.js" || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/javascript; charset=utf-8")
	w.Header().Set("Cache-Control", "max-age=86400")
	http.ServeContent(w, r, name, started, bytes.NewReader(Script()))
}
