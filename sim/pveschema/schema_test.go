package pveschema

import (
	"strings"
	"testing"

	"github.com/pvesnap/pvesnap/sim/reference"
)

// walk calls fn on every schema inside v (parameters, returns, property-string formats).
func walk(v any, fn func(map[string]any)) {
	switch x := v.(type) {
	case map[string]any:
		fn(x)
		for _, e := range x {
			walk(e, fn)
		}
	case []any:
		for _, e := range x {
			walk(e, fn)
		}
	}
}

// Every pattern PVE's schemas carry compiles as PVE applies it, and every named format they
// use is known here (pve-qm-ide is registered by sim/pve from the config schema).
func TestSchemasPatternsAndFormats(t *testing.T) {
	for _, v := range reference.PVEVersions {
		s, err := reference.PVE(v)
		if err != nil {
			t.Fatal(err)
		}
		for path, methods := range s {
			for m, info := range methods {
				for _, part := range []any{info.Returns, toAny(info.Parameters.Properties)} {
					walk(part, func(sch map[string]any) {
						if p, ok := sch["pattern"].(string); ok {
							if _, err := Pattern(p); err != nil {
								t.Errorf("%s %s %s: %v", v, m, path, err)
							}
						}
						if f, ok := sch["format"].(string); ok && f != "pve-qm-ide" {
							base := listSuffixRe.FindStringSubmatch(f)[1]
							if _, ok := Lookup(base); !ok {
								t.Errorf("%s %s %s: format %q not registered", v, m, path, f)
							}
						}
					})
				}
			}
		}
	}
}

func toAny(m map[string]map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range m {
		out[k] = v
	}
	return out
}

// Property strings as parse_property_string reads them, with its messages.
func TestPropertyString(t *testing.T) {
	drive := map[string]Schema{
		"file":  {"type": "string", "default_key": 1, "format": "pve-volume-id-or-qm-path"},
		"size":  {"type": "string", "optional": 1, "format": "disk-size"},
		"ssd":   {"type": "boolean", "optional": 1},
		"cache": {"type": "string", "optional": 1, "enum": []any{"none", "writeback"}},
		"vol":   {"alias": "file"},
	}
	if p, err := ParsePropertyString(drive, "local-lvm:vm-100-disk-0,size=4G,ssd=on", "scsi0"); err != nil ||
		p["file"] != "local-lvm:vm-100-disk-0" || p["ssd"] != "1" || p["size"] != "4G" {
		t.Fatalf("%v %v", p, err)
	}
	for in, want := range map[string]string{
		"st:vol,size=4G,size=5G": "duplicate key in comma-separated list property: size\n",
		"st:vol,speed=1":         "invalid key in comma-separated list property: speed\n",
		"st:vol,c:d":             "duplicate key in comma-separated list property: file\n",
		"st:vol,=x":              "missing key in comma-separated list property\n",
		"st:vol,cache=fast":      "format error\nscsi0.cache: value 'fast' does not have a value in the enumeration 'none, writeback'\n",
		"st:vol,size=4X":         "format error\nscsi0.size: invalid format - value does not look like a valid disk size: 4X\n\n",
		"file=st:a,vol=st:b":     "key 'file' is already defined (via alias)\n",
		"size=4G":                "format error\nscsi0.file: property is missing and it is not optional\n",
		"st:vol,ssd=maybe":       "format error\nscsi0.ssd: type check ('boolean') failed - got 'maybe'\n",
	} {
		_, err := ParsePropertyString(drive, in, "scsi0")
		if err == nil || err.Error() != want {
			t.Errorf("%q: %v, want %q", in, err, want)
		}
	}
	if err := CheckFormat("pve-tag-list", "prod;web ok", ""); err != nil {
		t.Errorf("tag list: %v", err)
	}
	if err := CheckFormat("pve-tag-list", "prod;-web", ""); err == nil || !strings.Contains(err.Error(), "invalid characters in tag") {
		t.Errorf("bad tag: %v", err)
	}
}

func FuzzPropertyString(f *testing.F) {
	f.Add("local-lvm:vm-100-disk-0,size=4G,ssd=1")
	f.Add("virtio=BC:24:11:00:00:01,bridge=vmbr0,link_down=1")
	f.Add(",,=,a=b=c,")
	props := map[string]Schema{"file": {"type": "string", "default_key": 1}, "size": {"type": "string", "optional": 1, "format": "disk-size"},
		"n": {"type": "integer", "optional": 1, "minimum": 1.0}, "b": {"type": "boolean", "optional": 1}, "x": {"alias": "file"}}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePropertyString(props, s, "k")
		if err == nil && p["file"] == nil {
			t.Fatalf("%q parsed without its required key: %v", s, p)
		}
	})
}
