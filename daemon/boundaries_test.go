// Package daemon_test holds checks on the code base as a whole.
package daemon_test

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestBoundaries enforces the layout's rules (what depguard would): only daemon/runner starts
// programs (os/exec), only ioctl/ touches unsafe and only in *_unsafe.go files, and nothing
// under sim/ (its tests included) imports daemon/, lvm/ or ioctl/: a stand-in that shares the
// daemon's reading of PVE or of the kernel can only ever agree with it. Test files and the lab
// are exempt from the first two rules.
func TestBoundaries(t *testing.T) {
	const module = "github.com/pvesnap/pvesnap"
	root := filepath.Join("..")
	err := filepath.Walk(root, func(path string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if fi.IsDir() {
			switch fi.Name() {
			case ".git", "node_modules", "testdata", "work":
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		isTest := strings.HasSuffix(path, "_test.go")
		if isTest && !strings.HasPrefix(rel, "sim/") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if strings.HasPrefix(rel, "sim/") {
				for _, own := range []string{"daemon", "lvm", "ioctl"} {
					if p == module+"/"+own || strings.HasPrefix(p, module+"/"+own+"/") {
						t.Errorf("%s imports %s: the simulators are an independent reading of PVE and the kernel and share no code with %s/", rel, p, own)
					}
				}
			}
			if isTest {
				continue
			}
			switch p {
			case "os/exec":
				if !strings.HasPrefix(rel, "daemon/runner/") && !strings.HasPrefix(rel, "lab/") {
					t.Errorf("%s imports os/exec: start programs through daemon/runner (argv only, absolute paths, timeouts)", rel)
				}
			case "unsafe":
				if !strings.HasPrefix(rel, "ioctl/") || !strings.HasSuffix(rel, "_unsafe.go") {
					t.Errorf("%s imports unsafe: only ioctl/*_unsafe.go may", rel)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
