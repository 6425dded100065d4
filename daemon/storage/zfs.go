// Package storage answers the storage content copy and delete calls proxmox-csi-plugin makes,
// with instant storage-native copies where the storage allows them: ZFS snapshot + clone on
// zfspool, thin snapshots on lvmthin, array-offloaded copies on thick LVM over an offload-
// capable LUN. Every other call goes to pveproxy unchanged.
package storage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/pvesnap/pvesnap/daemon/runner"
	"github.com/pvesnap/pvesnap/ioctl/zfs"
)

// ZFS does what pvesnap needs of ZFS. The steps of an instant copy (existence checks,
// snapshot, clone, removal of the snapshot when the clone fails) go to the kernel module
// through Dev's ioctls when Dev is set and present: each zfs command costs a process start
// and libzfs's set-up (60-130 ms under the lab's emulation; the ioctl alone is the sync
// task). Everything else, and everything when Dev is absent (tests with a fake zfs), runs
// the zfs command with machine-readable output (-H -p).
type ZFS struct {
	Run runner.Runner
	Dev string // the ZFS control device, /dev/zfs; "" = the zfs command only
	// Sys is /sys, where the loaded module's version is read: a module of a series whose
	// layouts were not checked (zfs.CheckedSeries) is driven by the zfs command instead.
	Sys string
}

// kernel opens Dev, or returns nil when the zfs command is to be used.
func (z ZFS) kernel() (*zfs.Dev, error) {
	if z.Dev == "" {
		return nil, nil
	}
	if z.Sys != "" {
		v, err := zfs.ModuleVersion(z.Sys)
		if err != nil {
			return nil, nil // no module loaded: the zfs command says what is wrong
		}
		if ok, _ := zfs.Checked(v); !ok {
			return nil, nil
		}
	}
	d, err := zfs.Open(z.Dev)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if d != nil {
		d.Who = "pvesnap" // "zpool history" names pvesnap's changes, as it names zfs commands
	}
	return d, err
}

// viaKernel runs op on the kernel module when it is there and knows the ioctl; done is
// false when the zfs command is to be used instead (nothing was done then).
func (z ZFS) viaKernel(op func(*zfs.Dev) error) (done bool, err error) {
	d, err := z.kernel()
	if err != nil {
		return true, err
	}
	if d == nil {
		return false, nil
	}
	defer d.Close()
	err = op(d)
	if errors.Is(err, zfs.ErrUnsupported) {
		return false, nil
	}
	return true, err
}

var datasetRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:-]*(/[A-Za-z0-9][A-Za-z0-9_.:-]*)*(@[A-Za-z0-9][A-Za-z0-9_.:-]*)?$`)

// CheckDataset validates a dataset or snapshot name before it reaches zfs.
func CheckDataset(s string) error {
	if len(s) > 255 || !datasetRe.MatchString(s) {
		return fmt.Errorf("invalid ZFS dataset name %q", s)
	}
	return nil
}

// ErrNoDataset is a dataset that does not exist.
var ErrNoDataset = errors.New("dataset does not exist")

// ErrDatasetExists is a dataset to create that is already there.
var ErrDatasetExists = errors.New("dataset already exists")

// Dataset is what zfs get reports about a volume or snapshot.
type Dataset struct {
	Name    string
	Type    string // volume, snapshot, filesystem
	Origin  string // "pool/vol@snap" for a clone, "" otherwise
	VolSize int64
}

// notFound reports zfs's "dataset does not exist" (stderr is in English: the runner sets
// LC_ALL=C; there is no other way to tell absence from failure with zfs get).
func notFound(err error) bool {
	var xe *runner.ExecError
	return errors.As(err, &xe) && xe.ExitCode == 1 && strings.Contains(xe.Stderr, "dataset does not exist")
}

// Get reads type, origin and volsize of a dataset.
func (z ZFS) Get(ctx context.Context, ds string) (Dataset, error) {
	if err := CheckDataset(ds); err != nil {
		return Dataset{}, err
	}
	out, err := z.Run.Run(ctx, []string{"zfs", "get", "-H", "-p", "-o", "property,value", "type,origin,volsize", ds})
	if notFound(err) {
		return Dataset{}, fmt.Errorf("%s: %w", ds, ErrNoDataset)
	}
	if err != nil {
		return Dataset{}, err
	}
	d := Dataset{Name: ds}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		k, v, _ := strings.Cut(line, "\t")
		switch k {
		case "type":
			d.Type = v
		case "origin":
			if v != "-" {
				d.Origin = v
			}
		case "volsize":
			d.VolSize, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	return d, nil
}

// Exists reports whether ds exists.
func (z ZFS) Exists(ctx context.Context, ds string) (bool, error) {
	found, err := z.Existing(ctx, ds)
	return found[ds], err
}

// Existing reports which of the datasets exist, with one command: zfs list prints the ones
// it finds and names each missing one on stderr ("cannot open 'x': dataset does not exist",
// exit 1); any other failure is an error.
func (z ZFS) Existing(ctx context.Context, names ...string) (map[string]bool, error) {
	for _, n := range names {
		if err := CheckDataset(n); err != nil {
			return nil, err
		}
	}
	found := map[string]bool{}
	if done, err := z.viaKernel(func(d *zfs.Dev) error {
		for _, n := range names {
			ok, err := d.Exists(n)
			if err != nil {
				return err
			}
			if ok {
				found[n] = true
			}
		}
		return nil
	}); done {
		return found, err
	}
	out, err := z.Run.Run(ctx, append([]string{"zfs", "list", "-H", "-o", "name"}, names...))
	if err != nil {
		var xe *runner.ExecError
		if !errors.As(err, &xe) || xe.ExitCode != 1 {
			return nil, err
		}
		for _, line := range strings.Split(strings.TrimSpace(xe.Stderr), "\n") {
			if !strings.HasSuffix(line, "dataset does not exist") {
				return nil, err
			}
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if line != "" {
			found[line] = true
		}
	}
	return found, nil
}

// Snapshot is one snapshot of a dataset with the clones depending on it.
type Snapshot struct {
	Name    string // pool/vol@snap
	Clones  []string
	Created int64
}

// Short is the part after '@'.
func (s Snapshot) Short() string { _, n, _ := strings.Cut(s.Name, "@"); return n }

// Snapshots lists ds's snapshots, oldest first.
func (z ZFS) Snapshots(ctx context.Context, ds string) ([]Snapshot, error) {
	if err := CheckDataset(ds); err != nil {
		return nil, err
	}
	// Sample line: rpool/data/vm-100-disk-0@pvesnap-vm-9999-snap\trpool/data/vm-9999-snap\t1795312145
	out, err := z.Run.Run(ctx, []string{"zfs", "list", "-H", "-p", "-t", "snapshot", "-o", "name,clones,creation", "-d", "1", ds})
	if notFound(err) {
		return nil, fmt.Errorf("%s: %w", ds, ErrNoDataset)
	}
	if err != nil {
		return nil, err
	}
	var snaps []Snapshot
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(line, "\t")
		if len(f) != 3 {
			continue
		}
		s := Snapshot{Name: f[0]}
		if f[1] != "-" && f[1] != "" {
			s.Clones = strings.Split(f[1], ",")
		}
		s.Created, _ = strconv.ParseInt(f[2], 10, 64)
		snaps = append(snaps, s)
	}
	return snaps, nil
}

func (z ZFS) run(ctx context.Context, argv ...string) error {
	for _, a := range argv[1:] {
		if strings.HasPrefix(a, "-") {
			continue
		}
		if err := CheckDataset(a); err != nil {
			return err
		}
	}
	_, err := z.Run.Run(ctx, argv)
	return err
}

// TakeSnapshot creates ds@name.
func (z ZFS) TakeSnapshot(ctx context.Context, ds, name string) error {
	snap := ds + "@" + name
	if err := CheckDataset(snap); err != nil {
		return err
	}
	if done, err := z.viaKernel(func(d *zfs.Dev) error { return d.Snapshot(snap) }); done {
		return err
	}
	return z.run(ctx, "zfs", "snapshot", snap)
}

// Clone creates target from snapshot origin; an existing target is ErrDatasetExists.
func (z ZFS) Clone(ctx context.Context, origin, target string) error {
	if err := errors.Join(CheckDataset(origin), CheckDataset(target)); err != nil {
		return err
	}
	if done, err := z.viaKernel(func(d *zfs.Dev) error { return d.Clone(origin, target) }); done {
		if errors.Is(err, zfs.ErrExists) {
			return fmt.Errorf("%w: %w", ErrDatasetExists, err)
		}
		return err
	}
	err := z.run(ctx, "zfs", "clone", origin, target)
	var xe *runner.ExecError
	if errors.As(err, &xe) && strings.Contains(xe.Stderr, "dataset already exists") {
		return fmt.Errorf("%w: %w", ErrDatasetExists, err)
	}
	return err
}

// Destroy destroys a dataset (with its snapshots when recursive) or a snapshot. A snapshot
// goes through the kernel when it can; a dataset always through the zfs command, which
// also unmounts and unshares it.
func (z ZFS) Destroy(ctx context.Context, ds string, recursive bool) error {
	if err := CheckDataset(ds); err != nil {
		return err
	}
	if recursive {
		return z.run(ctx, "zfs", "destroy", "-r", ds)
	}
	if strings.Contains(ds, "@") {
		if done, err := z.viaKernel(func(d *zfs.Dev) error { return d.DestroySnapshot(ds) }); done {
			return err
		}
	}
	return z.run(ctx, "zfs", "destroy", ds)
}

// Promote makes a clone independent of its origin.
func (z ZFS) Promote(ctx context.Context, ds string) error { return z.run(ctx, "zfs", "promote", ds) }

// SnapshotGUID is a snapshot's short name and GUID: the identity by which zfs receive
// matches an incremental stream's source, whatever the snapshot is called on either side.
type SnapshotGUID struct {
	Name string // after '@'
	GUID string
}

// MoveFacts are what a move needs to know of a volume, read with one command: its snapshots
// with their GUIDs, oldest first, and its logical size (what a full stream carries).
func (z ZFS) MoveFacts(ctx context.Context, ds string) (snaps []SnapshotGUID, logical int64, err error) {
	if err := CheckDataset(ds); err != nil {
		return nil, 0, err
	}
	// Sample lines (the volume, then its snapshots by creation):
	//	rpool/data/vm-100-disk-0\t-\t1073741824
	//	rpool/data/vm-100-disk-0@pvesnap-move-6756a1b2-0a1b2c3d\t9081726354453627181\t1073741824
	out, err := z.Run.Run(ctx, []string{"zfs", "list", "-H", "-p", "-t", "volume,snapshot", "-o", "name,guid,logicalreferenced", "-s", "createtxg", "-d", "1", ds})
	if notFound(err) {
		return nil, 0, fmt.Errorf("%s: %w", ds, ErrNoDataset)
	}
	if err != nil {
		return nil, 0, err
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(line, "\t")
		if len(f) != 3 {
			continue
		}
		if name, short, isSnap := strings.Cut(f[0], "@"); !isSnap {
			if name == ds {
				logical, _ = strconv.ParseInt(f[2], 10, 64)
			}
		} else if f[1] != "" && f[1] != "-" {
			snaps = append(snaps, SnapshotGUID{Name: short, GUID: f[1]})
		}
	}
	return snaps, logical, nil
}
