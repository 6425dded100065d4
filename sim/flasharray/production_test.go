package flasharray

import (
	"net/http"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/pvesnap/pvesnap/sim/reference"
)

// What production arrays hold besides plain volumes, in every reference version, each answer
// checked against that version's spec by rawClient: pods, volume groups, their snapshots and
// protection groups, and the names Purity gives them.
func TestPodsAndVolumeGroups(t *testing.T) {
	for _, version := range reference.FAVersions {
		t.Run(version, func(t *testing.T) {
			a := New("fa-sim", &Files{Dir: t.TempDir()})
			c := newRaw(t, a, version)
			must(t, a.CreatePod("pod1"))
			must(t, a.CreateVolumeGroup("vg1"))
			must(t, a.CreateVolumeGroup("pod1::vg2"))
			c.fails("POST", "/volumes", "names=nopod::v", map[string]any{"provisioned": 1 << 20}, 400, msgPodNotExist)
			c.fails("POST", "/volumes", "names=novg/v", map[string]any{"provisioned": 1 << 20}, 400, msgVGNotExist)
			v := items(c.must("POST", "/volumes", "names=pod1::v1,vg1/v2,pod1::vg2/v3", map[string]any{"provisioned": 1 << 20}))
			wantPod := []any{"pod1", nil, "pod1"}
			wantVG := []any{nil, "vg1", "pod1::vg2"}
			for i, it := range v {
				if it["pod"].(map[string]any)["name"] != wantPod[i] || it["volume_group"].(map[string]any)["name"] != wantVG[i] {
					t.Errorf("%s: pod %v, volume group %v", it["name"], it["pod"], it["volume_group"])
				}
			}
			s := items(c.must("POST", "/volume-snapshots", "source_names=pod1::v1,vg1/v2", map[string]any{"suffix": "s1"}))
			if s[0]["name"] != "pod1::v1.s1" || s[1]["name"] != "vg1/v2.s1" || s[0]["pod"].(map[string]any)["name"] != "pod1" ||
				s[1]["volume_group"].(map[string]any)["name"] != "vg1" {
				t.Errorf("snapshots %v", s)
			}
			// A protection group in a pod protects only that pod's volumes; its member
			// snapshots name the volume without the pod.
			if err := a.CreateProtectionGroup("pod1::pg", "pod1::v1", "vg1/v2"); err == nil {
				t.Error("a pod's protection group took a volume outside the pod")
			}
			must(t, a.CreateProtectionGroup("pod1::pg", "pod1::v1", "pod1::vg2/v3"))
			must(t, a.CreateProtectionGroup("pg", "vg1/v2"))
			c.must("POST", "/protection-group-snapshots", "source_names=pod1::pg", map[string]any{"suffix": "daily"})
			c.must("POST", "/protection-group-snapshots", "source_names=pg", map[string]any{"suffix": "daily"})
			var names []string
			for _, it := range items(c.must("GET", "/volume-snapshots", "", nil)) {
				names = append(names, it["name"].(string))
			}
			for _, want := range []string{"pod1::pg.daily.v1", "pod1::pg.daily.vg2/v3", "pg.daily.vg1/v2"} {
				if !slices.Contains(names, want) {
					t.Errorf("no member snapshot %s in %v", want, names)
				}
			}
			pgs := items(c.must("GET", "/protection-group-snapshots", "names=pod1::pg.daily", nil))
			if pgs[0]["pod"].(map[string]any)["name"] != "pod1" {
				t.Errorf("pod of the group snapshot: %v", pgs[0]["pod"])
			}
			c.must("GET", "/protection-groups", "names=pod1::pg", nil)
			// Copying a pod's snapshot out of the pod, and into another volume group.
			c.must("POST", "/volumes", "names=copy", map[string]any{"source": map[string]any{"name": "pod1::pg.daily.v1"}})
			c.must("POST", "/volumes", "names=vg1/copy", map[string]any{"source": map[string]any{"name": "pod1::v1.s1"}})
			pods := items(c.must("GET", "/pods", "", nil))
			if len(pods) != 1 || pods[0]["name"] != "pod1" || pods[0]["array_count"].(float64) != 1 {
				t.Errorf("pods %v", pods)
			}
			c.fails("GET", "/pods", "names=nope", nil, 400, msgPodNotExist)
			vgs := items(c.must("GET", "/volume-groups", "", nil))
			if len(vgs) != 2 || vgs[0]["name"] != "pod1::vg2" || vgs[1]["volume_count"].(float64) != 2 {
				t.Errorf("volume groups %v", vgs)
			}
			c.must("GET", "/volumes", "filter="+urlq("pod.name='pod1'"), nil)
		})
	}
}

// Asynchronous replication: the target lists SRC:PG.SUFFIX and SRC:PG.SUFFIX.VOL with serials
// of its own and the source's bytes.
func TestReplicatedSnapshots(t *testing.T) {
	src := New("fa-src", &Files{Dir: t.TempDir()})
	dstFiles := &Files{Dir: t.TempDir()}
	dst := New("fa-dst", dstFiles)
	serial, err := src.CreateVolume("v1", 1<<20)
	must(t, err)
	p := src.Data.(*Files).Path(serial)
	must(t, os.WriteFile(p, append([]byte("replicated"), make([]byte, 1<<20-10)...), 0o644))
	must(t, src.CreateProtectionGroup("pg", "v1"))
	name, err := src.SnapshotProtectionGroup("pg", "r1")
	must(t, err)
	full, err := dst.ReplicateProtectionGroupSnapshot(src, name)
	must(t, err)
	if full != "fa-src:pg.r1" {
		t.Fatalf("replicated group snapshot %s", full)
	}
	for _, version := range reference.FAVersions {
		c := newRaw(t, dst, version)
		m := items(c.must("GET", "/volume-snapshots", "filter="+urlq("name='fa-src:pg.r1.*'"), nil))
		if len(m) != 1 || m[0]["name"] != "fa-src:pg.r1.v1" || m[0]["source"].(map[string]any)["name"] != "fa-src:v1" || m[0]["serial"] == src.Serial("pg.r1.v1") {
			t.Errorf("%s: replicated members %v", version, m)
		}
		g := items(c.must("GET", "/protection-group-snapshots", "names=fa-src:pg.r1", nil))
		if g[0]["source"].(map[string]any)["name"] != "fa-src:pg" {
			t.Errorf("%s: replicated group snapshot %v", version, g)
		}
	}
	b, _ := os.ReadFile(dstFiles.Path(dst.Serial("fa-src:pg.r1.v1")))
	if string(b[:10]) != "replicated" {
		t.Fatalf("replica holds %q", b[:10])
	}
}

// Default protection: a new volume joins its container's default groups unless created with
// with_default_protection=false, which versions before 2.16 do not know; overwrite takes
// neither that nor add_to_protection_group_names.
func TestDefaultProtection(t *testing.T) {
	for _, version := range reference.FAVersions {
		t.Run(version, func(t *testing.T) {
			a := New("fa", nil)
			c := newRaw(t, a, version)
			a.CreateVolume("base", 1<<20)
			must(t, a.CreateProtectionGroup("daily"))
			must(t, a.CreatePod("pod1"))
			must(t, a.CreateProtectionGroup("pod1::hourly"))
			must(t, a.SetDefaultProtection("", "daily"))
			must(t, a.SetDefaultProtection("pod1", "pod1::hourly"))
			if err := a.SetDefaultProtection("", "pod1::hourly"); err == nil {
				t.Error("the array's default protection took a pod's group")
			}
			c.must("POST", "/volumes", "names=joined", map[string]any{"provisioned": 1 << 20})
			c.must("POST", "/volumes", "names=pod1::joined", map[string]any{"provisioned": 1 << 20})
			if g := a.ProtectionGroupsOf("joined"); !slices.Equal(g, []string{"daily"}) {
				t.Errorf("array default protection: %v", g)
			}
			if g := a.ProtectionGroupsOf("pod1::joined"); !slices.Equal(g, []string{"pod1::hourly"}) {
				t.Errorf("pod default protection: %v", g)
			}
			c.lax = version == "2.4" // the parameter is not in 2.4: sent on purpose
			if version == "2.4" {
				c.fails("POST", "/volumes", "names=optout&with_default_protection=false", map[string]any{"provisioned": 1 << 20}, 400,
					"Invalid query parameter: with_default_protection.")
				return
			}
			c.must("POST", "/volumes", "names=optout&with_default_protection=false", map[string]any{"source": map[string]any{"name": "base"}})
			if g := a.ProtectionGroupsOf("optout"); len(g) != 0 {
				t.Errorf("opted out, yet in %v", g)
			}
			c.fails("POST", "/volumes", "names=optout&overwrite=true&with_default_protection=false", map[string]any{"source": map[string]any{"name": "base"}}, 400,
				"with_default_protection cannot be used when overwrite is true.")
		})
	}
}

// SafeMode: a member of a ratcheted group can be destroyed, not eradicated; it stays, named,
// for the delay of objects that cannot be eradicated by hand, then the array eradicates it.
// The array's eradication_config says so in the versions that have it.
func TestSafeModeRetentionLock(t *testing.T) {
	for _, version := range reference.FAVersions {
		t.Run(version, func(t *testing.T) {
			a := New("fa", nil)
			now := time.Unix(1_800_000_000, 0)
			a.Now = func() time.Time { return now }
			a.DisabledDelay = 7 * 24 * time.Hour
			c := newRaw(t, a, version)
			a.CreateVolume("v", 1<<20)
			a.CreateVolume("free", 1<<20)
			must(t, a.CreateProtectionGroup("safe", "v"))
			must(t, a.LockRetention("safe"))
			c.must("PATCH", "/volumes", "names=v,free", map[string]any{"destroyed": true})
			c.fails("DELETE", "/volumes", "names=v", nil, 400, msgEradicateOff)
			c.must("DELETE", "/volumes", "names=free", nil)
			it := items(c.must("GET", "/volumes", "names=v&destroyed=true", nil))[0]
			if it["time_remaining"].(float64) != float64(a.DisabledDelay/time.Millisecond) {
				t.Errorf("time_remaining %v", it["time_remaining"])
			}
			arr := items(c.must("GET", "/arrays", "", nil))[0]
			ec, has := arr["eradication_config"].(map[string]any)
			switch {
			case version == "2.4" && has:
				t.Errorf("2.4 has no eradication_config: %v", ec)
			case version != "2.4" && (ec["manual_eradication"] != "partially-disabled" || ec["disabled_delay"].(float64) != float64(a.DisabledDelay/time.Millisecond)):
				t.Errorf("eradication_config %v", ec)
			}
			pg := items(c.must("GET", "/protection-groups", "names=safe", nil))[0]
			if version != "2.4" && pg["retention_lock"] != "ratcheted" {
				t.Errorf("retention_lock %v", pg["retention_lock"])
			}
			now = now.Add(a.DisabledDelay)
			c.fails("GET", "/volumes", "names=v", nil, 400, msgVolNotExist)
			a.SafeMode = true
			if version != "2.4" && items(c.must("GET", "/arrays", "", nil))[0]["eradication_config"].(map[string]any)["manual_eradication"] != "all-disabled" {
				t.Error("array-wide SafeMode not reported")
			}
		})
	}
}

// Hosts a client must not pick: another array's or realm's (is_local false) and destroyed
// ones, even with this node's initiators; none of them can be connected to.
func TestRemoteAndDestroyedHosts(t *testing.T) {
	for _, version := range reference.FAVersions {
		t.Run(version, func(t *testing.T) {
			a := New("fa", nil)
			c := newRaw(t, a, version)
			iqn := []string{"iqn.1993-08.org.debian:01:pve1"}
			must(t, a.AddRemoteHost("pve1-remote", iqn, nil, nil))
			must(t, a.CreateHost("pve1-old", iqn, nil, nil))
			must(t, a.DestroyHost("pve1-old"))
			must(t, a.CreateHost("pve1", iqn, nil, nil))
			a.CreateVolume("v", 1<<20)
			hs := items(c.must("GET", "/hosts", "filter="+urlq("iqns='"+iqn[0]+"'"), nil))
			got := map[string]map[string]any{}
			for _, h := range hs {
				got[h["name"].(string)] = h
			}
			if got["pve1-remote"]["is_local"] != false || got["pve1"]["is_local"] != true {
				t.Errorf("is_local: %v", hs)
			}
			_, listed := got["pve1-old"]
			if version == hostDestroyedSince {
				if !listed || got["pve1-old"]["destroyed"] != true || got["pve1"]["destroyed"] != false {
					t.Errorf("destroyed host in %s: %v", version, hs)
				}
			} else if listed {
				t.Errorf("%s lists a destroyed host: %v", version, hs)
			}
			want := 1 // pve1; 2.44 also lists the destroyed pve1-old, local too
			if version == hostDestroyedSince {
				want = 2
			}
			if local := items(c.must("GET", "/hosts", "filter="+urlq("iqns='"+iqn[0]+"' and is_local"), nil)); len(local) != want {
				t.Errorf("is_local filter: %v", local)
			}
			c.fails("POST", "/connections", "host_names=pve1-remote&volume_names=v", nil, 400, msgHostNotExist)
			c.fails("POST", "/connections", "host_names=pve1-old&volume_names=v", nil, 400, msgHostNotExist)
			c.must("POST", "/connections", "host_names=pve1&volume_names=v", nil)
		})
	}
}

// An NVMe host takes no LUN ("Should not be used together with an NVMe host or host group").
func TestNVMeHostRefusesLUN(t *testing.T) {
	a := New("fa", nil)
	c := newRaw(t, a, "2.44")
	must(t, a.CreateHost("nv", nil, []string{"nqn.2014-08.org.nvmexpress:uuid:1"}, nil))
	a.CreateVolume("v", 1<<20)
	c.fails("POST", "/connections", "host_names=nv&volume_names=v", map[string]any{"lun": 5}, 400, msgNVMeLUN)
	c.must("POST", "/connections", "host_names=nv&volume_names=v", nil)
}

// ActiveCluster: a stretched pod's volumes and snapshots are the same objects, serials
// included, on both arrays; what is made or eradicated on one is so on the other; a volume
// connected on either cannot be destroyed.
func TestActiveCluster(t *testing.T) {
	data := &Files{Dir: t.TempDir()}
	fa, fb := New("fa-a", data), New("fa-b", data)
	if err := Pair(fa, New("fa-c", &Files{Dir: t.TempDir()})); err == nil {
		t.Fatal("arrays with separate data planes were paired")
	}
	must(t, Pair(fa, fb))
	must(t, fa.CreatePod("pod1"))
	sa, err := fa.CreateVolume("pod1::before", 1<<20)
	must(t, err)
	must(t, fa.StretchPod("pod1", fb))
	for _, version := range reference.FAVersions {
		t.Run(version, func(t *testing.T) {
			ca, cb := newRaw(t, fa, version), newRaw(t, fb, version)
			name := "pod1::v" + version[2:]
			va := items(ca.must("POST", "/volumes", "names="+name, map[string]any{"provisioned": 1 << 20}))[0]
			vb := items(cb.must("GET", "/volumes", "names="+name, nil))[0]
			if va["serial"] != vb["serial"] || va["id"] != vb["id"] {
				t.Errorf("stretched volume differs: %v / %v", va, vb)
			}
			if b := items(cb.must("GET", "/volumes", "names=pod1::before", nil))[0]; b["serial"] != sa {
				t.Errorf("volume made before the stretch: %v", b)
			}
			pod := items(cb.must("GET", "/pods", "names=pod1", nil))[0]
			if pod["array_count"].(float64) != 2 {
				t.Errorf("pod %v", pod)
			}
			cb.must("POST", "/volume-snapshots", "source_names="+name, map[string]any{"suffix": "s"})
			ca.must("GET", "/volume-snapshots", "names="+name+".s", nil)
			host := "h" + version[2:]
			must(t, fb.CreateHost(host, []string{"iqn.x:" + version}, nil, nil))
			cb.must("POST", "/connections", "host_names="+host+"&volume_names="+name, nil)
			ca.fails("PATCH", "/volumes", "names="+name, map[string]any{"destroyed": true}, 400, msgVolConnected)
			cb.must("DELETE", "/connections", "host_names="+host+"&volume_names="+name, nil)
			ca.must("PATCH", "/volumes", "names="+name, map[string]any{"destroyed": true})
			ca.must("DELETE", "/volumes", "names="+name, nil)
			cb.fails("GET", "/volumes", "names="+name, nil, 400, msgVolNotExist)
			// Outside the pod the arrays are separate.
			ca.must("POST", "/volumes", "names=own"+version[2:], map[string]any{"provisioned": 1 << 20})
			cb.fails("GET", "/volumes", "names=own"+version[2:], nil, 400, msgVolNotExist)
		})
	}
}

// The API gateway's rate limit: counters on every answer, 429 with Retry-After beyond it.
func TestRateLimit(t *testing.T) {
	a := New("fa", nil)
	c := newRaw(t, a, "2.44")
	a.RateLimit = RateLimit{Second: 3, Minute: 100}
	var last http.Header
	for i := 0; i < 3; i++ {
		st, _, h := c.do("GET", "/arrays", "", nil)
		if st != 200 || h.Get("X-RateLimit-Limit-second") != "3" || h.Get("X-RateLimit-Remaining-second") != strconv.Itoa(2-i) ||
			h.Get("X-RateLimit-Limit-minute") != "100" {
			t.Fatalf("request %d: %d %v", i, st, h)
		}
		last = h
	}
	st, m, h := c.do("GET", "/arrays", "", nil)
	if st != 429 || m["message"] != "API rate limit exceeded" || h.Get("Retry-After") != "1" || h.Get("X-RateLimit-Remaining-second") != "0" {
		t.Fatalf("over the limit: %d %v %v (before: %v)", st, m, h, last)
	}
	time.Sleep(1100 * time.Millisecond)
	if st, _, _ := c.do("GET", "/arrays", "", nil); st != 200 {
		t.Fatalf("after the window: %d", st)
	}
}

// A login is refused like any call when the array is overloaded (a fault bound to it).
func TestLoginFault(t *testing.T) {
	a := New("fa", nil)
	a.AddToken("tok", "pureuser")
	srv := newRaw(t, a, "2.44").srv
	a.Inject(Fault{Route: "POST /login", Status: 503, Count: 1})
	for i, want := range []int{503, 200} {
		req, _ := http.NewRequest("POST", srv.URL+"/api/2.44/login", nil)
		req.Header.Set("api-token", "tok")
		resp, err := http.DefaultClient.Do(req)
		must(t, err)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("login %d: %d, want %d", i, resp.StatusCode, want)
		}
	}
}
