package api

import (
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

// fuzzDecl is a parameter set like the owned routes': bounded integers, patterned and
// checked strings, booleans, an enum, an indexed family.
var fuzzDecl = []Param{
	{Name: "vmid", Type: Integer, Minimum: Min(100), Maximum: Max(999999999)},
	{Name: "point", Type: String, Optional: true, Pattern: regexp.MustCompile(`^[a-z][a-z0-9_.-]{0,38}[a-z0-9]:[A-Za-z0-9][A-Za-z0-9:._-]{0,200}$`), MaxLength: 256},
	{Name: "mode", Type: String, Optional: true, Enum: []string{"new", "overwrite"}},
	{Name: "start", Type: Boolean, Optional: true},
	{Name: "name", Type: String, Optional: true, MaxLength: 63, Check: func(s string) error {
		if strings.ContainsAny(s, "/;|&$`'\" \\") {
			return errBadName
		}
		return nil
	}},
	{Name: "net[n]", MaxIndex: 31, Type: String, Optional: true},
}

type errString string

func (e errString) Error() string { return string(e) }

const errBadName = errString("bad name")

// Whatever arrives in the query or the body (form or JSON), a validated call only holds
// values within its declaration.
func FuzzParams(f *testing.F) {
	f.Add("vmid=100&point=fa1:pg.daily&mode=new&start=1", "", "")
	f.Add("", `{"vmid": 100, "mode": "overwrite", "net0": "virtio"}`, "application/json")
	f.Add("vmid=99999999999999999999", "name=../../etc", "application/x-www-form-urlencoded")
	f.Add("vmid=1e3&start=yes", `{"vmid": [1,2]}`, "application/json")
	f.Fuzz(func(t *testing.T, query, body, ctype string) {
		r, err := http.NewRequest("POST", "/x?"+query, strings.NewReader(body))
		if err != nil {
			return
		}
		r.Header.Set("Content-Type", ctype)
		raw, perr := readParams(r, []byte(body), nil)
		if perr != nil {
			return
		}
		p, verr := validate(fuzzDecl, raw)
		if verr != nil {
			if verr.Code != http.StatusBadRequest {
				t.Fatalf("a bad parameter answered %d", verr.Code)
			}
			return
		}
		if v := p.Int("vmid"); v < 100 || v > 999999999 {
			t.Fatalf("vmid %d accepted", v)
		}
		if m := p.Str("mode"); m != "" && m != "new" && m != "overwrite" {
			t.Fatalf("mode %q accepted", m)
		}
		if n := p.Str("name"); strings.ContainsAny(n, "/;|&$`'\" \\") || len(n) > 63 {
			t.Fatalf("name %q accepted", n)
		}
		for k := range p {
			if _, err := url.QueryUnescape(k); err != nil {
				t.Fatalf("key %q", k)
			}
		}
	})
}
