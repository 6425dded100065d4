package api

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// Integers and numbers as PVE's JSONSchema checks them: the text must match is_integer /
// is_number (no spaces); a JSON number counts as the number it decodes to, so 1e2 and 100.0
// are 100 while 1.5 is not an integer; a JSON true is not a number.
func TestNumbersAsPVE(t *testing.T) {
	decl := []Param{{Name: "vmid", Type: Integer, Minimum: Min(100), Maximum: Max(999999999)},
		{Name: "ratio", Type: Number, Optional: true}}
	call := func(ct, body, query string) (Params, *Error) {
		r := httptest.NewRequest("POST", "/x?"+query, strings.NewReader(body))
		r.Header.Set("Content-Type", ct)
		raw, perr := readParams(r, []byte(body), nil)
		if perr != nil {
			return nil, perr
		}
		return validate(decl, raw)
	}
	form := "application/x-www-form-urlencoded"
	for _, c := range []struct {
		ct, body string
		want     int64 // 0: refused
	}{
		{form, "vmid=100", 100},
		{form, "vmid=%20100%20", 0},
		{form, "vmid=%2B100", 100},
		{form, "vmid=+100", 0}, // a form's + is a space
		{form, "vmid=0100", 100},
		{form, "vmid=100%0A", 100}, // Perl's $ allows a final newline
		{form, "vmid=1e2", 0},
		{form, "vmid=100.0", 0},
		{"application/json", `{"vmid": 1e2}`, 100},
		{"application/json", `{"vmid": 100.0}`, 100},
		{"application/json", `{"vmid": 100}`, 100},
		{"application/json", `{"vmid": 1.5e2}`, 150},
		{"application/json", `{"vmid": 100.5}`, 0},
		{"application/json", `{"vmid": 1e15}`, 0}, // Perl prints 1e+15
		{"application/json", `{"vmid": " 100 "}`, 0},
		{"application/json", `{"vmid": true}`, 0},
	} {
		p, err := call(c.ct, c.body, "")
		switch {
		case c.want == 0 && err == nil:
			t.Errorf("%s: accepted as %d", c.body, p.Int("vmid"))
		case c.want != 0 && (err != nil || p.Int("vmid") != c.want):
			t.Errorf("%s: %v %v, want %d", c.body, p, err, c.want)
		}
	}
	if _, err := call(form, "vmid=100&ratio=.5", ""); err != nil {
		t.Errorf("number .5: %v", err)
	}
	if _, err := call(form, "vmid=100&ratio=%201", ""); err == nil || err.Errors["ratio"] != "type check ('number') failed - got ' 1'" {
		t.Errorf("number ' 1': %v", err)
	}
	if _, err := call("application/json", `{"vmid": true}`, ""); err == nil || err.Errors["vmid"] != "type check ('integer') failed - got JSON::PP::Boolean" {
		t.Errorf("JSON true for an integer: %v", err)
	}
}

// pveproxy refuses a credential before any formatter runs: 401 with its reason and an empty
// body under /api2/extjs as under /api2/json. A 401 a handler raises itself (a failed login)
// is formatted: 200 with success 0 in extjs.
func TestUnauthorizedIs401InEveryFormat(t *testing.T) {
	routes := []*Route{{Method: "GET", Path: "/x", Name: "x", Description: "x",
		Permission: Permission{Path: "/", Privs: []string{"Sys.Audit"}}, Handler: func(c *Call) (any, error) { return 1, nil }}}
	m, err := NewMux(routes, Options{Authz: denyAll{}, PassThrough: http.NotFoundHandler()})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []Format{JSON, ExtJS} {
		w := httptest.NewRecorder()
		m.ServeHTTP(w, httptest.NewRequest("GET", "/api2/"+string(f)+"/x", nil))
		if w.Code != http.StatusUnauthorized || w.Body.Len() != 0 {
			t.Errorf("%s: %d %q", f, w.Code, w.Body.String())
		}
	}
	w := httptest.NewRecorder()
	WriteError(w, ExtJS, Unauthorized("authentication failure"))
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `"status":401`) {
		t.Errorf("extjs handler 401: %d %s", w.Code, w.Body.String())
	}
}

type denyAll struct{}

func (denyAll) Authenticate(*http.Request) (*Identity, error) {
	return nil, Unauthorized("Authentication failed!")
}

func (denyAll) Privileges(context.Context, *http.Request, *Identity, string) (map[string]bool, error) {
	return nil, nil
}
