package pve

import (
	"bytes"
	"strings"
	"testing"
)

// Parsers of what comes from the cluster filesystem and from callers: never panic; what they
// accept round-trips.

func FuzzVolid(f *testing.F) {
	for _, s := range []string{"local-lvm:vm-100-disk-0", "san1:vm-999999999-disk-12", "x:base-100-disk-1/vm-101-disk-0", ":", "a:", "../../etc:passwd",
		"local:iso/debian.iso", "s:vm-100-disk-0;rm -rf /", "ü:vm-100-disk-0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseVolid(s)
		if err != nil {
			return
		}
		if v.String() != s {
			t.Fatalf("%q parsed as %+v prints %q", s, v, v.String())
		}
		if CheckStorageID(v.Storage) != nil {
			t.Fatalf("%q: storage %q accepted", s, v.Storage)
		}
		if d, err := ParseDiskName(v.Volume); err == nil {
			if strings.ContainsAny(d.Name, "/ \t\n;|&$`'\"\\") || strings.HasPrefix(d.Name, "-") || CheckVMID(d.VMID) != nil {
				t.Fatalf("disk name %q accepted", d.Name)
			}
		}
	})
}

func FuzzSectionConfig(f *testing.F) {
	f.Add([]byte("lvm: san1\n\tvgname vgsan1\n\tcontent images\n\tshared 1\n\nzfspool: local-zfs\n\tpool rpool/data\n\tsparse\n"))
	f.Add([]byte("flasharray: fa1\n\tendpoint https://fa\n\tcomment a%3Ab\n"))
	f.Add([]byte("# comment\n\ndir: local\n\tpath /var/lib/vz\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		secs, err := ParseSectionConfig("fuzz.cfg", b)
		if err != nil {
			return
		}
		again, err := ParseSectionConfig("fuzz.cfg", FormatSectionConfig(secs))
		if err != nil {
			t.Fatalf("formatted config does not parse: %v\n%s", err, FormatSectionConfig(secs))
		}
		if len(again) != len(secs) {
			t.Fatalf("%d sections became %d", len(secs), len(again))
		}
		for i := range secs {
			if secs[i].ID != again[i].ID || secs[i].Type != again[i].Type || len(secs[i].Props) != len(again[i].Props) {
				t.Fatalf("section %d changed: %+v -> %+v", i, secs[i], again[i])
			}
		}
		ParseStorageConfig(b)
	})
}

func FuzzVMConfig(f *testing.F) {
	f.Add([]byte("#desc\nname: web\nscsi0: san1:vm-100-disk-0,size=32G\nnet0: virtio=BC:24:11:AA:BB:CC,bridge=vmbr0\nmeta: creation-qemu=9.2.0,ctime=1700000000\n\n[snap1]\nmemory: 1024\n"))
	f.Add([]byte("ide2: none,media=cdrom\nunused0: local:vm-1-disk-0\n[PENDING]\ndelete: net0\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		cfg, err := ParseVMConfig(b)
		if err != nil {
			return
		}
		for _, d := range cfg.Disks() {
			if d.Volid.Storage == "" || d.Volid.Volume == "" {
				t.Fatalf("disk %s with empty volid", d.Key)
			}
		}
		cfg.CTime()
		out := FormatVMConfig(cfg.Description, cfg.Order, cfg.Props)
		again, err := ParseVMConfig(out)
		if err != nil {
			t.Fatalf("formatted config does not parse: %v", err)
		}
		for k, v := range cfg.Props {
			if again.Props[k] != v && !bytes.ContainsAny([]byte(v), "\n\r") {
				t.Fatalf("%s: %q became %q", k, v, again.Props[k])
			}
		}
	})
}
