package pve_test

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"

	"github.com/pvesnap/pvesnap/sim/reference"
)

// TestParameterVerification: pveproxy refuses bad parameters with 400 "Parameter
// verification failed." and one message per parameter, in JSONSchema.pm's words.
func TestParameterVerification(t *testing.T) {
	_, cl := startCluster(t, "pve1")
	for _, tc := range []struct {
		name, method, path string
		params             url.Values
		want               map[string]string
	}{
		{"integer type", "GET", "/nodes/pve1/tasks", url.Values{"limit": {"ten"}},
			map[string]string{"limit": "type check ('integer') failed - got 'ten'"}},
		{"format before minimum", "POST", "/nodes/pve1/qemu", url.Values{"vmid": {"99"}},
			map[string]string{"vmid": "invalid format - value does not look like a valid VM ID\n"}},
		{"minimum", "GET", "/nodes/pve1/tasks", url.Values{"limit": {"-1"}},
			map[string]string{"limit": "value must have a minimum value of 0"}},
		{"maximum and a missing parameter", "DELETE", "/nodes/pve1/storage/local-lvm/content/vm-100-disk-9",
			url.Values{"delay": {"31"}},
			map[string]string{"delay": "value must have a maximum value of 30"}},
		{"a missing parameter", "POST", "/nodes/pve1/storage/local-lvm/content",
			url.Values{"vmid": {"100"}, "filename": {"vm-100-disk-1"}},
			map[string]string{"size": "property is missing and it is not optional"}},
		{"boolean type", "GET", "/nodes/pve1/storage", url.Values{"enabled": {"yes"}},
			map[string]string{"enabled": "type check ('boolean') failed - got 'yes'"}},
		{"enum", "GET", "/nodes/pve1/tasks", url.Values{"source": {"everything"}},
			map[string]string{"source": "value 'everything' does not have a value in the enumeration 'archive, active, all'"}},
		{"unknown parameter", "GET", "/version", url.Values{"verbose": {"1"}},
			map[string]string{"verbose": "property is not defined in schema and the schema does not allow additional properties"}},
		{"named format", "POST", "/nodes/pve1/qemu", url.Values{"vmid": {"150"}, "name": {"web_1"}},
			map[string]string{"name": "invalid format - value does not look like a valid DNS name\n"}},
		{"format of a list", "GET", "/nodes/pve1/tasks", url.Values{"statusfilter": {"ok,weird"}},
			map[string]string{"statusfilter": "invalid format - invalid status 'weird'\n"}},
		{"max length", "PUT", "/nodes/pve1/qemu/100/config", url.Values{"digest": {strings.Repeat("a", 41)}},
			map[string]string{"digest": "value may only be 40 characters long"}},
		{"pattern", "PUT", "/nodes/pve1/qemu/100/config", url.Values{"vmgenid": {"not-a-uuid"}},
			map[string]string{"vmgenid": "value does not match the regex pattern"}},
		{"indexed family beyond its last index", "PUT", "/nodes/pve1/qemu/100/config", url.Values{"scsi31": {"local-lvm:1"}},
			map[string]string{"scsi31": "property is not defined in schema and the schema does not allow additional properties"}},
		{"a property string's key", "PUT", "/nodes/pve1/qemu/100/config", url.Values{"scsi0": {"local-lvm:vm-100-disk-0,speed=fast"}},
			map[string]string{"scsi0": "invalid format - invalid key in comma-separated list property: speed\n"}},
		{"a property string's value (through an alias)", "PUT", "/nodes/pve1/qemu/100/config", url.Values{"net0": {"virtio=01:00:00:00:00:01,bridge=vmbr0"}},
			map[string]string{"net0": "invalid format - format error\nnet0.macaddr: invalid format - value does not look like a valid unicast MAC address\n\n"}},
		{"a property string's enum", "PUT", "/nodes/pve1/qemu/100/config", url.Values{"scsi1": {"local-lvm:1,cache=fast"}},
			map[string]string{"scsi1": "invalid format - format error\nscsi1.cache: value 'fast' does not have a value in the enumeration 'none, writethrough, writeback, unsafe, directsync'\n"}},
		{"named property-string format", "PUT", "/nodes/pve1/qemu/100/config", url.Values{"boot": {"order=scsi0;floppy"}},
			map[string]string{"boot": "invalid format - format error\nboot.order: invalid format - invalid boot device 'floppy'\n\n"}},
		{"URI and body disagree", "PUT", "/nodes/pve1/qemu/100/config", url.Values{"vmid": {"101"}},
			map[string]string{"vmid": "duplicate parameter (already defined in URI) with conflicting values!"}},
	} {
		r, err := cl.Do(tc.method, tc.path, tc.params)
		if err != nil {
			t.Fatal(err)
		}
		if r.Code != 400 || r.Status != "Parameter verification failed." {
			t.Errorf("%s: %d %q %s", tc.name, r.Code, r.Status, r.Raw)
			continue
		}
		for k, v := range tc.want {
			if r.Errors[k] != v {
				t.Errorf("%s: %s: %q, want %q", tc.name, k, r.Errors[k], v)
			}
		}
		if len(r.Errors) != len(tc.want) {
			t.Errorf("%s: errors %v, want %v", tc.name, r.Errors, tc.want)
		}
	}
}

// TestEveryRouteChecksItsParameters sends, for every route, a value of the wrong type for each
// integer and boolean parameter the schema declares and one parameter the schema does not
// know: each must be refused with PVE's message, whatever the route.
func TestEveryRouteChecksItsParameters(t *testing.T) {
	c, cl := startCluster(t, "pve1")
	schema, err := reference.PVE("pve9")
	if err != nil {
		t.Fatal(err)
	}
	fill := strings.NewReplacer("{node}", "pve1", "{vmid}", "100", "{storage}", "local-lvm", "{volume}", "vm-100-disk-0",
		"{upid}", "UPID:pve1:00000001:00000001:00000001:x::root@pam:")
	checked := 0
	for _, r := range c.Routes("pve1") {
		m := schema[r.Path][r.Method]
		path := fill.Replace(r.Path)
		for name, p := range m.Parameters.Properties {
			if strings.Contains(r.Path, "{"+name+"}") || strings.HasSuffix(name, "[n]") {
				continue
			}
			var want string
			switch p["type"] {
			case "integer":
				want = "type check ('integer') failed - got 'x1'"
			case "boolean":
				want = "type check ('boolean') failed - got 'x1'"
			default:
				continue
			}
			resp, err := cl.Do(r.Method, path, url.Values{name: {"x1"}})
			if err != nil {
				t.Fatal(err)
			}
			if resp.Code != 400 || resp.Errors[name] != want {
				t.Errorf("%s %s %s=x1: %d %q %v", r.Method, r.Path, name, resp.Code, resp.Status, resp.Errors)
			}
			checked++
		}
		resp, err := cl.Do(r.Method, path, url.Values{"no-such-parameter": {"1"}})
		if err != nil {
			t.Fatal(err)
		}
		var env struct {
			Errors map[string]string `json:"errors"`
		}
		json.Unmarshal(resp.Raw, &env)
		if resp.Code != 400 || env.Errors["no-such-parameter"] == "" {
			t.Errorf("%s %s with an unknown parameter: %d %q %s", r.Method, r.Path, resp.Code, resp.Status, resp.Raw)
		}
		checked++
	}
	t.Logf("%d parameter checks over %d routes", checked, len(c.Routes("pve1")))
}

// TestVMConfigIsParsedWithTheSchema: a config file PVE would not parse cleanly makes every
// read of that VM fail, naming the line, so whatever wrote it fails its test.
func TestVMConfigIsParsedWithTheSchema(t *testing.T) {
	c, cl := startCluster(t, "pve1")
	good := "name: web\nmemory: 2048\nscsi0: local-lvm:vm-100-disk-0,size=4G\nnet0: virtio=BC:24:11:00:00:01,bridge=vmbr0\nboot: order=scsi0;net0\n"
	for _, tc := range []struct{ name, config, want string }{
		{"unknown key", good + "speed: 5\n", "vm 100 - unable to parse value of 'speed' - unknown setting 'speed'"},
		{"bad drive option", good + "scsi1: local-lvm:vm-100-disk-1,size=4G,cache=fast\n",
			"vm 100 - unable to parse value of 'scsi1' - format error"},
		{"bad MAC", strings.Replace(good, "BC:24:11:00:00:01", "BC:24:11:00:00", 1),
			"vm 100 - unable to parse value of 'net0' - format error"},
		{"integer with a unit", good + "cores: 2x\n", "vm 100 - unable to parse value of 'cores' - type check ('integer') failed - got '2x'"},
		{"drive beyond the last index", good + "ide4: local-lvm:vm-100-disk-2\n", "vm 100 - unable to parse value of 'ide4' - unknown setting 'ide4'"},
		{"unknown section", good + "\n[special:foo]\nx: 1\n", "vm 100 - skipping unknown section: 'special:foo'"},
		{"delete outside [PENDING]", good + "delete: cores\n", "vm 100 - property 'delete' is only allowed in [PENDING]"},
	} {
		if err := c.WriteVMConfig("pve1", 100, tc.config); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{"/nodes/pve1/qemu/100/config", "/nodes/pve1/qemu/100/status/current"} {
			r, err := cl.Do("GET", p, nil)
			if err != nil {
				t.Fatal(err)
			}
			if r.Code != 500 || !strings.HasPrefix(r.Status, tc.want) {
				t.Errorf("%s: GET %s: %d %q, want 500 %q", tc.name, p, r.Code, r.Status, tc.want)
			}
		}
	}
	if err := c.WriteVMConfig("pve1", 100, good+"#a description: 100%\n\n[PENDING]\ncores: 4\n\n[snap1]\ncores: 1\nsnaptime: 1700000000\n"); err != nil {
		t.Fatal(err)
	}
	d, err := cl.Must("GET", "/nodes/pve1/qemu/100/config", nil)
	if err != nil {
		t.Fatalf("a valid config: %v", err)
	}
	var cfg map[string]any
	json.Unmarshal(d, &cfg)
	if cfg["cores"] != float64(4) || cfg["memory"] != "2048" || cfg["boot"] != "order=scsi0;net0" {
		t.Errorf("config as read: %v", cfg)
	}
}
