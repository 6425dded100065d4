package flasharray

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pvesnap/pvesnap/sim/reference"
)

// rawClient speaks REST to the simulator directly, checking every exchange against the spec.
type rawClient struct {
	t       *testing.T
	srv     *httptest.Server
	version string
	spec    reference.FASpec
	token   string
	seen    map[string]bool
	// lax skips the request check, for requests that are wrong on purpose.
	lax bool
}

func newRaw(t *testing.T, a *Array, version string) *rawClient {
	t.Helper()
	srv := httptest.NewServer(a)
	t.Cleanup(srv.Close)
	spec, err := reference.FA(version)
	if err != nil {
		t.Fatal(err)
	}
	a.AddToken("T0K3N", "pureuser")
	c := &rawClient{t: t, srv: srv, version: version, spec: spec, seen: map[string]bool{}}
	req, _ := http.NewRequest("POST", srv.URL+"/api/"+version+"/login", nil)
	req.Header.Set("api-token", "T0K3N")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	c.token = resp.Header.Get("x-auth-token")
	if resp.StatusCode != 200 || c.token == "" {
		t.Fatalf("login: %s, token %q", resp.Status, c.token)
	}
	return c
}

// do sends one call and returns status and decoded body; the exchange is checked against
// the spec of the client's version.
func (c *rawClient) do(method, path, query string, body any) (int, map[string]any, http.Header) {
	c.t.Helper()
	var rb []byte
	if body != nil {
		rb, _ = json.Marshal(body)
	}
	u := c.srv.URL + "/api/" + c.version + path
	if query != "" {
		u += "?" + query
	}
	req, _ := http.NewRequest(method, u, bytes.NewReader(rb))
	req.Header.Set("x-auth-token", c.token)
	if rb != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for _, e := range reference.CheckFARequest(c.spec, method, path, req.URL.Query(), req.Header, rb) {
		if !c.lax {
			c.t.Errorf("request: %s", e)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	for _, e := range reference.CheckFAResponse(c.spec, method, path, resp.StatusCode, raw) {
		c.t.Errorf("%s: %s", c.version, e)
	}
	c.seen[method+" "+path] = true
	var m map[string]any
	if len(raw) > 0 {
		json.Unmarshal(raw, &m)
	}
	return resp.StatusCode, m, resp.Header
}

func (c *rawClient) must(method, path, query string, body any) map[string]any {
	c.t.Helper()
	st, m, _ := c.do(method, path, query, body)
	if st != 200 {
		c.t.Fatalf("%s %s?%s: %d %v", method, path, query, st, m)
	}
	return m
}

func (c *rawClient) fails(method, path, query string, body any, status int, message string) {
	c.t.Helper()
	st, m, _ := c.do(method, path, query, body)
	msg := ""
	if errs, ok := m["errors"].([]any); ok && len(errs) > 0 {
		msg, _ = errs[0].(map[string]any)["message"].(string)
	}
	if st != status || msg != message {
		c.t.Errorf("%s %s?%s: got %d %q, want %d %q", method, path, query, st, msg, status, message)
	}
}

func items(m map[string]any) []map[string]any {
	var out []map[string]any
	l, _ := m["items"].([]any)
	for _, x := range l {
		out = append(out, x.(map[string]any))
	}
	return out
}

// Every route of the simulator, in both reference versions, answers in the spec's shapes and
// with the array's messages.
func TestRoutesMatchTheSpec(t *testing.T) {
	for _, version := range reference.FAVersions {
		t.Run(version, func(t *testing.T) {
			a := New("fa-sim", &Files{Dir: t.TempDir()})
			c := newRaw(t, a, version)
			c.must("GET", "/arrays", "", nil)
			v := items(c.must("POST", "/volumes", "names=vm-100-disk-0,vm-100-disk-1", map[string]any{"provisioned": 1 << 30}))
			if len(v) != 2 || v[0]["provisioned"].(float64) != 1<<30 {
				t.Fatalf("created %v", v)
			}
			c.fails("POST", "/volumes", "names=vm-100-disk-0", map[string]any{"provisioned": 1 << 30}, 400, msgVolExists)
			c.fails("POST", "/volumes", "names=tiny", map[string]any{"provisioned": 4096}, 400, msgSize)
			c.must("GET", "/volumes", "names=vm-100-disk-0", nil)
			c.fails("GET", "/volumes", "names=nope", nil, 400, msgVolNotExist)
			c.must("GET", "/volumes", "filter="+urlq("name='vm-100-*'")+"&limit=1&total_item_count=true", nil)
			s := items(c.must("POST", "/volume-snapshots", "source_names=vm-100-disk-0,vm-100-disk-1", map[string]any{"suffix": "pvesnap-1"}))
			if len(s) != 2 || s[0]["name"] != "vm-100-disk-0.pvesnap-1" {
				t.Fatalf("snapshots %v", s)
			}
			c.fails("POST", "/volume-snapshots", "source_names=vm-100-disk-0", map[string]any{"suffix": "pvesnap-1"}, 400, msgSnapExists)
			c.must("GET", "/volume-snapshots", "source_names=vm-100-disk-0", nil)
			c.must("GET", "/volume-snapshots", "names=vm-100-disk-0.pvesnap-1", nil)
			c.fails("GET", "/volume-snapshots", "names=vm-100-disk-0.none", nil, 400, msgNoSuchSnap)
			c.must("POST", "/volumes", "names=restored", map[string]any{"source": map[string]any{"name": "vm-100-disk-0.pvesnap-1"}})
			c.fails("POST", "/volumes", "names=restored", map[string]any{"source": map[string]any{"name": "vm-100-disk-0.pvesnap-1"}}, 400, msgVolExists)
			c.must("POST", "/volumes", "names=restored&overwrite=true", map[string]any{"source": map[string]any{"name": "vm-100-disk-1.pvesnap-1"}})
			c.fails("POST", "/volumes", "names=x", map[string]any{"source": map[string]any{"name": "missing.snap"}}, 400, msgNoSuchSnap)
			must(t, a.CreateProtectionGroup("pg-vms", "vm-100-disk-0", "vm-100-disk-1"))
			c.must("GET", "/protection-groups", "", nil)
			c.must("GET", "/protection-groups/volumes", "group_names=pg-vms", nil)
			c.must("GET", "/volumes/protection-groups", "member_names=vm-100-disk-0", nil)
			pgs := items(c.must("POST", "/protection-group-snapshots", "source_names=pg-vms", map[string]any{"suffix": "daily"}))
			if pgs[0]["name"] != "pg-vms.daily" {
				t.Fatalf("pg snapshot %v", pgs)
			}
			c.must("GET", "/protection-group-snapshots", "source_names=pg-vms", nil)
			members := items(c.must("GET", "/volume-snapshots", "filter="+urlq("name='pg-vms.daily.*'"), nil))
			if len(members) != 2 || members[0]["source"].(map[string]any)["name"] != "vm-100-disk-0" {
				t.Fatalf("pg member snapshots %v", members)
			}
			c.must("POST", "/hosts", "names=pve1", map[string]any{"iqns": []string{"iqn.1993-08.org.debian:01:pve1"}})
			c.must("POST", "/hosts", "names=pve2", map[string]any{"nqns": []string{"nqn.2014-08.org.nvmexpress:uuid:pve2"}})
			c.fails("POST", "/hosts", "names=pve1", map[string]any{}, 400, msgHostExists)
			c.fails("POST", "/hosts", "names=pve3", map[string]any{"iqns": []string{"iqn.1993-08.org.debian:01:pve1"}}, 400, msgInitiatorInUse)
			must(t, a.CreateHostGroup("cluster", "pve1", "pve2"))
			c.must("GET", "/hosts", "filter="+urlq("iqns='IQN.1993-08.org.debian:01:pve1'"), nil)
			c.must("GET", "/host-groups", "", nil)
			c.must("GET", "/host-groups/hosts", "group_names=cluster", nil)
			c.must("GET", "/hosts/host-groups", "member_names=pve1", nil)
			conn := items(c.must("POST", "/connections", "host_names=pve1&volume_names=restored", nil))
			if conn[0]["lun"].(float64) != 1 {
				t.Fatalf("private connection %v", conn)
			}
			c.fails("POST", "/connections", "host_names=pve1&volume_names=restored", nil, 400, msgConnExists)
			shared := items(c.must("POST", "/connections", "host_group_names=cluster&volume_names=vm-100-disk-0", nil))
			if len(shared) != 2 || shared[0]["lun"] == nil && shared[0]["nsid"] == nil {
				t.Fatalf("shared connection %v", shared)
			}
			c.must("GET", "/connections", "volume_names=vm-100-disk-0", nil)
			c.fails("PATCH", "/volumes", "names=restored", map[string]any{"destroyed": true}, 400, msgVolConnected)
			c.lax = true // PATCH does not take a source (a mistake clients have made)
			c.fails("PATCH", "/volumes", "names=restored", map[string]any{"source": map[string]any{"name": "x"}}, 400, msgNoAttribute)
			c.lax = false
			c.must("DELETE", "/connections", "host_names=pve1&volume_names=restored", nil)
			c.fails("DELETE", "/connections", "host_names=pve1&volume_names=restored", nil, 400, msgConnNotExist)
			c.fails("DELETE", "/volumes", "names=restored", nil, 400, msgNotDestroyed)
			c.must("PATCH", "/volumes", "names=restored", map[string]any{"destroyed": true})
			c.fails("PATCH", "/volumes", "names=restored", map[string]any{"destroyed": true}, 400, msgVolDeleted)
			c.fails("DELETE", "/connections", "host_names=pve1&volume_names=restored", nil, 400, msgVolDestroyed)
			c.must("GET", "/volumes", "destroyed=true", nil)
			c.must("PATCH", "/volumes", "names=restored", map[string]any{"destroyed": false})
			c.must("PATCH", "/volumes", "names=restored", map[string]any{"destroyed": true})
			a.SafeMode = true
			c.fails("DELETE", "/volumes", "names=restored", nil, 400, msgEradicateOff)
			a.SafeMode = false
			c.must("DELETE", "/volumes", "names=restored", nil)
			c.fails("PATCH", "/volume-snapshots", "names=nope.1", map[string]any{"destroyed": true}, 400, msgNoSuchSnap)
			c.must("PATCH", "/volume-snapshots", "names=vm-100-disk-1.pvesnap-1", map[string]any{"destroyed": true})
			c.fails("PATCH", "/volume-snapshots", "names=vm-100-disk-1.pvesnap-1", map[string]any{"destroyed": true}, 400, msgSnapDestroyed)
			c.must("DELETE", "/volume-snapshots", "names=vm-100-disk-1.pvesnap-1", nil)
			c.must("PATCH", "/protection-group-snapshots", "names=pg-vms.daily", map[string]any{"destroyed": true})
			c.must("DELETE", "/connections", "host_group_names=cluster&volume_names=vm-100-disk-0", nil)
			c.fails("DELETE", "/hosts", "names=pve1", nil, 400, "Host cannot be deleted while it is a member of a host group.")

			// The real answers for a version carry only that version's fields.
			_, vols, _ := c.do("GET", "/volumes", "names=vm-100-disk-0", nil)
			_, hasPriority := items(vols)[0]["priority"]
			if hasPriority != (version != "2.4") {
				t.Errorf("priority field present=%v in %s", hasPriority, version)
			}
		})
	}
}

func urlq(s string) string {
	return strings.NewReplacer(" ", "%20", "'", "%27", "*", "%2A", "=", "%3D").Replace(s)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// Serials: the array id's first 16 hex digits and a counter; snapshots get serials too.
func TestSerialFormation(t *testing.T) {
	a := New("fa", nil)
	a.ID = "6c1b16ce-1c03-4d1c-b974-33405cf8d565"
	s1, err := a.CreateVolume("a", 1<<20)
	must(t, err)
	s2, _ := a.CreateVolume("b", 1<<20)
	if s1 != "6C1B16CE1C034D1C00000001" || s2 != "6C1B16CE1C034D1C00000002" {
		t.Fatalf("serials %s %s", s1, s2)
	}
	snaps, _ := a.SnapshotVolumes("", "a")
	if snaps[0] != "a.1" || a.Serial("a.1") != "6C1B16CE1C034D1C00000003" {
		t.Fatalf("snapshot %v serial %s", snaps, a.Serial("a.1"))
	}
}

// LUNs: private connections count up from 1, host-group ones down from 254, and a number
// is never given twice to what one host sees.
func TestLUNNumbering(t *testing.T) {
	a := New("fa", nil)
	c := newRaw(t, a, "2.44")
	must(t, a.CreateHost("h1", []string{"iqn.x:1"}, nil, nil))
	must(t, a.CreateHost("h2", []string{"iqn.x:2"}, nil, nil))
	must(t, a.CreateHostGroup("g", "h1", "h2"))
	for i := 0; i < 4; i++ {
		a.CreateVolume(fmt.Sprintf("v%d", i), 1<<20)
	}
	lun := func(m map[string]any) float64 { return items(m)[0]["lun"].(float64) }
	if l := lun(c.must("POST", "/connections", "host_names=h1&volume_names=v0", nil)); l != 1 {
		t.Errorf("first private LUN %v", l)
	}
	if l := lun(c.must("POST", "/connections", "host_names=h1&volume_names=v1", nil)); l != 2 {
		t.Errorf("second private LUN %v", l)
	}
	if l := lun(c.must("POST", "/connections", "host_group_names=g&volume_names=v2", nil)); l != 254 {
		t.Errorf("first shared LUN %v", l)
	}
	if l := lun(c.must("POST", "/connections", "host_group_names=g&volume_names=v3", map[string]any{"lun": 300})); l != 300 {
		t.Errorf("explicit LUN %v", l)
	}
}

// An explicit LUN that one member host already uses is refused.
func TestExplicitLUNClash(t *testing.T) {
	a := New("fa", nil)
	c := newRaw(t, a, "2.44")
	must(t, a.CreateHost("h1", []string{"iqn.x:1"}, nil, nil))
	must(t, a.CreateHostGroup("g", "h1"))
	a.CreateVolume("v0", 1<<20)
	a.CreateVolume("v1", 1<<20)
	c.must("POST", "/connections", "host_names=h1&volume_names=v0", nil)
	st, _, _ := c.do("POST", "/connections", "host_group_names=g&volume_names=v1", map[string]any{"lun": 1})
	if st != 400 {
		t.Fatalf("LUN 1 given twice to h1: %d", st)
	}
}

// NVMe hosts get namespace ids (REST 2.27+), SCSI hosts LUNs.
func TestNVMeConnectionsCarryNSID(t *testing.T) {
	a := New("fa", nil)
	c := newRaw(t, a, "2.44")
	must(t, a.CreateHost("nv", nil, []string{"nqn.2014-08.org.nvmexpress:uuid:1"}, nil))
	a.CreateVolume("v", 1<<20)
	it := items(c.must("POST", "/connections", "host_names=nv&volume_names=v", nil))[0]
	if it["nsid"] != 1.0 || it["lun"] != nil {
		t.Fatalf("NVMe connection %v", it)
	}
}

// Pages: a continuation token walks the whole collection and is tied to its query.
func TestPagination(t *testing.T) {
	a := New("fa", nil)
	a.MaxLimit = 4
	c := newRaw(t, a, "2.44")
	for i := 0; i < 10; i++ {
		a.CreateVolume(fmt.Sprintf("v%02d", i), 1<<20)
	}
	var names []string
	q := "limit=3"
	pages := 0
	for {
		_, m, h := c.do("GET", "/volumes", q, nil)
		pages++
		for _, it := range items(m) {
			names = append(names, it["name"].(string))
		}
		tok, _ := m["continuation_token"].(string)
		if tok != h.Get("x-next-token") {
			t.Fatalf("token %q header %q", tok, h.Get("x-next-token"))
		}
		if tok == "" {
			if m["more_items_remaining"] != false {
				t.Fatal("no token but more items")
			}
			break
		}
		q = "limit=3&continuation_token=" + tok
	}
	if pages != 4 || len(names) != 10 || names[9] != "v09" {
		t.Fatalf("%d pages, %v", pages, names)
	}
	_, m, _ := c.do("GET", "/volumes", "limit=3", nil)
	tok := m["continuation_token"].(string)
	c.fails("GET", "/volumes", "filter="+urlq("name='v0*'")+"&continuation_token="+tok, nil, 400, "Invalid continuation token.")
	// A sorted listing pages by offset only.
	_, m, _ = c.do("GET", "/volumes", "sort=name-&limit=2", nil)
	if m["continuation_token"] != nil || items(m)[0]["name"] != "v09" || m["more_items_remaining"] != true {
		t.Fatalf("sorted page %v", m)
	}
}

func TestFilter(t *testing.T) {
	item := map[string]any{"name": "vm-100-disk-0", "provisioned": 2048.0, "destroyed": false, "is_local": true,
		"iqns": []any{"iqn.a", "iqn.b"}, "source": map[string]any{"name": "base", "id": nil}, "pod": map[string]any{"name": nil}}
	for expr, want := range map[string]bool{
		"name='vm-100-*'":                        true,
		"name='VM-100-DISK-0'":                   true,
		"name!='vm-100-disk-0'":                  false,
		"provisioned>1024 and provisioned<=2048": true,
		"provisioned>=4096 or name='*-0'":        true,
		"iqns='iqn.b'":                           true,
		"iqns='iqn.c'":                           false,
		"source.name='base'":                     true,
		"is_local":                               true,
		"not is_local":                           false,
		"not(destroyed)":                         true,
		"pod":                                    false,
		"contains(name,'disk')":                  true,
		"(name='x' or name='vm*') and not(provisioned=1)": true,
		"serial='A' or serial='B'":                        false,
	} {
		e, err := parseFilter(expr)
		if err != nil {
			t.Errorf("%s: %v", expr, err)
			continue
		}
		if got := e.eval(item); got != want {
			t.Errorf("%s = %v, want %v", expr, got, want)
		}
	}
	for _, bad := range []string{"name=", "name='x", "(name='x'", "name ! 'x'", "and"} {
		if _, err := parseFilter(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestSessions(t *testing.T) {
	a := New("fa", nil)
	now := time.Unix(1_800_000_000, 0)
	a.Now = func() time.Time { return now }
	a.SessionTTL = time.Hour
	c := newRaw(t, a, "2.44")
	c.must("GET", "/arrays", "", nil)
	now = now.Add(61 * time.Minute)
	c.fails("GET", "/arrays", "", nil, 401, msgInvalidSession)
	req, _ := http.NewRequest("POST", c.srv.URL+"/api/2.44/login", nil)
	req.Header.Set("api-token", "wrong")
	resp, _ := http.DefaultClient.Do(req)
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("wrong token: %d", resp.StatusCode)
	}
	// Unknown versions are not served.
	resp, _ = http.Get(c.srv.URL + "/api/2.99/arrays")
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Fatalf("2.99: %d", resp.StatusCode)
	}
}

// Destroyed objects stay recoverable for the eradication delay, then go (bytes included).
func TestEradicationDelay(t *testing.T) {
	dir := t.TempDir()
	a := New("fa", &Files{Dir: dir})
	now := time.Unix(1_800_000_000, 0)
	a.Now = func() time.Time { return now }
	c := newRaw(t, a, "2.44")
	serial, _ := a.CreateVolume("v", 1<<20)
	c.must("PATCH", "/volumes", "names=v", map[string]any{"destroyed": true})
	now = now.Add(time.Hour)
	it := items(c.must("GET", "/volumes", "names=v", nil))[0]
	if it["time_remaining"].(float64) != float64(23*time.Hour/time.Millisecond) {
		t.Fatalf("time_remaining %v", it["time_remaining"])
	}
	c.fails("POST", "/volumes", "names=v", map[string]any{"provisioned": 1 << 20}, 400, msgVolExists)
	now = now.Add(23 * time.Hour)
	c.fails("GET", "/volumes", "names=v", nil, 400, msgVolNotExist)
	if _, err := os.Stat(filepath.Join(dir, serial)); !os.IsNotExist(err) {
		t.Fatalf("bytes of an eradicated volume remain: %v", err)
	}
}

// The files data plane: copies keep content and holes, overwrite keeps the file.
func TestFilesCloneAndOverwrite(t *testing.T) {
	dir := t.TempDir()
	f := &Files{Dir: dir}
	a := New("fa", f)
	c := newRaw(t, a, "2.44")
	serial, _ := a.CreateVolume("v", 8<<20)
	p := f.Path(serial)
	fh, _ := os.OpenFile(p, os.O_WRONLY, 0)
	fh.WriteAt([]byte("first"), 4<<20)
	fh.Close()
	a.SnapshotVolumes("s", "v")
	fh, _ = os.OpenFile(p, os.O_WRONLY, 0)
	fh.WriteAt([]byte("later"), 4<<20)
	fh.Close()
	st0, _ := os.Stat(p)
	c.must("POST", "/volumes", "names=v&overwrite=true", map[string]any{"source": map[string]any{"name": "v.s"}})
	st1, _ := os.Stat(p)
	if !os.SameFile(st0, st1) {
		t.Fatal("overwrite replaced the file instead of rewriting it (a LUN on it would go stale)")
	}
	b, _ := os.ReadFile(p)
	if string(b[4<<20:4<<20+5]) != "first" || len(b) != 8<<20 {
		t.Fatalf("after overwrite: %q (%d bytes)", b[4<<20:4<<20+5], len(b))
	}
	if a.Serial("v") != serial {
		t.Fatal("overwrite changed the serial")
	}
}
