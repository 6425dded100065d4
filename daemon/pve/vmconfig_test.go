package pve

import (
	"strings"
	"testing"
)

// qemu-server writes descriptions through encode_text ('%', ':' and control bytes as %XX)
// and takes keys with dashes (allow-ksm, amd-sev): both must read as PVE means them and
// write back the same way.
func TestVMConfigDescriptionAndDashedKeys(t *testing.T) {
	raw := "#web%3A front end\n#100%25 ours, %zz kept\nallow-ksm: 0\namd-sev: type=std\nname: web\n"
	cfg, err := ParseVMConfig([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	want := "web: front end\n100% ours, %zz kept"
	if cfg.Description != want || cfg.Props["allow-ksm"] != "0" || cfg.Props["amd-sev"] != "type=std" {
		t.Fatalf("read %q %v", cfg.Description, cfg.Props)
	}
	out := string(FormatVMConfig(cfg.Description, cfg.Order, cfg.Props))
	if !strings.HasPrefix(out, "#web%3A front end\n#100%25 ours, %25zz kept\n") {
		t.Fatalf("written back:\n%s", out)
	}
	again, err := ParseVMConfig([]byte(out))
	if err != nil || again.Description != want {
		t.Fatalf("round trip: %q %v", again.Description, err)
	}
}
