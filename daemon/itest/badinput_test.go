package itest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/pvesnap/pvesnap/daemon/api"
)

// Values a careless or hostile client sends.
var (
	badStrings = []string{
		"../../etc/passwd", "..%2F..%2Fetc", "/etc/shadow", "a;rm -rf /", "$(reboot)", "`id`", "a|b", "a&&b",
		"line\nbreak", "nul\x00byte", "ünïcödé-ñame", "💥", strings.Repeat("x", 5000), "", " ", "-rf", "--help",
		"vm-100-disk-0/../../rpool", "local-zfs:../../../dev/sda",
	}
	badIntegers = []string{"abc", "1.5", "1e99", "-1", "0", "99999999999999999999", "0x10", " 100", "100;", ""}
	badBooleans = []string{"maybe", "2", "-1", "truee", "yes please", ""}
)

// stateDigest fingerprints everything an owned route could change: the simulated array's
// volumes, every storage's volumes, the cluster configs (arrays.cfg, VM configs, storage.cfg)
// and the tasks started.
func stateDigest(e *Env) string {
	h := sha256.New()
	if e.fa != nil {
		fmt.Fprintln(h, e.fa.Array.VolumeNames())
	}
	for _, sid := range []string{"local-zfs", "local-lvm", "san1"} {
		vols, _ := e.Sim.Store("pve1", sid).List()
		for _, v := range vols {
			fmt.Fprintln(h, sid, v.Name, v.Size)
		}
	}
	root := e.Sim.NodePaths("pve1").PVE
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() || strings.Contains(p, "/priv/lock") || strings.HasSuffix(p, ".members") {
			return nil
		}
		b, _ := os.ReadFile(p)
		fmt.Fprintln(h, p, len(b), sha256.Sum256(b))
		return nil
	})
	active, _ := e.Tasks["pve1"].Dir.Active()
	fmt.Fprintln(h, len(active))
	return hex.EncodeToString(h.Sum(nil))
}

// pveServerError: PVE itself answers these with 500 (an unknown node in proxyto, a volume
// that does not exist or does not parse); pvesnap keeps PVE's codes.
func pveServerError(status string) bool {
	for _, p := range []string{"hostname lookup '", "no such volume '", "unable to parse volume ID '"} {
		if strings.HasPrefix(status, p) {
			return true
		}
	}
	return false
}

func badValues(p api.Param) []string {
	switch p.Type {
	case api.Integer:
		return badIntegers
	case api.Boolean:
		return badBooleans
	}
	return badStrings
}

// TestBadInputMatrix sends every owned route, one parameter at a time, values of the wrong
// type, too large, traversing paths, carrying shell metacharacters, unicode or naming what
// does not exist. Each must be refused the PVE way (4xx with a message), never 5xx, never 2xx
// for a write, and leave no trace.
func TestBadInputMatrix(t *testing.T) {
	e := Start(t)
	e.inventoryVM()
	root := e.Root("pve1")
	matrix := authMatrix()
	routes := e.Daemons["pve1"].Mux.Routes()
	type row struct {
		route      string
		tried      int
		passed     int // answered by pveproxy
		codes      map[int]int
		violations []string
	}
	var rows []row
	total := 0
	for _, r := range routes {
		key := r.Method + " " + r.Path
		en, ok := matrix[key]
		if !ok || strings.Contains(r.Path, "itest-") {
			continue
		}
		rw := row{route: key, codes: map[int]int{}}
		base := func() (string, url.Values) {
			p, q := en.call(e, int(seq.Add(1)))
			if q == nil {
				q = url.Values{}
			}
			return p, q
		}
		constrained := func(name string) bool {
			for _, p := range r.Params {
				if p.Name == name {
					return p.Type != api.String || p.Pattern != nil || p.Check != nil || len(p.Enum) > 0 || p.Format != ""
				}
			}
			return true // undeclared, or a path parameter
		}
		try := func(what, param, path string, q url.Values) {
			before := stateDigest(e)
			resp, err := root.Do(r.Method, path, q)
			if err != nil {
				rw.violations = append(rw.violations, fmt.Sprintf("%s: %v", what, err))
				return
			}
			rw.tried++
			rw.codes[resp.Code]++
			write := r.Method != "GET"
			ours := resp.Header.Get(api.AnsweredHeader) == "pvesnap"
			if !ours {
				rw.passed++ // pveproxy's answer: its rules, its codes (PVE answers 500 for many)
				return
			}
			switch {
			case resp.Code >= 500 && !pveServerError(resp.Status):
				rw.violations = append(rw.violations, fmt.Sprintf("%s: %d %s", what, resp.Code, resp.Status))
			case write && resp.Code < 400 && constrained(param):
				rw.violations = append(rw.violations, fmt.Sprintf("%s: accepted (%d)", what, resp.Code))
			case resp.Code >= 400 && resp.Status == "":
				rw.violations = append(rw.violations, fmt.Sprintf("%s: %d without a message", what, resp.Code))
			}
			if write && resp.Code >= 400 {
				if after := stateDigest(e); after != before {
					rw.violations = append(rw.violations, fmt.Sprintf("%s: refused (%d %s) but the state changed", what, resp.Code, resp.Status))
				}
			}
		}
		// Path parameters.
		pat := strings.Split(r.Path, "/")
		for i, seg := range pat {
			if !strings.HasPrefix(seg, "{") {
				continue
			}
			for _, v := range []string{"..", "a;b", "ünï", strings.Repeat("n", 300), "%00", "-x"} {
				p, q := base()
				segs := strings.Split(p, "/")
				if i < len(segs) {
					segs[i] = url.PathEscape(v)
				}
				try(fmt.Sprintf("path %s=%q", seg, v), "", strings.Join(segs, "/"), q)
			}
		}
		// Declared parameters, one at a time, and one that is not declared.
		inPath := map[string]bool{}
		for _, seg := range pat {
			inPath[strings.Trim(seg, "{}")] = true
		}
		for _, prm := range r.Params {
			if inPath[prm.Name] || strings.HasSuffix(prm.Name, "[n]") {
				continue
			}
			for _, v := range badValues(prm) {
				if v == "" && prm.Optional {
					continue // an empty optional value is "not given"
				}
				p, q := base()
				q.Set(prm.Name, v)
				try(fmt.Sprintf("%s=%q", prm.Name, v), prm.Name, p, q)
			}
		}
		p, q := base()
		q.Set("no-such-parameter", "1")
		try("an undeclared parameter", "no-such-parameter", p, q)
		total += rw.tried
		rows = append(rows, rw)
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].route < rows[j].route })
	for _, rw := range rows {
		var codes []string
		for c, n := range rw.codes {
			codes = append(codes, fmt.Sprintf("%d×%d", n, c))
		}
		sort.Strings(codes)
		t.Logf("%-60s %3d bad inputs (%d passed to pveproxy): %s", rw.route, rw.tried, rw.passed, strings.Join(codes, " "))
		for _, v := range rw.violations {
			t.Errorf("%s: %s", rw.route, v)
		}
	}
	fmt.Printf("RESULT bad_input routes=%d requests=%d\n", len(rows), total)
}
