package pveschema

import (
	"regexp"
	"strconv"
	"strings"
)

// The formats qemu-server, pve-storage and pve-access-control register, read from their
// sources (QemuServer.pm, QemuServer/*.pm, Storage/Plugin.pm, AccessControl.pm,
// Auth/Plugin.pm). Where PVE decides from data only a real node has (the CPU models QEMU
// reports), the check is looser and says so.

var (
	volumeIDRe  = regexp.MustCompile(`(?i)^([a-z][a-z0-9\-_.]*[a-z0-9]):(.+)$`)
	vgNameRe    = regexp.MustCompile(`(?i)^[a-z0-9][a-z0-9\-_.]*[a-z0-9]$`)
	storPathRe  = regexp.MustCompile(`^/[^;()]+`)
	realmRe     = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9.\-_]+$`)
	poolNameRe  = regexp.MustCompile(`^[A-Za-z0-9.\-_]+(?:/[A-Za-z0-9.\-_]+){0,2}$`)
	cpusetRe    = regexp.MustCompile(`^\d+(-\d+)?$`)
	pciRe       = `(?:[a-f0-9]{4,}:)?[a-f0-9]{2}:[a-f0-9]{2}(?:\.[a-f0-9])?`
	b64Pattern  = `[A-Za-z0-9+\/]+={0,2}`
	contentDirs = regexp.MustCompile(`^([a-z]+)=([^.]*(?:\.?[^.]+)+)$`)
	cpuFlagRe   = `[+-][a-zA-Z0-9\-_\.]+`
)

// ValidPrivileges are pve-access-control's privileges (AccessControl.pm $privgroups plus
// Permissions.Modify).
var ValidPrivileges = func() map[string]bool {
	m := map[string]bool{"Permissions.Modify": true}
	for _, group := range PrivGroups {
		for _, l := range group {
			for _, p := range l {
				m[p] = true
			}
		}
	}
	return m
}()

// PrivGroups is AccessControl.pm's $privgroups: category -> level -> privileges.
var PrivGroups = map[string]map[string][]string{
	"VM": {
		"admin": {"VM.Config.Disk", "VM.Config.CPU", "VM.Config.Memory", "VM.Config.Network", "VM.Config.HWType",
			"VM.Config.Options", "VM.Allocate", "VM.Clone", "VM.GuestAgent.Unrestricted", "VM.Migrate", "VM.Replicate",
			"VM.Snapshot", "VM.Snapshot.Rollback"},
		"user": {"VM.Config.CDROM", "VM.Config.Cloudinit", "VM.Console", "VM.Backup", "VM.GuestAgent.FileRead",
			"VM.GuestAgent.FileSystemMgmt", "VM.GuestAgent.FileWrite", "VM.PowerMgmt"},
		"audit": {"VM.Audit", "VM.GuestAgent.Audit"},
	},
	"Sys": {
		"root":  {"Sys.PowerMgmt", "Sys.Modify", "Sys.Incoming", "Sys.AccessNetwork"},
		"admin": {"Sys.Console", "Sys.Syslog"},
		"audit": {"Sys.Audit"},
	},
	"Datastore": {
		"admin": {"Datastore.Allocate", "Datastore.AllocateTemplate"},
		"user":  {"Datastore.AllocateSpace"},
		"audit": {"Datastore.Audit"},
	},
	"SDN": {
		"admin": {"SDN.Allocate", "SDN.Audit"},
		"user":  {"SDN.Use"},
		"audit": {"SDN.Audit"},
	},
	"User": {
		"root":  {"Realm.Allocate"},
		"admin": {"User.Modify", "Group.Allocate", "Realm.AllocateUser"},
	},
	"Pool": {
		"admin": {"Pool.Allocate"},
		"user":  {"Pool.Audit"},
		"audit": {"Pool.Audit"},
	},
	"Mapping": {
		"admin": {"Mapping.Modify"},
		"user":  {"Mapping.Use"},
		"audit": {"Mapping.Audit"},
	},
}

// ContentTypes are the content types pve-storage knows (a dir storage holds them all).
var ContentTypes = map[string]bool{"images": true, "rootdir": true, "vztmpl": true, "iso": true, "backup": true,
	"snippets": true, "import": true}

func verifyVolumeID(s string) error {
	if !volumeIDRe.MatchString(s) {
		return dief("unable to parse volume ID '%s'", s)
	}
	return nil
}

// DriveNames are qemu-server's drive keys (Drive.pm): ide0-3, sata0-5, scsi0-30, virtio0-15,
// efidisk0, tpmstate0.
func IsDriveName(s string) bool {
	for _, d := range []struct {
		base string
		max  int
	}{{"ide", 3}, {"sata", 5}, {"scsi", 30}, {"virtio", 15}} {
		if n, ok := strings.CutPrefix(s, d.base); ok {
			i, err := strconv.Atoi(n)
			return err == nil && strconv.Itoa(i) == n && i <= d.max
		}
	}
	return s == "efidisk0" || s == "tpmstate0"
}

func str(extra Schema) Schema {
	s := Schema{"type": "string", "optional": 1}
	for k, v := range extra {
		s[k] = v
	}
	return s
}

func init() {
	Register("pve-volume-id", Format{Verify: verifyVolumeID})
	Register("pve-volume-id-or-absolute-path", Format{Verify: func(s string) error {
		if strings.HasPrefix(s, "/") {
			return nil
		}
		return verifyVolumeID(s)
	}})
	Register("pve-volume-id-or-qm-path", Format{Verify: func(s string) error {
		if s == "none" || s == "cdrom" || strings.HasPrefix(s, "/") {
			return nil
		}
		return verifyVolumeID(s)
	}})
	Register("pve-storage-vgname", Format{Verify: func(s string) error {
		if !vgNameRe.MatchString(s) {
			return dief("lvm name '%s' contains illegal characters", s)
		}
		return nil
	}})
	Register("pve-storage-path", Format{Verify: func(s string) error {
		if !storPathRe.MatchString(s) {
			return dief("value does not look like a valid absolute path")
		}
		return nil
	}})
	Register("pve-storage-server", Format{Verify: func(s string) error {
		if !IsIPv4(s) && !IsIPv6(s) && !dnsNameRe.MatchString(s) {
			return dief("value does not look like a valid server name or IP address")
		}
		return nil
	}})
	Register("pve-storage-portal-dns", Format{Verify: func(s string) error {
		host := s
		if strings.HasPrefix(s, "[") {
			h, rest, ok := strings.Cut(strings.TrimPrefix(s, "["), "]")
			if !ok || (rest != "" && !regexp.MustCompile(`^:\d+$`).MatchString(rest)) {
				return dief("value does not look like a valid portal address")
			}
			host = h
		} else if h, port, ok := strings.Cut(s, ":"); ok && !strings.Contains(port, ":") {
			if _, err := strconv.Atoi(port); err != nil {
				return dief("value does not look like a valid portal address")
			}
			host = h
		}
		if !IsIPv4(host) && !IsIPv6(host) && !dnsNameRe.MatchString(host) {
			return dief("value does not look like a valid portal address")
		}
		return nil
	}})
	Register("pve-storage-content", Format{Verify: func(s string) error {
		if !ContentTypes[s] {
			return dief("invalid content type '%s'", s)
		}
		return nil
	}})
	Register("pve-storage-format", verifier(regexp.MustCompile(`^(raw|qcow2|vmdk|subvol)$`), "invalid format '%s'"))
	Register("pve-storage-options", verifier(regexp.MustCompile(`^\S+$`), "invalid options '%s'"))
	Register("pve-dir-override", Format{Verify: func(s string) error {
		m := contentDirs.FindStringSubmatch(s)
		if m == nil || !ContentTypes[m[1]] || len(m[2]) >= 1023 {
			return dief("invalid override '%s'", s)
		}
		for _, part := range strings.Split(m[2], "/") {
			if len(part) >= 255 {
				return dief("invalid override '%s'", s)
			}
		}
		return nil
	}})
	Register("pve-storage-zfs-blocksize", verifier(regexp.MustCompile(`^\d+[km]?$`), "invalid blocksize '%s'"))
	Register("prune-backups", Format{Props: map[string]Schema{
		"keep-all":     {"type": "boolean", "optional": 1},
		"keep-last":    {"type": "integer", "minimum": 1.0, "optional": 1},
		"keep-hourly":  {"type": "integer", "minimum": 1.0, "optional": 1},
		"keep-daily":   {"type": "integer", "minimum": 1.0, "optional": 1},
		"keep-weekly":  {"type": "integer", "minimum": 1.0, "optional": 1},
		"keep-monthly": {"type": "integer", "minimum": 1.0, "optional": 1},
		"keep-yearly":  {"type": "integer", "minimum": 1.0, "optional": 1},
	}, Validate: func(p map[string]any) error {
		all := p["keep-all"] == "1"
		others := false
		for k, v := range p {
			if k != "keep-all" && v != "0" {
				others = true
			}
		}
		if all && others {
			return dief("keep-all cannot be set together with other options.")
		}
		return nil
	}})

	Register("pve-realm", Format{Verify: func(s string) error {
		if !realmRe.MatchString(s) {
			return dief("value does not look like a valid realm")
		}
		return nil
	}})
	Register("pve-poolid", Format{Verify: func(s string) error {
		if len(strings.Split(s, "/")) > 3 {
			return dief("pool name '%s' nested too deeply (max levels = 3)", s)
		}
		if !poolNameRe.MatchString(s) {
			return dief("pool name '%s' contains invalid characters", s)
		}
		return nil
	}})
	Register("pve-priv", Format{Verify: func(s string) error {
		if !ValidPrivileges[s] {
			return dief("invalid privilege '%s'", s)
		}
		return nil
	}})

	Register("pve-cpuset", Format{Verify: func(s string) error {
		for _, part := range strings.Split(s, ",") {
			m := cpusetRe.FindStringSubmatch(part)
			if m == nil {
				return dief("unable to parse cpuset option")
			}
		}
		return nil
	}})
	Register("pve-hotplug-features", Format{Verify: func(s string) error {
		if s == "0" {
			return nil
		}
		if s == "1" {
			s = "network,disk,usb"
		}
		for _, f := range SplitList(s) {
			switch f {
			case "network", "disk", "cpu", "memory", "usb", "cloudinit":
			default:
				return dief("invalid hotplug feature '%s'", f)
			}
		}
		return nil
	}})
	Register("pve-qm-bootdisk", Format{Verify: func(s string) error {
		if !IsDriveName(s) {
			return dief("invalid boot disk '%s'", s)
		}
		return nil
	}})
	Register("pve-qm-bootdev", Format{Verify: func(s string) error {
		if IsDriveName(s) && !strings.HasPrefix(s, "efidisk") && !strings.HasPrefix(s, "tpmstate") {
			return nil
		}
		for _, d := range []struct {
			base string
			max  int
		}{{"net", 31}, {"usb", 13}, {"hostpci", 15}} {
			if n, ok := strings.CutPrefix(s, d.base); ok {
				if i, err := strconv.Atoi(n); err == nil && strconv.Itoa(i) == n && i <= d.max {
					return nil
				}
			}
		}
		return dief("invalid boot device '%s'", s)
	}})
	Register("pve-qm-boot", Format{Props: map[string]Schema{
		"legacy": str(Schema{"default_key": 1, "pattern": "[acdn]{1,4}"}),
		"order":  str(Schema{"format": "pve-qm-bootdev-list"}),
	}})
	Register("pve-qm-watchdog", Format{Props: map[string]Schema{
		"model":  str(Schema{"default_key": 1, "enum": []any{"i6300esb", "ib700"}}),
		"action": str(Schema{"enum": []any{"reset", "shutdown", "poweroff", "pause", "debug", "none"}}),
	}})
	Register("pve-qm-cicustom", Format{Props: map[string]Schema{
		"meta": str(Schema{"format": "pve-volume-id"}), "network": str(Schema{"format": "pve-volume-id"}),
		"user": str(Schema{"format": "pve-volume-id"}), "vendor": str(Schema{"format": "pve-volume-id"}),
	}})
	smbios := map[string]Schema{
		"uuid":   str(Schema{"pattern": "[a-fA-F0-9]{8}(?:-[a-fA-F0-9]{4}){3}-[a-fA-F0-9]{12}"}),
		"base64": {"type": "boolean", "optional": 1},
	}
	for _, k := range []string{"version", "serial", "manufacturer", "product", "sku", "family"} {
		smbios[k] = str(Schema{"pattern": b64Pattern})
	}
	Register("pve-qm-smbios1", Format{Props: smbios})
	Register("pve-qm-ipconfig", Format{Props: map[string]Schema{
		"ip":  str(Schema{"format": "pve-ipv4-config"}),
		"gw":  str(Schema{"format": "ipv4", "requires": "ip"}),
		"ip6": str(Schema{"format": "pve-ipv6-config"}),
		"gw6": str(Schema{"format": "ipv6", "requires": "ip6"}),
	}})
	Register("pve-qm-rng", Format{Props: map[string]Schema{
		"source":    {"type": "string", "default_key": 1, "enum": []any{"/dev/urandom", "/dev/random", "/dev/hwrng"}},
		"max_bytes": {"type": "integer", "optional": 1},
		"period":    {"type": "integer", "optional": 1},
	}})
	hexID := str(Schema{"pattern": "^0x[0-9a-fA-F]{4}$"})
	Register("pve-qm-hostpci", Format{Props: map[string]Schema{
		"host":          str(Schema{"default_key": 1, "pattern": pciRe + "(;" + pciRe + ")*"}),
		"mapping":       str(Schema{"format": "pve-configid"}),
		"rombar":        {"type": "boolean", "optional": 1},
		"romfile":       str(Schema{"pattern": "[^,;]+"}),
		"pcie":          {"type": "boolean", "optional": 1},
		"x-vga":         {"type": "boolean", "optional": 1},
		"legacy-igd":    {"type": "boolean", "optional": 1},
		"mdev":          str(Schema{"pattern": `[^/\.:]+`}),
		"vendor-id":     hexID,
		"device-id":     hexID,
		"sub-vendor-id": hexID,
		"sub-device-id": hexID,
		"driver":        str(Schema{"enum": []any{"vfio", "keep"}}),
	}})
	Register("pve-qemu-sev-fmt", Format{Props: map[string]Schema{
		"type":           {"type": "string", "default_key": 1, "enum": []any{"std", "es", "snp"}, "maxLength": 3.0},
		"no-debug":       {"type": "boolean", "optional": 1},
		"no-key-sharing": {"type": "boolean", "optional": 1},
		"allow-smt":      {"type": "boolean", "optional": 1},
		"kernel-hashes":  {"type": "boolean", "optional": 1},
	}})
	Register("pve-qemu-tdx-fmt", Format{Props: map[string]Schema{
		"type":        {"type": "string", "default_key": 1, "enum": []any{"tdx"}},
		"attestation": {"type": "boolean"},
		"vsock-cid":   {"type": "integer", "minimum": 2.0, "optional": 1},
		"vsock-port":  {"type": "integer", "minimum": 0.0, "optional": 1},
	}})
	Register("pve-phys-bits", Format{Verify: func(s string) error {
		if s == "host" {
			return nil
		}
		if n, err := strconv.Atoi(s); err == nil && len(s) <= 2 && n >= 8 && n <= 64 {
			return nil
		}
		return Die("value must be an integer between 8 and 64 or 'host'\n")
	}})
	// CPUConfig.pm's $cpu_fmt with validate_vm_cpu_conf. The models a real node accepts come
	// from QEMU at run time (/usr/share/kvm/cpu-models-*.json); the stand-in accepts any
	// model name of the right shape, and refuses a custom model's name or reported-model.
	Register("pve-vm-cpu-conf", Format{Props: map[string]Schema{
		"cputype":         str(Schema{"default_key": 1, "pattern": `[A-Za-z0-9][A-Za-z0-9_.+-]*`}),
		"reported-model":  str(nil),
		"hidden":          {"type": "boolean", "optional": 1},
		"hv-vendor-id":    str(Schema{"pattern": "[a-zA-Z0-9]{1,12}"}),
		"flags":           str(Schema{"pattern": cpuFlagRe + "(;" + cpuFlagRe + ")*"}),
		"guest-phys-bits": {"type": "integer", "minimum": 32.0, "maximum": 64.0, "optional": 1},
		"phys-bits":       str(Schema{"format": "pve-phys-bits"}),
		"level":           {"type": "integer", "minimum": 0.0, "maximum": 4294967295.0, "optional": 1},
	}, Validate: func(p map[string]any) error {
		t, _ := p["cputype"].(string)
		if t == "" {
			return dief("CPU is missing cputype")
		}
		if strings.HasPrefix(t, "custom-") {
			return dief("Custom cputype '%s' not found", strings.TrimPrefix(t, "custom-"))
		}
		if _, ok := p["reported-model"]; ok {
			return dief("Property 'reported-model' not allowed in VM-specific CPU config.")
		}
		return nil
	}})
}
