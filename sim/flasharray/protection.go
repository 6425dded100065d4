package flasharray

import (
	"maps"
	"slices"
	"time"
)

// Default protection and SafeMode (the spec's "Container Default Protections" and
// "eradication_config"):
//
//   - An array, and each pod, has a list of default protection groups; a volume created in
//     that container joins them unless the creating call says with_default_protection=false
//     (REST 2.16 and later). A clone that joined a scheduled group gets its snapshots, and a
//     group under a retention lock keeps it from ever being eradicated by hand.
//   - A protection group's retention lock, once ratcheted (SafeMode), forbids eradicating its
//     snapshots and member volumes: they can be destroyed, and the array eradicates them
//     itself after the eradication delay for objects that cannot be eradicated by hand
//     (eradication_config.disabled_delay). Array-wide SafeMode (manual_eradication
//     all-disabled) forbids every manual eradication.

// SetDefaultProtection sets the protection groups a volume created in container (a pod, or ""
// for the array itself) joins by default.
func (a *Array) SetDefaultProtection(container string, pgroups ...string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, g := range pgroups {
		if _, ok := a.pgroups[g]; !ok {
			return bad(msgPGNotExist, g)
		}
		if splitQual(g).pod != container {
			return bad("Protection group is not in the container.", g)
		}
	}
	if container == "" {
		a.defaultProtection = append([]string(nil), pgroups...)
		return nil
	}
	p := a.pods[container]
	if p == nil {
		return bad(msgPodNotExist, container)
	}
	p.defaultProtection = append([]string(nil), pgroups...)
	if p.peer != nil {
		p.peer.pods[container].defaultProtection = p.defaultProtection
	}
	return nil
}

// LockRetention ratchets a protection group's retention lock.
func (a *Array) LockRetention(pg string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	g, ok := a.pgroups[pg]
	if !ok {
		return bad(msgPGNotExist, pg)
	}
	g.retentionLock = true
	return nil
}

// ProtectionGroupsOf lists the protection groups a volume is a member of, sorted.
func (a *Array) ProtectionGroupsOf(vol string) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for n, g := range a.pgroups {
		if slices.Contains(g.volumes, vol) {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// joinDefaultProtection adds a new volume to its container's default protection groups.
func (a *Array) joinDefaultProtection(v *volume) {
	groups := a.defaultProtection
	if p := a.pods[splitQual(v.name).pod]; p != nil {
		groups = p.defaultProtection
	} else if splitQual(v.name).pod != "" {
		groups = nil
	}
	for _, n := range groups {
		if g := a.pgroups[n]; g != nil && !slices.Contains(g.volumes, v.name) {
			g.volumes = append(g.volumes, v.name)
		}
	}
}

// lockedBy is the ratcheted protection group that keeps a volume or snapshot from being
// eradicated by hand ("" when none).
func (a *Array) lockedBy(vol, pgsnapName string) string {
	for _, n := range slices.Sorted(maps.Keys(a.pgroups)) {
		g := a.pgroups[n]
		if !g.retentionLock {
			continue
		}
		if vol != "" && slices.Contains(g.volumes, vol) {
			return n
		}
		if s := a.pgsnaps[pgsnapName]; pgsnapName != "" && s != nil && s.source == n {
			return n
		}
	}
	return ""
}

// manualEradication says whether a volume (vol) or a snapshot (of volume vol, member of
// protection-group snapshot pgsnapName) may be eradicated by hand.
func (a *Array) manualEradication(vol, pgsnapName string) bool {
	return !a.SafeMode && a.lockedBy(vol, pgsnapName) == ""
}

// delay is how long a destroyed object stays before the array eradicates it.
func (a *Array) delay(manual bool) time.Duration {
	if !manual && a.DisabledDelay > 0 {
		return a.DisabledDelay
	}
	return a.EradicationDelay
}

func (a *Array) volumeDelay(v *volume) time.Duration { return a.delay(a.manualEradication(v.name, "")) }

func (a *Array) snapshotDelay(s *snapshot) time.Duration {
	// A plain volume snapshot is not protected by its volume's groups; a group's member
	// snapshot is by its group.
	if s.pgsnap == "" {
		return a.delay(!a.SafeMode)
	}
	return a.delay(a.manualEradication("", s.pgsnap))
}

// arrayManualEradication is eradication_config.manual_eradication of the array.
func (a *Array) arrayManualEradication() string {
	if a.SafeMode {
		return "all-disabled"
	}
	for _, g := range a.pgroups {
		if g.retentionLock {
			return "partially-disabled"
		}
	}
	return "all-enabled"
}
