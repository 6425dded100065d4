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
// programs (os/exec), only ioctl/ touches unsafe and only in *_unsafe.go files, cmd/ does not
// reach into simulators except for the sim and demo commands. Test files, the lab and the
// simulators' own tooling are exempt where noted.
func TestBoundaries(t *testing.T) {
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
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
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
