package flasharray

import (
	"sort"
	"strconv"
	"strings"
)

// obj is one JSON object of an answer.
type obj = map[string]any

// view is the REST version an answer is rendered for: fields appear only in the versions
// that define them, as on a real array.
type view struct{ major, minor int }

func parseView(v string) (view, bool) {
	maj, min, ok := strings.Cut(v, ".")
	if !ok {
		return view{}, false
	}
	a, err1 := strconv.Atoi(maj)
	b, err2 := strconv.Atoi(min)
	return view{a, b}, err1 == nil && err2 == nil
}

func (v view) atLeast(s string) bool {
	w, _ := parseView(s)
	return v.major > w.major || (v.major == w.major && v.minor >= w.minor)
}

func nullRef() obj { return obj{"name": nil, "id": nil} }
func nameRef(n string) obj {
	if n == "" {
		return obj{"name": nil}
	}
	return obj{"name": n}
}

func refObj(r *ref) obj {
	if r == nil {
		return nullRef()
	}
	return obj{"name": r.name, "id": r.id}
}

func msOrNil(p *int64) any {
	if p == nil {
		return nil
	}
	return *p
}

func (a *Array) volumeObj(v *volume, vw view) obj {
	o := obj{
		"id": v.id, "name": v.name, "serial": v.serial, "provisioned": v.size,
		"created": v.created.UnixMilli(), "destroyed": !v.destroyed.IsZero(),
		"time_remaining": msOrNil(a.timeRemaining(v.destroyed, a.volumeDelay(v))), "connection_count": a.connectionCount(v),
		"source": refObj(v.source), "pod": a.podRef(v.name), "volume_group": a.vgroupRef(v.name),
		"qos": obj{"bandwidth_limit": nil, "iops_limit": nil}, "subtype": "regular",
		"host_encryption_key_status": "none",
		"space": obj{"data_reduction": 1.0, "total_reduction": 1.0, "thin_provisioning": 1.0, "snapshots": 0,
			"total_physical": 0, "total_provisioned": v.size, "unique": 0, "virtual": 0, "shared": nil, "system": nil},
	}
	if vw.atLeast("2.2") {
		o["promotion_status"], o["requested_promotion_state"] = "promoted", "promoted"
	}
	if vw.atLeast("2.10") {
		o["priority"] = 0
		o["priority_adjustment"] = obj{"priority_adjustment_operator": "+", "priority_adjustment_value": 0}
	}
	return o
}

func (a *Array) snapshotObj(s *snapshot, vw view) obj {
	return obj{
		"id": s.id, "name": s.name, "serial": s.serial, "suffix": s.suffix, "provisioned": s.size,
		"created": s.created.UnixMilli(), "destroyed": !s.destroyed.IsZero(),
		"time_remaining": msOrNil(a.timeRemaining(s.destroyed, a.snapshotDelay(s))), "source": obj{"name": s.source.name, "id": s.source.id},
		"pod": a.podRef(s.source.name), "volume_group": a.vgroupRef(s.source.name),
	}
}

func (a *Array) pgroupObj(g *pgroup, vw view) obj {
	o := obj{
		"name": g.name, "destroyed": false, "time_remaining": nil, "is_local": true, "pod": a.podRef(g.name),
		"source": obj{"name": a.Name, "id": a.ID}, "volume_count": len(g.volumes), "host_count": 0,
		"host_group_count": 0, "target_count": 0,
	}
	if vw.atLeast("2.26") {
		lock, manual := "unlocked", "enabled"
		if g.retentionLock {
			lock, manual = "ratcheted", "disabled"
		}
		o["retention_lock"], o["eradication_config"] = lock, obj{"manual_eradication": manual}
	}
	return o
}

func (a *Array) pgsnapObj(s *pgsnap, vw view) obj {
	return obj{
		"name": s.name, "suffix": s.suffix, "created": s.created.UnixMilli(), "destroyed": !s.destroyed.IsZero(),
		"time_remaining": msOrNil(a.timeRemaining(s.destroyed, a.delay(a.lockedBy("", s.name) == "" && !a.SafeMode))),
		"source":         obj{"name": s.source, "id": idOrNil(a.pgroups[s.source])}, "pod": a.podRef(s.source),
	}
}

func idOrNil(g *pgroup) any {
	if g == nil { // replicated from another array
		return nil
	}
	return g.id
}

func (a *Array) hostObj(h *host, vw view) obj {
	n := 0
	for _, c := range a.connections {
		for _, ch := range a.hostsOf(c) {
			if ch == h {
				n++
			}
		}
	}
	preferred := []any{}
	for _, name := range h.preferred {
		r := obj{"name": name, "id": nil}
		for _, x := range append([]*Array{a}, a.pairs...) {
			if x.Name == name {
				r["id"] = x.ID
			}
		}
		preferred = append(preferred, r)
	}
	o := obj{
		"name": h.name, "iqns": h.iqns, "nqns": h.nqns, "wwns": h.wwns, "host_group": nameRef(h.group),
		"connection_count": n, "personality": nil, "preferred_arrays": preferred,
		"chap":              obj{"host_password": nil, "host_user": nil, "target_password": nil, "target_user": nil},
		"port_connectivity": obj{"status": "healthy", "details": "Redundant"},
	}
	if vw.atLeast("2.1") {
		o["is_local"] = !h.remote
	}
	if vw.atLeast(hostDestroyedSince) {
		o["destroyed"], o["time_remaining"] = !h.destroyed.IsZero(), msOrNil(a.timeRemaining(h.destroyed, a.EradicationDelay))
	}
	return o
}

// hostDestroyedSince is the first reference version whose hosts have "destroyed" (hosts are
// destroyed with their realm); older versions do not list destroyed hosts at all.
const hostDestroyedSince = "2.44"

func (a *Array) hostGroupObj(g *hostGroup, vw view) obj {
	members := a.membersOf(g.name)
	n := 0
	for _, c := range a.connections {
		if c.hostGroup == g.name {
			n++
		}
	}
	o := obj{"name": g.name, "host_count": len(members), "connection_count": n}
	if vw.atLeast("2.1") {
		o["is_local"] = true
	}
	return o
}

// connectionObjs lists a connection once per host it reaches (a host-group connection
// appears for every member, with the group named).
func (a *Array) connectionObjs(c *connection, vw view) []obj {
	v := a.volumeByID(c.volume)
	var out []obj
	for _, h := range a.hostsOf(c) {
		o := obj{"host": obj{"name": h.name}, "host_group": nameRef(c.hostGroup), "lun": c.lun,
			"protocol_endpoint": nullRef(), "volume": obj{"name": v.name, "id": v.id}}
		if c.nvme && vw.atLeast("2.27") {
			o["lun"], o["nsid"] = nil, c.lun
		} else if vw.atLeast("2.27") {
			o["nsid"] = nil
		}
		out = append(out, o)
	}
	return out
}

func (a *Array) arrayObj(vw view) obj {
	o := obj{
		"id": a.ID, "name": a.Name, "os": "Purity//FA", "version": a.Purity, "capacity": int64(100) << 40,
		"parity": 1.0, "idle_timeout": 0, "scsi_timeout": 60000, "banner": "", "console_lock_enabled": false,
		"ntp_servers": []any{},
	}
	if vw.atLeast("2.6") {
		ec := obj{"eradication_delay": a.EradicationDelay.Milliseconds(), "manual_eradication": a.arrayManualEradication()}
		if vw.atLeast("2.26") {
			ec["enabled_delay"], ec["disabled_delay"] = a.EradicationDelay.Milliseconds(), a.delay(false).Milliseconds()
		}
		o["eradication_config"] = ec
	}
	return o
}

func (a *Array) podObj(p *pod, vw view) obj {
	arrays := []any{obj{"name": a.Name, "id": a.ID, "status": "online", "frozen_at": nil, "mediator_status": "online", "pre_elected": false, "progress": nil}}
	if p.peer != nil {
		arrays = append(arrays, obj{"name": p.peer.Name, "id": p.peer.ID, "status": "online", "frozen_at": nil, "mediator_status": "online",
			"pre_elected": false, "progress": nil})
	}
	o := obj{
		"name": p.name, "id": p.id, "destroyed": !p.destroyed.IsZero(), "time_remaining": msOrNil(a.timeRemaining(p.destroyed, a.EradicationDelay)),
		"arrays": arrays, "array_count": len(arrays), "source": nullRef(), "failover_preferences": []any{},
		"mediator": "purestorage", "mediator_version": "1.0", "promotion_status": "promoted", "requested_promotion_state": "promoted",
		"link_source_count": 0, "link_target_count": 0, "footprint": 0,
	}
	if vw.atLeast("2.26") {
		manual := "all-enabled"
		if a.SafeMode {
			manual = "all-disabled"
		}
		o["eradication_config"] = obj{"manual_eradication": manual}
	}
	return o
}

func (a *Array) vgroupObj(g *volumeGroup, vw view) obj {
	n := 0
	for name := range a.volumes {
		if splitQual(name).vgroup == g.name {
			n++
		}
	}
	o := obj{"name": g.name, "id": g.id, "destroyed": false, "time_remaining": nil, "volume_count": n,
		"qos": obj{"bandwidth_limit": nil, "iops_limit": nil}}
	if vw.atLeast("2.26") {
		if g.pod != "" {
			o["pod"] = a.podRef(g.name)
		} else {
			o["pod"] = nullRef()
		}
	}
	return o
}

// sortObjs orders by a "field" or "field-" (descending) sort key.
func sortObjs(items []obj, key string) {
	desc := strings.HasSuffix(key, "-")
	key = strings.TrimSuffix(key, "-")
	sort.SliceStable(items, func(i, j int) bool {
		c, _ := compare(norm(lookup(items[i], key)), norm(lookup(items[j], key)))
		if desc {
			return c > 0
		}
		return c < 0
	})
}
