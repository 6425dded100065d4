// Package pvehook puts pvesnap's panel into pveproxy's own GUI on :8006: the panel's script
// goes into /usr/share/pve-manager/js/ (served as /pve2/js/) and one marked line loading it
// into index.html.tpl, right after pvemanagerlib.js. The package's dpkg trigger re-applies it
// when pve-manager replaces the template; removal strips exactly the marked line. On :8009
// the daemon injects the panel itself and none of this is needed.
package pvehook

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/pvesnap/pvesnap/www"
)

// Paths of pve-manager's GUI files.
type Paths struct {
	Template string // /usr/share/pve-manager/index.html.tpl
	JSDir    string // /usr/share/pve-manager/js
}

// Default are pve-manager's paths.
var Default = Paths{Template: "/usr/share/pve-manager/index.html.tpl", JSDir: "/usr/share/pve-manager/js"}

// marker ends the line pvesnap adds, so it can be found and removed exactly.
const marker = "<!-- pvesnap: added by the pvesnap package, removed with it -->"

func (p Paths) line() []byte {
	return []byte(www.Tag("/pve2/js/") + marker)
}

// ErrNoGUI: pve-manager is not installed here.
var ErrNoGUI = errors.New("pve-manager's GUI template not found")

// Install writes the script and adds its line to the template (replacing an older line).
func Install(p Paths) error {
	tpl, err := os.ReadFile(p.Template)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%w (%s)", ErrNoGUI, p.Template)
	}
	if err != nil {
		return err
	}
	if err := writeAtomic(filepath.Join(p.JSDir, "pvesnap.js"), www.Script(), 0o644); err != nil {
		return err
	}
	out := strip(tpl)
	i := bytes.Index(out, []byte("pvemanagerlib.js"))
	if i < 0 {
		return fmt.Errorf("%s: no pvemanagerlib.js script tag to add the panel after", p.Template)
	}
	j := bytes.Index(out[i:], []byte("</script>"))
	if j < 0 {
		return fmt.Errorf("%s: unterminated pvemanagerlib.js script tag", p.Template)
	}
	at := i + j + len("</script>")
	patched := append(append(append([]byte(nil), out[:at]...), append([]byte("\n    "), p.line()...)...), out[at:]...)
	if bytes.Equal(patched, tpl) {
		return nil
	}
	return writeAtomic(p.Template, patched, modeOf(p.Template))
}

// Remove strips the line and deletes the script; both may already be gone.
func Remove(p Paths) error {
	tpl, err := os.ReadFile(p.Template)
	if err == nil {
		if out := strip(tpl); !bytes.Equal(out, tpl) {
			if err := writeAtomic(p.Template, out, modeOf(p.Template)); err != nil {
				return err
			}
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := os.Remove(filepath.Join(p.JSDir, "pvesnap.js")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Status tells whether the panel is in the template and whether it is the current version.
func Status(p Paths) (installed, current bool, err error) {
	tpl, err := os.ReadFile(p.Template)
	if err != nil {
		return false, false, err
	}
	installed = bytes.Contains(tpl, []byte(marker))
	js, jerr := os.ReadFile(filepath.Join(p.JSDir, "pvesnap.js"))
	current = installed && bytes.Contains(tpl, p.line()) && jerr == nil && bytes.Equal(js, www.Script())
	return installed, current, nil
}

// strip removes every line carrying the marker (with its line break).
func strip(tpl []byte) []byte {
	var out []byte
	for _, l := range bytes.SplitAfter(tpl, []byte("\n")) {
		if !bytes.Contains(l, []byte(marker)) {
			out = append(out, l...)
		}
	}
	return out
}

func modeOf(p string) os.FileMode {
	if st, err := os.Stat(p); err == nil {
		return st.Mode().Perm()
	}
	return 0o644
}

func writeAtomic(path string, b []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".pvesnap-tmp." + strconv.Itoa(os.Getpid())
	if err := os.WriteFile(tmp, b, mode); err != nil {
		return err
	}
	if err := os.Chmod(tmp, mode); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}
