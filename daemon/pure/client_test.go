package pure_test

import (
	"bytes"
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pvesnap/pvesnap/daemon/pure"
	"github.com/pvesnap/pvesnap/sim/flasharray"
	"github.com/pvesnap/pvesnap/sim/reference"
)

var ctx = context.Background()

// exchange is one request the client sent and the array's answer.
type exchange struct {
	method, path string // path without /api/<version>
	version      string
	req          *http.Request
	reqBody      []byte
	status       int
	respBody     []byte
}

// recorder sits between the client and the simulator and keeps every exchange.
type recorder struct {
	base   http.RoundTripper
	mu     sync.Mutex
	log    []exchange
	before func(*http.Request) // runs before each request is sent
	// fail, when it returns an error, fails the request in transport: it never reaches
	// the array and is not logged as an exchange.
	fail func(*http.Request) error
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		body, _ = io.ReadAll(req.Body)
		req.Body = io.NopCloser(bytes.NewReader(body))
	}
	if r.before != nil {
		r.before(req)
	}
	if r.fail != nil {
		if err := r.fail(req); err != nil {
			return nil, err
		}
	}
	resp, err := r.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body = io.NopCloser(bytes.NewReader(raw))
	x := exchange{method: req.Method, req: req, reqBody: body, status: resp.StatusCode, respBody: raw}
	rest := strings.TrimPrefix(req.URL.Path, "/api/")
	if rest == "api_version" {
		x.path = "/api_version"
	} else {
		x.version, x.path, _ = strings.Cut(rest, "/")
		x.path = "/" + x.path
	}
	r.mu.Lock()
	r.log = append(r.log, x)
	r.mu.Unlock()
	return resp, nil
}

func (r *recorder) count(method, path string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, x := range r.log {
		if x.method == method && x.path == path {
			n++
		}
	}
	return n
}

type fixture struct {
	array  *flasharray.Array
	client *pure.Client
	rec    *recorder
	files  *flasharray.Files
}

// newFixture starts a simulated array over TLS offering REST up to maxVersion and a client
// that trusts only its certificate.
func newFixture(t *testing.T, maxVersion string) *fixture {
	t.Helper()
	files := &flasharray.Files{Dir: t.TempDir()}
	a := flasharray.New("fa-lab", files)
	for i, v := range a.Offered {
		if v == maxVersion {
			a.Offered = a.Offered[:i+1]
		}
	}
	a.AddToken("7f3b6d4e-api-token", "pvesnap")
	srv := httptest.NewTLSServer(a)
	t.Cleanup(srv.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644)
	c, err := pure.New(srv.URL, "7f3b6d4e-api-token", pure.Options{CAFile: ca, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{base: c.HTTP.Transport}
	c.HTTP.Transport = rec
	c.Backoff = 5 * time.Millisecond
	return &fixture{array: a, client: c, rec: rec, files: files}
}

// checkContract validates every exchange against the spec of the negotiated version.
func (f *fixture) checkContract(t *testing.T) {
	t.Helper()
	for _, x := range f.rec.log {
		if x.path == "/api_version" {
			continue
		}
		spec, err := reference.FA(x.version)
		if err != nil {
			t.Fatalf("no reference spec for %s: %v", x.version, err)
		}
		for _, e := range reference.CheckFARequest(spec, x.method, x.path, x.req.URL.Query(), x.req.Header, x.reqBody) {
			t.Errorf("client request %s: %s", x.version, e)
		}
		for _, e := range reference.CheckFAResponse(spec, x.method, x.path, x.status, x.respBody) {
			t.Errorf("simulator answer %s: %s", x.version, e)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// The contract: every operation of the client, against arrays speaking each reference
// version, sends requests the spec allows and gets answers in the spec's shapes.
func TestContract(t *testing.T) {
	for _, version := range reference.FAVersions {
		t.Run(version, func(t *testing.T) {
			f := newFixture(t, version)
			c, a := f.client, f.array
			if v, err := c.Version(ctx); err != nil || v != version {
				t.Fatalf("negotiated %q, %v; want %s", v, err, version)
			}
			arrays, err := c.Arrays(ctx)
			must(t, err)
			if len(arrays) != 1 || arrays[0].Name != "fa-lab" || arrays[0].OS != "Purity//FA" {
				t.Fatalf("arrays %+v", arrays)
			}
			v0, err := c.CreateVolume(ctx, "pve-vg1-lun0", 4<<30)
			must(t, err)
			v1, err := c.CreateVolume(ctx, "pve-vg1-lun1", 4<<30)
			must(t, err)
			if len(v0.Serial) != 24 || v0.Provisioned != 4<<30 {
				t.Fatalf("volume %+v", v0)
			}
			got, err := c.Volume(ctx, "pve-vg1-lun0")
			must(t, err)
			if got.ID != v0.ID {
				t.Fatalf("by name: %+v", got)
			}
			bySerial, err := c.VolumesBySerial(ctx, strings.ToLower(v1.Serial), v0.Serial)
			must(t, err)
			if len(bySerial) != 2 {
				t.Fatalf("by serial: %+v", bySerial)
			}
			vols, err := c.Volumes(ctx, "name='pve-vg1-*'")
			must(t, err)
			if len(vols) != 2 {
				t.Fatalf("filter: %d volumes", len(vols))
			}
			snaps, err := c.CreateVolumeSnapshots(ctx, []string{v0.Name, v1.Name}, "pvesnap-100-1")
			must(t, err)
			if len(snaps) != 2 || snaps[0].Name != "pve-vg1-lun0.pvesnap-100-1" || snaps[0].Created != snaps[1].Created {
				t.Fatalf("snapshots %+v", snaps)
			}
			must(t, a.CreateProtectionGroup("pg-pve", v0.Name, v1.Name))
			_, err = a.SnapshotProtectionGroup("pg-pve", "hourly-1")
			must(t, err)
			pgs, err := c.ProtectionGroups(ctx)
			must(t, err)
			pgsnaps, err := c.ProtectionGroupSnapshots(ctx, "pg-pve")
			must(t, err)
			if len(pgs) != 1 || pgs[0].VolumeCount != 2 || len(pgsnaps) != 1 || pgsnaps[0].Name != "pg-pve.hourly-1" {
				t.Fatalf("pgroups %+v snaps %+v", pgs, pgsnaps)
			}
			all, err := c.VolumeSnapshots(ctx, []string{v0.Name}, "")
			must(t, err)
			if len(all) != 2 || all[0].Name != "pg-pve.hourly-1.pve-vg1-lun0" || all[0].Source.Name != v0.Name {
				t.Fatalf("volume snapshots of %s: %+v", v0.Name, all)
			}
			copyVol, err := c.CopyVolume(ctx, "pvesnap-job-1", "pg-pve.hourly-1.pve-vg1-lun0", false)
			must(t, err)
			if copyVol.Serial == v0.Serial || copyVol.Provisioned != v0.Provisioned {
				t.Fatalf("copy %+v", copyVol)
			}
			over, err := c.CopyVolume(ctx, "pvesnap-job-1", "pve-vg1-lun1.pvesnap-100-1", true)
			must(t, err)
			if over.Serial != copyVol.Serial {
				t.Fatal("overwrite changed the serial")
			}
			must(t, a.CreateHost("pve1", []string{"iqn.1993-08.org.debian:01:pve1"}, nil, nil))
			must(t, a.CreateHost("pve2", nil, nil, []string{"21:00:00:24:ff:4c:9a:01"}))
			must(t, a.CreateHostGroup("pve-cluster", "pve1", "pve2"))
			hosts, err := c.Hosts(ctx)
			must(t, err)
			groups, err := c.HostGroups(ctx)
			must(t, err)
			if len(hosts) != 2 || hosts[1].WWNs[0] != "21000024FF4C9A01" || hosts[0].HostGroup.Name != "pve-cluster" || len(groups) != 1 {
				t.Fatalf("hosts %+v groups %+v", hosts, groups)
			}
			mine, err := c.FindHosts(ctx, pure.Initiators{WWPNs: []string{"0x21000024ff4c9a01"}})
			must(t, err)
			if len(mine) != 1 || mine[0].Name != "pve2" {
				t.Fatalf("FindHosts: %+v", mine)
			}
			conn, err := c.Connect(ctx, copyVol.Name, pure.Target{Host: "pve1"})
			must(t, err)
			again, err := c.Connect(ctx, copyVol.Name, pure.Target{Host: "pve1"})
			must(t, err)
			if conn.LUN != 1 || again.LUN != 1 {
				t.Fatalf("connect: %+v, again %+v", conn, again)
			}
			shared, err := c.Connect(ctx, v0.Name, pure.Target{HostGroup: "pve-cluster"})
			must(t, err)
			if shared.LUN != 254 || shared.HostGroup.Name != "pve-cluster" {
				t.Fatalf("shared connection %+v", shared)
			}
			cs, err := c.Connections(ctx, v0.Name, nil)
			must(t, err)
			if len(cs) != 2 {
				t.Fatalf("host-group connection listed %d times, want once per member", len(cs))
			}
			if got := f.files.Connected(copyVol.Serial); len(got) != 1 || got[0] != "pve1:1" {
				t.Fatalf("data plane connections %v", got)
			}
			must(t, c.Disconnect(ctx, copyVol.Name, pure.Target{Host: "pve1"}))
			must(t, c.Disconnect(ctx, copyVol.Name, pure.Target{Host: "pve1"})) // absent: not an error
			must(t, c.Disconnect(ctx, v0.Name, pure.Target{HostGroup: "pve-cluster"}))
			must(t, c.DestroyVolume(ctx, copyVol.Name))
			must(t, c.RecoverVolume(ctx, copyVol.Name))
			must(t, c.DestroyVolume(ctx, copyVol.Name))
			must(t, c.EradicateVolume(ctx, copyVol.Name))
			must(t, c.DestroyVolumeSnapshot(ctx, "pve-vg1-lun0.pvesnap-100-1"))
			must(t, c.EradicateVolumeSnapshot(ctx, "pve-vg1-lun0.pvesnap-100-1"))
			c.Logout(ctx)
			f.checkContract(t)
			for _, op := range []string{"POST /login", "GET /arrays", "GET /volumes", "POST /volumes", "PATCH /volumes",
				"DELETE /volumes", "GET /volume-snapshots", "POST /volume-snapshots", "PATCH /volume-snapshots",
				"DELETE /volume-snapshots", "GET /protection-groups", "GET /protection-group-snapshots", "GET /hosts",
				"GET /host-groups", "GET /connections", "POST /connections", "DELETE /connections", "POST /logout"} {
				m, p, _ := strings.Cut(op, " ")
				if f.rec.count(m, p) == 0 {
					t.Errorf("the contract run never sent %s", op)
				}
			}
		})
	}
}

// An array too old for pvesnap is refused with a clear reason.
func TestVersionTooOld(t *testing.T) {
	f := newFixture(t, "2.3")
	_, err := f.client.Arrays(ctx)
	if err == nil || !strings.Contains(err.Error(), "pvesnap needs 2.x >= 2.4") {
		t.Fatalf("got %v", err)
	}
}

// A session that expires between two pages of a listing: the client logs in again once and
// carries on where it was.
func TestSessionExpiryMidOperation(t *testing.T) {
	f := newFixture(t, "2.44")
	f.array.MaxLimit = 3
	for i := 0; i < 8; i++ {
		f.array.CreateVolume(fmt.Sprintf("v%d", i), 1<<20)
	}
	pages := 0
	f.rec.before = func(r *http.Request) {
		if r.Method == "GET" && strings.HasSuffix(r.URL.Path, "/volumes") {
			if pages++; pages == 2 {
				f.array.ExpireSessions()
			}
		}
	}
	vols, err := f.client.Volumes(ctx, "")
	must(t, err)
	if len(vols) != 8 {
		t.Fatalf("%d volumes after re-login", len(vols))
	}
	if n := f.rec.count("POST", "/login"); n != 2 {
		t.Fatalf("%d logins, want 2", n)
	}
	// A token the array no longer accepts at all: one re-login, then the error.
	f.array.ExpireSessions()
	f.array.Tokens = map[string]string{}
	_, err = f.client.Volumes(ctx, "")
	if err == nil || !strings.Contains(err.Error(), "refused the API token") {
		t.Fatalf("revoked token: %v", err)
	}
	f.checkContract(t)
}

// 429 with Retry-After: the client waits as told and retries; 503 and 500 "Server is busy"
// back off too; past the retry budget the error is ErrBusy.
func TestRetryAfter(t *testing.T) {
	f := newFixture(t, "2.44")
	_, err := f.client.Arrays(ctx) // log in
	must(t, err)
	f.array.Inject(flasharray.Fault{Status: 429, RetryAfter: "1", Count: 1})
	start := time.Now()
	_, err = f.client.Arrays(ctx)
	must(t, err)
	if waited := time.Since(start); waited < time.Second {
		t.Fatalf("retried after %v, before the array's Retry-After of 1 s", waited)
	}
	f.array.Inject(flasharray.Fault{Status: 503, Count: 2})
	f.array.Inject(flasharray.Fault{Status: 500, Count: 1})
	before := f.array.Requests()
	_, err = f.client.Arrays(ctx)
	must(t, err)
	if n := f.array.Requests() - before; n != 4 {
		t.Fatalf("%d requests for 3 faults and a success", n)
	}
	f.client.Retries = 2
	f.array.Inject(flasharray.Fault{Status: 429, Count: 3})
	_, err = f.client.Arrays(ctx)
	if !errors.Is(err, pure.ErrBusy) {
		t.Fatalf("past the retry budget: %v", err)
	}
	// A cancelled context stops the waiting at once.
	f.array.Inject(flasharray.Fault{Status: 429, RetryAfter: "30", Count: 1})
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	start = time.Now()
	_, err = f.client.Arrays(cctx)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
		t.Fatalf("cancelled wait: %v after %v", err, time.Since(start))
	}
}

// Five pages: every item once, in order, each page one request.
func TestPaginationFivePages(t *testing.T) {
	f := newFixture(t, "2.44")
	f.array.MaxLimit = 10
	var want []string
	for i := 0; i < 47; i++ {
		n := fmt.Sprintf("vm-%03d-disk-0", i)
		f.array.CreateVolume(n, 1<<20)
		want = append(want, n)
	}
	vols, err := f.client.Volumes(ctx, "")
	must(t, err)
	if len(vols) != len(want) {
		t.Fatalf("%d volumes", len(vols))
	}
	for i := range want {
		if vols[i].Name != want[i] {
			t.Fatalf("item %d: %s, want %s", i, vols[i].Name, want[i])
		}
	}
	if n := f.rec.count("GET", "/volumes"); n != 5 {
		t.Fatalf("%d pages", n)
	}
	f.checkContract(t)
}

// Each error class, produced by the simulator's real messages.
func TestClassifiedErrors(t *testing.T) {
	f := newFixture(t, "2.44")
	c, a := f.client, f.array
	a.CreateVolume("vol", 1<<20)
	a.CreateHost("h", []string{"iqn.x:h"}, nil, nil)
	cases := []struct {
		name  string
		class error
		call  func() error
	}{
		{"missing volume", pure.ErrNotFound, func() error { _, err := c.Volume(ctx, "nope"); return err }},
		{"missing snapshot", pure.ErrNotFound, func() error { return c.DestroyVolumeSnapshot(ctx, "vol.nope") }},
		{"copy from a missing snapshot", pure.ErrNotFound, func() error { _, err := c.CopyVolume(ctx, "x", "vol.nope", false); return err }},
		{"name taken", pure.ErrExists, func() error { _, err := c.CreateVolume(ctx, "vol", 1<<20); return err }},
		{"copy onto a volume without overwrite", pure.ErrExists, func() error { _, err := c.CopyVolume(ctx, "vol", "vol", false); return err }},
		{"destroyed twice", pure.ErrDestroyed, func() error {
			c.DestroyVolume(ctx, "vol")
			defer c.RecoverVolume(ctx, "vol")
			return c.DestroyVolume(ctx, "vol")
		}},
		{"eradication disabled", pure.ErrEradicateDisabled, func() error {
			a.SafeMode = true
			defer func() { a.SafeMode = false }()
			c.DestroyVolume(ctx, "vol")
			defer c.RecoverVolume(ctx, "vol")
			return c.EradicateVolume(ctx, "vol")
		}},
		{"connect to a missing host", pure.ErrNotFound, func() error { _, err := c.Connect(ctx, "vol", pure.Target{Host: "ghost"}); return err }},
	}
	for _, tc := range cases {
		err := tc.call()
		if err == nil || !errors.Is(err, tc.class) {
			t.Errorf("%s: got %v, want class %v", tc.name, err, tc.class)
		}
		for _, other := range []error{pure.ErrNotFound, pure.ErrExists, pure.ErrDestroyed, pure.ErrEradicateDisabled, pure.ErrSession, pure.ErrBusy} {
			if other != tc.class && errors.Is(err, other) && !(tc.class == pure.ErrDestroyed && other == pure.ErrNotFound) {
				t.Errorf("%s: %v is also classed %v", tc.name, err, other)
			}
		}
	}
	// Connection already exists / does not exist are absorbed by Connect and Disconnect but
	// classified for callers that meet them.
	e := &pure.Error{Status: 400, Message: "Connection already exists.", Context: "vol"}
	if !errors.Is(e, pure.ErrConnectionExists) || !errors.Is(e, pure.ErrExists) {
		t.Error("Connection already exists. not classified")
	}
	e = &pure.Error{Status: 400, Message: "Connection does not exist."}
	if !errors.Is(e, pure.ErrNotConnected) {
		t.Error("Connection does not exist. not classified")
	}
	if e := (&pure.Error{Status: 400, Message: "Host cannot be deleted due to existing connections."}); !errors.Is(e, pure.ErrInUse) {
		t.Error("existing connections not classified as in use")
	}
	if e := (&pure.Error{Status: 401, Message: "Invalid session."}); !errors.Is(e, pure.ErrSession) {
		t.Error("401 not a session error")
	}
	f.checkContract(t)
}

// The client refuses a server whose certificate it was not told to trust.
func TestTLSVerified(t *testing.T) {
	a := flasharray.New("fa", nil)
	srv := httptest.NewTLSServer(a)
	defer srv.Close()
	c, err := pure.New(srv.URL, "tok", pure.Options{})
	must(t, err)
	if _, err := c.Arrays(ctx); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("untrusted certificate accepted: %v", err)
	}
	if _, err := pure.New("http://array", "tok", pure.Options{}); err == nil {
		t.Fatal("plain http accepted")
	}
}
