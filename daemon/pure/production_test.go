package pure_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pvesnap/pvesnap/daemon/pure"
	"github.com/pvesnap/pvesnap/sim/flasharray"
)

// An array offering versions newer than pvesnap is tested against is spoken to in the newest
// tested one.
func TestVersionCappedAtTested(t *testing.T) {
	f := newFixture(t, "2.44")
	for i := 45; i <= 56; i++ {
		f.array.Offered = append(f.array.Offered, fmt.Sprintf("2.%d", i))
	}
	v, err := f.client.Version(ctx)
	if err != nil || v != pure.MaxVersion || v != pure.TestedVersions[len(pure.TestedVersions)-1] {
		t.Fatalf("negotiated %q (%v), want %s", v, err, pure.MaxVersion)
	}
	_, err = f.client.Arrays(ctx)
	must(t, err)
	f.checkContract(t)
}

// Every request carries an X-Request-ID of its own; an error names the one of its request.
func TestRequestIDs(t *testing.T) {
	f := newFixture(t, "2.44")
	_, err := f.client.Volume(ctx, "nope")
	if err == nil {
		t.Fatal("no error for a missing volume")
	}
	seen := map[string]bool{}
	var last string
	for _, x := range f.rec.log {
		id := x.req.Header.Get("X-Request-ID")
		if id == "" || seen[id] {
			t.Fatalf("%s %s: X-Request-ID %q (empty or reused)", x.method, x.path, id)
		}
		seen[id] = true
		last = id
	}
	var ae *pure.Error
	if !errors.As(err, &ae) || ae.RequestID != last || !strings.Contains(err.Error(), "X-Request-ID "+last) {
		t.Fatalf("error %v does not name request %s", err, last)
	}
}

// The gateway's rate limit without Retry-After: the spent per-second counter makes the client
// wait for the next second; past the retry budget the error says what the counters were.
func TestRateLimitCounters(t *testing.T) {
	f := newFixture(t, "2.44")
	_, err := f.client.Arrays(ctx) // log in before the limit
	must(t, err)
	f.array.RateLimit = flasharray.RateLimit{Second: 2, NoRetryAfter: true}
	start := time.Now()
	for i := 0; i < 5; i++ {
		if _, err := f.client.Arrays(ctx); err != nil {
			t.Fatalf("call %d under the rate limit: %v", i, err)
		}
	}
	if d := time.Since(start); d < 2*time.Second {
		t.Fatalf("5 calls at 2 per second took %v", d)
	}
	f = newFixture(t, "2.44")
	_, err = f.client.Arrays(ctx)
	must(t, err)
	f.client.Retries = 1
	f.array.RateLimit = flasharray.RateLimit{Minute: 1, NoRetryAfter: true}
	_, err = f.client.Arrays(ctx)
	must(t, err)
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	_, err = f.client.Arrays(cctx)
	if err == nil {
		t.Fatal("no error past the per-minute limit")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("spent per-minute counter: the client did not wait a minute: %v", err)
	}
	f.array.RateLimit = flasharray.RateLimit{Second: 1}
	f.client.Retries = -1 // no retry: the 429 itself
	_, _ = f.client.Arrays(ctx)
	_, err = f.client.Arrays(ctx)
	if !errors.Is(err, pure.ErrBusy) || !strings.Contains(err.Error(), "0 of 1 requests per second left") {
		t.Fatalf("the 429 does not say the counters: %v", err)
	}
}

// A GET that meets a transport error is sent again; a POST never is (the array may have
// acted), and its error names the request.
func TestTransportErrors(t *testing.T) {
	f := newFixture(t, "2.44")
	_, err := f.client.Arrays(ctx)
	must(t, err)
	fail := map[string]int{"GET": 2, "POST": 1}
	f.rec.fail = func(r *http.Request) error {
		if fail[r.Method] > 0 && !strings.HasSuffix(r.URL.Path, "/login") {
			fail[r.Method]--
			return &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}
		}
		return nil
	}
	gets := f.rec.count("GET", "/arrays")
	if _, err := f.client.Arrays(ctx); err != nil {
		t.Fatalf("GET after two resets: %v", err)
	}
	if n := f.rec.count("GET", "/arrays") - gets; n != 1 {
		t.Fatalf("%d GET /arrays answered after two resets, want 1", n)
	}
	_, err = f.client.CreateVolume(ctx, "v", 1<<20)
	if err == nil || !strings.Contains(err.Error(), "X-Request-ID") || f.rec.count("POST", "/volumes") != 0 {
		t.Fatalf("POST after a reset: %v, %d answered", err, f.rec.count("POST", "/volumes"))
	}
	if f.array.Serial("v") != "" {
		t.Fatal("the refused POST reached the array")
	}
}

// A login met by an overloaded array is retried, and when the array stays busy the error says
// so: the token was never judged.
func TestLoginBusy(t *testing.T) {
	f := newFixture(t, "2.44")
	f.array.Inject(flasharray.Fault{Route: "POST /login", Status: 503, Count: 1})
	if _, err := f.client.Arrays(ctx); err != nil {
		t.Fatalf("login after one 503: %v", err)
	}
	f.client.Logout(ctx)
	f.client.Retries = 2
	f.array.Inject(flasharray.Fault{Route: "POST /login", Status: 429, Count: 10})
	_, err := f.client.Arrays(ctx)
	if !errors.Is(err, pure.ErrBusy) || strings.Contains(err.Error(), "refused the API token") || !strings.Contains(err.Error(), "busy") {
		t.Fatalf("busy login: %v", err)
	}
	f.array.ClearFaults()
	f.array.Tokens = map[string]string{}
	if _, err := f.client.Arrays(ctx); err == nil || !strings.Contains(err.Error(), "refused the API token") {
		t.Fatalf("wrong token: %v", err)
	}
}

// What pvesnap creates stays out of default protection where the API has the switch (2.16 and
// later); an overwrite does not take the switch.
func TestNoDefaultProtection(t *testing.T) {
	for _, version := range []string{"2.4", "2.26", "2.44"} {
		t.Run(version, func(t *testing.T) {
			f := newFixture(t, version)
			a := f.array
			must(t, a.CreateProtectionGroup("safe"))
			must(t, a.SetDefaultProtection("", "safe"))
			v, err := f.client.CreateVolume(ctx, "pvesnap-a", 1<<20)
			must(t, err)
			_, err = f.client.CopyVolume(ctx, "pvesnap-b", v.Name, false)
			must(t, err)
			_, err = f.client.CopyVolume(ctx, "pvesnap-b", v.Name, true)
			must(t, err)
			for _, n := range []string{"pvesnap-a", "pvesnap-b"} {
				got := a.ProtectionGroupsOf(n)
				if version == "2.4" && len(got) != 1 || version != "2.4" && len(got) != 0 {
					t.Errorf("%s: %s is in %v", version, n, got)
				}
			}
			f.checkContract(t)
		})
	}
}

// Remote and destroyed hosts holding this node's initiator are not this node's host.
func TestFindHostsLocalOnly(t *testing.T) {
	f := newFixture(t, "2.44")
	iqn := "iqn.1993-08.org.debian:01:pve1"
	must(t, f.array.AddRemoteHost("pve1-on-fa2", []string{iqn}, nil, nil))
	must(t, f.array.CreateHost("pve1-old", []string{iqn}, nil, nil))
	must(t, f.array.DestroyHost("pve1-old"))
	must(t, f.array.CreateHost("pve1", []string{iqn}, nil, nil))
	hs, err := f.client.FindHosts(ctx, pure.Initiators{IQN: iqn})
	must(t, err)
	if len(hs) != 1 || hs[0].Name != "pve1" {
		t.Fatalf("FindHosts: %+v", hs)
	}
	f.checkContract(t)
}

// Volumes in pods and volume groups, and their snapshots, as the client reads them.
func TestPodAndVolumeGroupNames(t *testing.T) {
	f := newFixture(t, "2.44")
	must(t, f.array.CreatePod("pod1"))
	must(t, f.array.CreateVolumeGroup("pod1::vg"))
	v, err := f.client.CreateVolume(ctx, "pod1::vg/disk", 1<<20)
	must(t, err)
	if v.PodName() != "pod1" || v.VolumeGroup == nil || v.VolumeGroup.Name != "pod1::vg" {
		t.Fatalf("volume %+v", v)
	}
	must(t, f.array.CreateProtectionGroup("pod1::pg", v.Name))
	_, err = f.array.SnapshotProtectionGroup("pod1::pg", "daily")
	must(t, err)
	snaps, err := f.client.VolumeSnapshots(ctx, []string{v.Name}, "")
	must(t, err)
	if len(snaps) != 1 || snaps[0].Name != "pod1::pg.daily.vg/disk" || snaps[0].Source.Name != v.Name {
		t.Fatalf("snapshots %+v", snaps)
	}
	copyVol, err := f.client.CopyVolume(ctx, "pvesnap-tmp", snaps[0].Name, false)
	must(t, err)
	if copyVol.PodName() != "" {
		t.Fatalf("the copy landed in pod %s", copyVol.PodName())
	}
	f.checkContract(t)
}
