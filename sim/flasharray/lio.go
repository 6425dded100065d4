package flasharray

import (
	"fmt"
	"strings"
	"sync"

	"github.com/pvesnap/pvesnap/sim/lio"
)

// LIO is the lab's data plane: volume bytes in sparse files (as Files), and a connection to
// a host that has a data path here maps the volume as a LIO fileio LUN with the volume's
// identity (VPD 0x83 NAA 624a9370+serial, as a FlashArray reports) to that host. Through a
// loopback target the LUN appears on the host's SCSI bus at once and goes when unmapped;
// through an iSCSI target's ACL the host sees it when it rescans and keeps its devices after
// the unmap, as on a real fabric. One target per array: LIO's copy manager reaches only LUNs
// of one session, so XCOPY works within an array and fails between two, as it does between
// two FlashArrays.
type LIO struct {
	*Files
	L *lio.LIO
	// Targets are the hosts that have a loopback data path in the lab (the guest itself).
	Targets map[string]*lio.Target
	// ISCSI are the hosts that reach the array through its iSCSI target, by their ACL.
	// Connections to hosts in neither are only recorded.
	ISCSI map[string]*lio.ACL

	mu   sync.Mutex
	luns map[string]*lio.LUN       // serial -> backstore, while mapped somewhere
	maps map[string]map[string]int // serial -> host -> LUN
}

// Device returns the block device a connected volume has on this host ("" when none).
func (p *LIO) Device(serial string) string { return lio.FindByNAA(lio.PureNAA(serial)) }

func (p *LIO) Connect(serial, host string, n int, size int64) error {
	if err := p.Files.Connect(serial, host, n, size); err != nil {
		return err
	}
	t, acl := p.Targets[host], p.ISCSI[host]
	if t == nil && acl == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.luns == nil {
		p.luns, p.maps = map[string]*lio.LUN{}, map[string]map[string]int{}
	}
	lun := p.luns[serial]
	if lun == nil {
		var err error
		// Backstore names are per fileio HBA; the serial is unique across arrays.
		if lun, err = p.L.CreateLUN("fa"+strings.ToLower(serial), p.Path(serial), size, serial); err != nil {
			return fmt.Errorf("LIO backstore for %s: %w", serial, err)
		}
		p.luns[serial] = lun
	}
	if acl != nil {
		if err := acl.Map(lun, n); err != nil {
			return fmt.Errorf("mapping %s as LUN %d to %s: %w", serial, n, acl.Initiator, err)
		}
	} else if _, err := t.Map(lun, n); err != nil {
		return fmt.Errorf("mapping %s as LUN %d into %s: %w", serial, n, t.WWN, err)
	}
	if p.maps[serial] == nil {
		p.maps[serial] = map[string]int{}
	}
	p.maps[serial][host] = n
	return nil
}

func (p *LIO) Disconnect(serial, host string, n int) error {
	p.Files.Disconnect(serial, host, n)
	t, acl := p.Targets[host], p.ISCSI[host]
	if t == nil && acl == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	lun := p.luns[serial]
	if lun == nil {
		return nil
	}
	if acl != nil {
		if err := acl.Unmap(lun); err != nil {
			return err
		}
	} else if err := t.Unmap(lun); err != nil {
		return err
	}
	delete(p.maps[serial], host)
	if len(p.maps[serial]) == 0 {
		delete(p.maps, serial)
		delete(p.luns, serial)
		return p.L.Delete(lun)
	}
	return nil
}

// Close removes the backstores of volumes still connected, once the targets that mapped them
// are gone: a backstore keeps its volume's file open, and with it the file system under the
// array's data (a test that failed half-way leaves connections behind).
func (p *LIO) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var first error
	for serial, lun := range p.luns {
		if err := p.L.Delete(lun); err != nil && first == nil {
			first = fmt.Errorf("LIO backstore of %s: %w", serial, err)
		}
		delete(p.luns, serial)
		delete(p.maps, serial)
	}
	return first
}
