package auth

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/pvesnap/pvesnap/daemon/pve"
)

// fakePveproxy answers GET /access/permissions from fixed answers, as pveproxy would for one
// caller, and records what it was asked.
type fakePveproxy struct {
	mu    sync.Mutex
	tree  map[string]map[string]int // the effective tree (no path)
	paths map[string]map[string]int // answers for ?path=
	asked []string
	deny  bool
}

func (f *fakePveproxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.deny {
		w.WriteHeader(401)
		return
	}
	p := r.URL.Query().Get("path")
	f.asked = append(f.asked, p)
	data := f.tree
	if p != "" {
		data = map[string]map[string]int{p: f.paths[p]}
	}
	json.NewEncoder(w).Encode(map[string]any{"data": data})
}

func (f *fakePveproxy) calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.asked...)
}

func newTestAuth(t *testing.T, f *fakePveproxy, userCfg string) (*Authenticator, string) {
	t.Helper()
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "user.cfg"), []byte(userCfg), 0o640)
	u, _ := url.Parse(srv.URL)
	return &Authenticator{Upstream: u, Client: srv.Client(), Cache: NewCache(time.Minute, 100), Access: pve.NewAccessConfig(dir)}, dir
}

func tokenRequest() *http.Request {
	r := httptest.NewRequest("GET", "/api2/json/nodes/pve1/pvesnap/vms", nil)
	r.Header.Set("Authorization", "PVEAPIToken=audit@pve!t=secret")
	return r
}

// The situation of the issue: PVEAuditor on /vms, NoAccess on /vms/300, a pool granting
// /vms/400, nothing else. pveproxy's tree leaves /vms/300 out (no privileges); a VM without
// ACL or pool of its own has what pveproxy says for any path below /vms.
func TestHasOnFollowsPVE(t *testing.T) {
	f := &fakePveproxy{
		tree:  map[string]map[string]int{"/vms": {"VM.Audit": 1}, "/vms/400": {"VM.Audit": 0}},
		paths: map[string]map[string]int{"/vms/100": {"VM.Audit": 1}, "/vms/100/x": {"VM.Audit": 1}},
	}
	a, _ := newTestAuth(t, f, "user:audit@pve:1:0::::::\ntoken:audit@pve!t:0:0::\nacl:1:/vms:audit@pve:PVEAuditor:\nacl:0:/vms/300:audit@pve:NoAccess:\npool:p::400::\n")
	got, err := a.HasOn(t.Context(), tokenRequest(), nil, "VM.Audit", []string{"/vms/100", "/vms/101", "/vms/300", "/vms/400", "/vms/102"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"/vms/100": true, "/vms/101": true, "/vms/102": true, "/vms/300": false, "/vms/400": true}
	for p, w := range want {
		if got[p] != w {
			t.Errorf("%s: %v, want %v", p, got[p], w)
		}
	}
	// One tree, one example for the VMs without ACLs: not one call per VM.
	if c := f.calls(); len(c) != 2 {
		t.Errorf("asked pveproxy %q", c)
	}
	// Cached: nothing asked again until the access files change.
	a.HasOn(t.Context(), tokenRequest(), nil, "VM.Audit", []string{"/vms/100", "/vms/300"})
	if c := f.calls(); len(c) != 2 {
		t.Errorf("asked again with nothing changed: %q", c)
	}
}

// NoAccess propagating from /vms under PVEAuditor on /: /vms is left out of the tree and a
// VM without ACL of its own has nothing, whatever "/" propagates.
func TestHasOnNoAccessOnParent(t *testing.T) {
	f := &fakePveproxy{
		tree:  map[string]map[string]int{"/": {"VM.Audit": 1}, "/storage": {"VM.Audit": 1}},
		paths: map[string]map[string]int{"/vms/100": {}},
	}
	a, _ := newTestAuth(t, f, "acl:1:/:audit@pve:PVEAuditor:\nacl:1:/vms:audit@pve:NoAccess:\n")
	got, err := a.HasOn(t.Context(), tokenRequest(), nil, "VM.Audit", []string{"/vms/100", "/vms/101"})
	if err != nil {
		t.Fatal(err)
	}
	if got["/vms/100"] || got["/vms/101"] {
		t.Errorf("NoAccess on /vms ignored: %v", got)
	}
}

func TestCacheDroppedOnAccessChange(t *testing.T) {
	f := &fakePveproxy{paths: map[string]map[string]int{"/": {"Sys.Audit": 1}}}
	a, dir := newTestAuth(t, f, "user:audit@pve:1:0::::::\n")
	r := tokenRequest()
	if _, err := a.Privileges(t.Context(), r, nil, "/"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Privileges(t.Context(), r, nil, "/"); err != nil || len(f.calls()) != 1 {
		t.Fatalf("not cached: %q %v", f.calls(), err)
	}
	os.WriteFile(filepath.Join(dir, "user.cfg"), []byte("user:audit@pve:0:0::::::\n"), 0o640)
	f.deny = true
	if _, err := a.Privileges(t.Context(), r, nil, "/"); err == nil {
		t.Fatal("a disabled user kept a cached answer")
	}
}

// An answer is not kept past the token's expiry in user.cfg.
func TestCacheBoundByExpiry(t *testing.T) {
	f := &fakePveproxy{paths: map[string]map[string]int{"/": {"Sys.Audit": 1}}}
	exp := time.Now().Add(time.Second).Unix() + 1
	a, _ := newTestAuth(t, f, "user:audit@pve:1:0::::::\ntoken:audit@pve!t:"+itoa(exp)+":0::\n")
	r := tokenRequest()
	a.Privileges(t.Context(), r, nil, "/")
	time.Sleep(time.Until(time.Unix(exp, 0)) + 50*time.Millisecond)
	f.deny = true
	if _, err := a.Privileges(t.Context(), r, nil, "/"); err == nil {
		t.Fatal("an expired token kept a cached answer")
	}
}

func itoa(n int64) string { b, _ := json.Marshal(n); return string(b) }
