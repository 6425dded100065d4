package pve_test

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"

	simpve "github.com/pvesnap/pvesnap/sim/pve"
)

func tokenClient(t *testing.T, c *simpve.Cluster, id, secret string) *simpve.Client {
	t.Helper()
	cl, err := simpve.NewClient(c.URL("pve1"), c.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	cl.Token = id + "=" + secret
	return cl
}

func TestTokenWithoutDatastoreAllocateGetsPVEs403(t *testing.T) {
	c, _ := startCluster(t, "pve1")
	c.AddUser("csi@pve", "pw")
	id, secret, _ := c.AddToken("csi@pve", "csi", true)
	c.AddACL("/storage/local-lvm", id, "PVEDatastoreUser", true) // AllocateSpace + Audit, not Allocate
	c.AddACL("/storage/local-lvm", "csi@pve", "PVEDatastoreAdmin", true)
	r, err := tokenClient(t, c, id, secret).Do("GET", "/storage/local-lvm", nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.Code != 403 || r.Status != "Permission check failed (/storage/local-lvm, Datastore.Allocate)" {
		t.Fatalf("got %d %q, want PVE's 403", r.Code, r.Status)
	}
	var body map[string]any
	json.Unmarshal(r.Raw, &body)
	if body["message"] != "Permission check failed (/storage/local-lvm, Datastore.Allocate)\n" || body["data"] != nil {
		t.Fatalf("body %s", r.Raw)
	}
}

func permsOf(t *testing.T, cl *simpve.Client, path string) map[string]int {
	t.Helper()
	d, err := cl.Must("GET", "/access/permissions", url.Values{"path": {path}})
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]map[string]int
	if err := json.Unmarshal(d, &m); err != nil {
		t.Fatal(err)
	}
	return m[path]
}

// TestACLSemantics checks the rules PVE's AccessControl::roles and RPCEnvironment apply.
func TestACLSemantics(t *testing.T) {
	c, _ := startCluster(t, "pve1")
	c.AddUser("u@pve", "pw")
	c.AddUser("g@pve", "pw")
	c.AddGroup("ops", "g@pve")
	c.AddRole("Snap", "VM.Snapshot", "VM.Audit")
	// propagate=0 on /vms: not inherited by /vms/100, but effective on /vms itself.
	c.AddACL("/vms", "u@pve", "PVEVMUser", false)
	// propagate=1 on /storage, value 1
	c.AddACL("/storage", "u@pve", "PVEDatastoreAdmin", true)
	// group grant on a VM
	c.AddACL("/vms/100", "@ops", "Snap", true)
	// a user ACL at the same level overrides the group's
	c.AddACL("/vms/101", "@ops", "PVEVMAdmin", true)
	c.AddACL("/vms/101", "g@pve", "PVEAuditor", true)
	// NoAccess deeper down removes everything
	c.AddACL("/storage/secret", "u@pve", "NoAccess", true)
	// pool membership grants through /pool/<p>, never propagating
	c.AddPool("prod", []string{"200"}, []string{"pooled"})
	c.AddACL("/pool/prod", "u@pve", "PVEVMAdmin", true)
	// privilege-separated token: intersection of its own and its user's privileges
	tid, tsecret, _ := c.AddToken("u@pve", "limited", true)
	c.AddACL("/storage", tid, "PVEDatastoreUser", true)

	u := tokenClient(t, c, "", "")
	u.Token = ""
	if err := u.Login("u@pve", "pw"); err != nil {
		t.Fatal(err)
	}
	g, _ := simpve.NewClient(c.URL("pve1"), c.CAFile())
	if err := g.Login("g@pve", "pw"); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		cl     *simpve.Client
		path   string
		priv   string
		has    bool
		propag int
	}{
		{"propagate=0 applies on its own path", u, "/vms", "VM.PowerMgmt", true, 0},
		{"propagate=0 is not inherited", u, "/vms/100", "VM.PowerMgmt", false, 0},
		{"propagated privilege", u, "/storage/local-lvm", "Datastore.Allocate", true, 1},
		{"group grant", g, "/vms/100", "VM.Snapshot", true, 1},
		{"user ACL overrides group ACL", g, "/vms/101", "VM.Allocate", false, 0},
		{"user ACL at the same level", g, "/vms/101", "VM.Audit", true, 1},
		{"NoAccess removes inherited privileges", u, "/storage/secret", "Datastore.Audit", false, 0},
		{"pool member VM", u, "/vms/200", "VM.Allocate", true, 0},
		{"pool member storage", u, "/storage/pooled", "VM.Allocate", true, 0},
		{"non-member VM", u, "/vms/300", "VM.Allocate", false, 0},
		{"privsep token gets the intersection", tokenClient(t, c, tid, tsecret), "/storage/local-lvm", "Datastore.AllocateSpace", true, 1},
		{"privsep token lacks what only the user has", tokenClient(t, c, tid, tsecret), "/storage/local-lvm", "Datastore.Allocate", false, 0},
	}
	for _, tc := range cases {
		p := permsOf(t, tc.cl, tc.path)
		v, has := p[tc.priv]
		if has != tc.has || (has && v != tc.propag) {
			t.Errorf("%s: %s on %s = (%v, %d), want (%v, %d); all: %v", tc.name, tc.priv, tc.path, has, v, tc.has, tc.propag, p)
		}
	}
}

// TestAuthFailures checks pveproxy's answer to each bad credential: from pve-manager 9.1.5 on
// every failed ticket or token is "Authentication failed!" (the reason only goes to the log);
// before, the checks' own messages reached the client. Expired and disabled accounts and
// expired tokens are refused like the rest.
func TestAuthFailures(t *testing.T) {
	for _, release := range []string{"9.1.4", "9.1.7"} {
		t.Run(release, func(t *testing.T) { authFailures(t, release) })
	}
}

func authFailures(t *testing.T, release string) {
	c, _ := startClusterWith(t, simpve.Options{Release: release}, "pve1")
	c.AddUser("u@pve", "pw")
	id, secret, _ := c.AddToken("u@pve", "tk", false)
	c.AddACL("/", "u@pve", "PVEAuditor", true)
	old, oldCSRF, _ := c.TicketAt("u@pve", time.Now().Add(-3*time.Hour))
	good, goodCSRF, _ := c.Ticket("u@pve")
	c.AddUser("gone@pve", "pw")
	c.ExpireUser("gone@pve", time.Now().Add(-time.Minute))
	goneTicket, _, _ := c.Ticket("gone@pve")
	goneID, goneSecret, _ := c.AddToken("gone@pve", "tk", false)
	c.AddUser("off@pve", "pw")
	c.DisableUser("off@pve")
	offTicket, _, _ := c.Ticket("off@pve")
	oldTokID, oldTokSecret, _ := c.AddTokenExpiring("u@pve", "old", false, time.Now().Add(-time.Minute))
	cases := []struct {
		name   string
		setup  func(cl *simpve.Client)
		method string
		detail string // what releases before 9.1.5 say
	}{
		{"no credential", func(cl *simpve.Client) {}, "GET", "No ticket"},
		{"expired ticket", func(cl *simpve.Client) { cl.Ticket, cl.CSRF = old, oldCSRF }, "GET", "permission denied - invalid PVE ticket"},
		{"forged ticket", func(cl *simpve.Client) { cl.Ticket = good[:len(good)-4] + "AAAA" }, "GET", "permission denied - invalid PVE ticket"},
		{"ticket of an expired account", func(cl *simpve.Client) { cl.Ticket = goneTicket }, "GET", "user 'gone@pve' access expired"},
		{"ticket of a disabled account", func(cl *simpve.Client) { cl.Ticket = offTicket }, "GET", "user 'off@pve' is disabled"},
		{"write without CSRF", func(cl *simpve.Client) { cl.Ticket, cl.CSRF = good, "" }, "POST", "Permission denied - invalid csrf token"},
		{"write with another user's CSRF", func(cl *simpve.Client) {
			_, rootCSRF, _ := c.Ticket("root@pam")
			cl.Ticket, cl.CSRF = good, rootCSRF
		}, "POST", "Permission denied - invalid csrf token"},
		{"bad token secret", func(cl *simpve.Client) { cl.Token = id + "=wrong" }, "GET", "invalid token value!"},
		{"unknown token", func(cl *simpve.Client) { cl.Token = "u@pve!nope=" + secret }, "GET", "no such token 'nope' for user 'u@pve'"},
		{"token of an expired account", func(cl *simpve.Client) { cl.Token = goneID + "=" + goneSecret }, "GET", "user 'gone@pve' access expired"},
		{"expired token", func(cl *simpve.Client) { cl.Token = oldTokID + "=" + oldTokSecret }, "GET", "token 'old' access expired"},
		{"token without secret", func(cl *simpve.Client) { cl.Token = "u@pve!tk" }, "GET", "no tokenid specified"},
	}
	unified := release >= "9.1.5"
	for _, tc := range cases {
		cl, _ := simpve.NewClient(c.URL("pve1"), c.CAFile())
		tc.setup(cl)
		path := "/version"
		if tc.method == "POST" {
			path = "/nodes/pve1/qemu"
		}
		want := tc.detail
		if unified && want != "No ticket" && !strings.Contains(want, "csrf") {
			want = "Authentication failed!"
		}
		for _, format := range []string{"json", "extjs"} {
			cl.Format = format
			r, err := cl.Do(tc.method, path, url.Values{"vmid": {"150"}})
			if err != nil {
				t.Fatal(err)
			}
			if r.Code != 401 || r.Status != want || len(r.Raw) != 0 {
				t.Errorf("%s (%s): got %d %q body %q, want 401 %q with an empty body", tc.name, format, r.Code, r.Status, r.Raw, want)
			}
		}
	}
	// A valid ticket with its CSRF token is accepted for a write.
	cl, _ := simpve.NewClient(c.URL("pve1"), c.CAFile())
	cl.Ticket, cl.CSRF = good, goodCSRF
	r, _ := cl.Do("POST", "/nodes/pve1/qemu", url.Values{"vmid": {"150"}})
	if r.Code != 403 || r.Status != "Permission check failed (/vms/150, VM.Allocate)" {
		t.Fatalf("valid ticket+CSRF: %d %q (want the permission check to be reached)", r.Code, r.Status)
	}
	// An expired account cannot log in either.
	login, _ := simpve.NewClient(c.URL("pve1"), c.CAFile())
	if err := login.Login("gone@pve", "pw"); err == nil || !strings.Contains(err.Error(), "401 authentication failure") {
		t.Errorf("login of an expired account: %v", err)
	}
}

func TestCopyIsRootPamOnly(t *testing.T) {
	c, root := startCluster(t, "pve1")
	must(t, root, "POST", "/nodes/pve1/storage/local-zfs/content", url.Values{"vmid": {"100"}, "filename": {"vm-100-disk-0"}, "size": {"1M"}})
	rootTokenID, rootSecret, _ := c.AddToken("root@pam", "tok", false)
	r, _ := tokenClient(t, c, rootTokenID, rootSecret).Do("POST", "/nodes/pve1/storage/local-zfs/content/vm-100-disk-0", url.Values{"target": {"vm-100-disk-1"}})
	if r.Code != 403 || r.Status != "Permission check failed (user != root@pam)" {
		t.Fatalf("root@pam token: %d %q: even root's tokens are refused by PVE", r.Code, r.Status)
	}
	d := must(t, root, "POST", "/nodes/pve1/storage/local-zfs/content/vm-100-disk-0", url.Values{"target": {"vm-100-disk-1"}})
	if st, err := root.WaitTask(simpve.UPIDOf(d), 5*time.Second); err != nil || st != "OK" {
		t.Fatalf("copy task %q %v", st, err)
	}
	if !c.Store("pve1", "local-zfs").Exists("vm-100-disk-1") {
		t.Fatal("the copy did not create the target volume")
	}
}

// TestACLNoAccessAndPools checks the parts of PVE's permission computation that are easy to
// get wrong: a NoAccess granted through a pool beats every other ACL of the member, a VM
// belongs to the first pool that lists it only, NoAccess without propagation hides only its
// own path, a group's grant deeper down replaces a user's inherited one, and a token's own
// ACL never reaches past its user's privileges.
func TestACLNoAccessAndPools(t *testing.T) {
	c, _ := startCluster(t, "pve1")
	c.AddUser("a@pve", "pw")
	c.AddGroup("ops", "a@pve")
	c.AddACL("/", "a@pve", "PVEVMAdmin", true)
	// pool "locked" holds VM 100 and denies the user everything on it
	c.AddPool("locked", []string{"100"}, nil)
	c.AddACL("/pool/locked", "a@pve", "NoAccess", true)
	// VM 100 is listed again in a later pool, which PVE ignores for it
	c.AddPool("later", []string{"100", "101"}, nil)
	c.AddACL("/pool/later", "a@pve", "Administrator", true)
	// NoAccess on /vms/200 without propagation: /vms/200 itself is dark, nothing below it is
	c.AddACL("/vms/200", "a@pve", "NoAccess", false)
	// a group grant deeper down replaces the user's inherited roles on that subtree
	c.AddACL("/vms/300", "@ops", "PVEAuditor", true)
	tid, tsecret, err := c.AddToken("a@pve", "ro", true)
	if err != nil {
		t.Fatal(err)
	}
	c.AddACL("/", tid, "Administrator", true)

	a, _ := simpve.NewClient(c.URL("pve1"), c.CAFile())
	if err := a.Login("a@pve", "pw"); err != nil {
		t.Fatal(err)
	}
	tok := tokenClient(t, c, tid, tsecret)
	for _, tc := range []struct {
		name       string
		cl         *simpve.Client
		path, priv string
		has        bool
	}{
		{"pool NoAccess beats a propagated / grant", a, "/vms/100", "VM.Audit", false},
		{"a VM's later pool does not apply", a, "/vms/100", "Sys.Modify", false},
		{"the later pool applies to its own VM", a, "/vms/101", "Sys.Modify", true},
		{"NoAccess without propagation on its path", a, "/vms/200", "VM.Audit", false},
		{"… but not below it", a, "/vms/200/x", "VM.Allocate", true},
		{"a group grant replaces the user's inherited roles", a, "/vms/300", "VM.Allocate", false},
		{"… and grants its own", a, "/vms/300", "VM.Audit", true},
		{"a privsep token with Administrator stays within its user", tok, "/vms/101", "VM.Allocate", true},
		{"… and never beyond it", tok, "/", "Sys.Modify", false},
	} {
		p := permsOf(t, tc.cl, tc.path)
		if _, has := p[tc.priv]; has != tc.has {
			t.Errorf("%s: %s on %s = %v, want %v; all: %v", tc.name, tc.priv, tc.path, has, tc.has, p)
		}
	}
	// The checks on a route use the same computation.
	r, err := a.Do("GET", "/nodes/pve1/qemu/100/config", nil)
	if err != nil || r.Code != 403 || r.Status != "Permission check failed (/vms/100, VM.Audit)" {
		t.Errorf("VM 100 in the NoAccess pool: %v %d %q", err, r.Code, r.Status)
	}
}
