package inventory

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/pvesnap/pvesnap/ioctl/dm"
	"github.com/pvesnap/pvesnap/lvm/engine"
)

// PVDevices are the devices under one physical volume of an LVM storage of the node, as they
// describe themselves.
type PVDevices struct {
	Storage string        `json:"storage"`
	VG      string        `json:"vg"`
	PV      string        `json:"pv"`
	Devices []engine.View `json:"devices"`
	// Warning says, device by device, what one reports as critical ("" when none does).
	Warning string `json:"warning,omitempty"`
	Error   string `json:"error,omitempty"`
}

// Devices reads what the devices under the node's LVM storages say about themselves: once
// per logical unit (through its first path; a namespace by itself, never the controller's
// every namespace), kept until the storage mapping is made again (the inventory's refresh, a
// refresh asked for, or its age).
type Devices struct {
	Inv *Inventory
	// Open reaches the devices (nil fields: the device nodes; fixtures in tests).
	Open engine.Openers

	mu    sync.Mutex
	of    time.Time // the mapping the cache belongs to
	id    *engine.Identifier
	byKey map[string]*engine.Device
}

func (d *Devices) roots() engine.Roots {
	return engine.Roots{Sys: d.Inv.Roots.Sys, Dev: d.Inv.Roots.Dev}
}

// List describes the devices of every PV of every LVM storage the mapping holds (fresh: map
// and ask again).
func (d *Devices) List(ctx context.Context, fresh bool) ([]PVDevices, error) {
	maxAge := MapMaxAge
	if fresh {
		maxAge = 0
	}
	maps, err := d.Inv.Maps(ctx, maxAge)
	if err != nil {
		return nil, err
	}
	d.Inv.mu.Lock()
	at := d.Inv.mapsAt
	d.Inv.mu.Unlock()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.id == nil || !d.of.Equal(at) {
		d.id, d.byKey, d.of = &engine.Identifier{Roots: d.roots(), Open: d.Open}, map[string]*engine.Device{}, at
	}
	out := []PVDevices{}
	for _, m := range maps {
		for _, pv := range m.PVs {
			out = append(out, d.pv(ctx, m, pv))
		}
	}
	return out, nil
}

// pv describes the devices under one PV (called with d.mu held).
func (d *Devices) pv(ctx context.Context, m StorageMap, pv string) PVDevices {
	p := PVDevices{Storage: m.Storage, VG: m.VG, PV: pv, Devices: []engine.View{}}
	name, err := d.Inv.Roots.blockName(pv)
	if err != nil {
		p.Error = err.Error()
		return p
	}
	dev, err := dm.ParseDev(readTrim(filepath.Join(d.Inv.Roots.Sys, "class", "block", name, "dev")))
	if err != nil {
		p.Error = fmt.Sprintf("%s (%s): no device number in sysfs", pv, name)
		return p
	}
	lus, err := engine.Under(d.roots(), dev)
	if err != nil {
		p.Error = err.Error()
		return p
	}
	var warn []string
	for _, l := range lus {
		x, ok := d.byKey[l.Key]
		if !ok {
			x = d.id.Describe(ctx, l)
			d.byKey[l.Key] = x
		}
		v := x.View()
		if v.Health.Critical() {
			warn = append(warn, v.Name+": "+v.Health.Summary())
		}
		p.Devices = append(p.Devices, v)
	}
	p.Warning = strings.Join(warn, "; ")
	return p
}
