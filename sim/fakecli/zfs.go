// Package fakecli emulates the zfs and LVM command lines over the simulator's volume stores,
// with the real tools' output formats and error messages, so pvesnap's storage code can be
// tested against sim/pve without a kernel. The lab runs the same code against the real tools.
package fakecli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/pvesnap/pvesnap/daemon/runner"
	"github.com/pvesnap/pvesnap/sim/volstore"
)

// ZFS emulates /usr/sbin/zfs for zvols in pools mapped to volume stores.
type ZFS struct {
	Pools map[string]volstore.Store // "rpool/data" -> store
	mu    sync.Mutex
	Calls [][]string
}

func fail(argv []string, code int, msg string) error {
	return &runner.ExecError{Argv: argv, ExitCode: code, Stderr: msg + "\n"}
}

// split resolves "pool/path/vol[@snap]" to the store and the volume name.
func (z *ZFS) split(ds string) (volstore.Store, string, string, bool) {
	best := ""
	for p := range z.Pools {
		if strings.HasPrefix(ds, p+"/") && len(p) > len(best) {
			best = p
		}
	}
	if best == "" {
		return volstore.Store{}, "", "", false
	}
	rest := strings.TrimPrefix(ds, best+"/")
	vol, _, _ := strings.Cut(rest, "@")
	if strings.Contains(vol, "/") {
		return volstore.Store{}, "", "", false
	}
	return z.Pools[best], best, rest, true
}

// Run implements runner.Runner.
func (z *ZFS) Run(ctx context.Context, argv []string, _ ...runner.Option) ([]byte, error) {
	z.mu.Lock()
	z.Calls = append(z.Calls, append([]string(nil), argv...))
	z.mu.Unlock()
	if len(argv) < 2 || argv[0] != "zfs" {
		return nil, fail(argv, 2, fmt.Sprintf("fakecli: not a zfs command: %v", argv))
	}
	switch argv[1] {
	case "get":
		return z.get(argv)
	case "list":
		return z.list(argv)
	case "snapshot":
		return z.snapshot(argv)
	case "clone":
		return z.clone(argv)
	case "destroy":
		return z.destroy(argv)
	case "promote":
		return z.promote(argv)
	}
	return nil, fail(argv, 2, fmt.Sprintf("unrecognized command '%s'", argv[1]))
}

func noDataset(argv []string, ds string) error {
	return fail(argv, 1, fmt.Sprintf("cannot open '%s': dataset does not exist", ds))
}

// get: zfs get -H -p -o property,value <props> <ds>
func (z *ZFS) get(argv []string) ([]byte, error) {
	if len(argv) != 8 || argv[2] != "-H" || argv[3] != "-p" || argv[4] != "-o" || argv[5] != "property,value" {
		return nil, fail(argv, 2, "fakecli: unsupported zfs get form")
	}
	props := strings.Split(argv[6], ",")
	ds := argv[7]
	st, pool, rest, ok := z.split(ds)
	if !ok {
		return nil, noDataset(argv, ds)
	}
	vol, _, isSnap := strings.Cut(rest, "@")
	var m volstore.Meta
	var size int64
	if isSnap {
		snaps, _ := st.Snapshots(vol)
		found := false
		for _, s := range snaps {
			if s.Name == rest {
				found, m, size = true, s.Meta, s.Size
			}
		}
		if !found {
			return nil, noDataset(argv, ds)
		}
	} else {
		if !st.Exists(vol) {
			return nil, noDataset(argv, ds)
		}
		m, _ = st.Meta(vol)
		fi, _ := os.Stat(st.Path(vol))
		size = fi.Size()
	}
	var b strings.Builder
	for _, p := range props {
		v := "-"
		switch p {
		case "type":
			v = "volume"
			if isSnap {
				v = "snapshot"
			}
		case "origin":
			if m.Origin != "" {
				v = pool + "/" + m.Origin
			}
		case "volsize":
			v = strconv.FormatInt(size, 10)
		case "creation":
			v = strconv.FormatInt(m.Created, 10)
		case "clones":
			if isSnap {
				deps, _ := st.Dependents(rest)
				var full []string
				for _, d := range deps {
					full = append(full, pool+"/"+d)
				}
				v = strings.Join(full, ",")
			}
		default:
			return nil, fail(argv, 2, fmt.Sprintf("bad property list: invalid property '%s'", p))
		}
		fmt.Fprintf(&b, "%s\t%s\n", p, v)
	}
	return []byte(b.String()), nil
}

// names: zfs list -H -o name <ds>…: the datasets that exist on stdout, one line each, and
// for each missing one "cannot open '<ds>': dataset does not exist" on stderr (exit 1).
func (z *ZFS) names(argv []string) ([]byte, error) {
	var out, errs strings.Builder
	for _, ds := range argv[5:] {
		st, _, rest, ok := z.split(ds)
		exists := false
		if ok {
			vol, _, isSnap := strings.Cut(rest, "@")
			if isSnap {
				snaps, _ := st.Snapshots(vol)
				for _, s := range snaps {
					exists = exists || s.Name == rest
				}
			} else {
				exists = st.Exists(vol)
			}
		}
		if exists {
			fmt.Fprintln(&out, ds)
		} else {
			fmt.Fprintf(&errs, "cannot open '%s': dataset does not exist\n", ds)
		}
	}
	if errs.Len() > 0 {
		return []byte(out.String()), &runner.ExecError{Argv: argv, ExitCode: 1, Stderr: errs.String()}
	}
	return []byte(out.String()), nil
}

// list: zfs list -H -p -t snapshot -o name,clones,creation -d 1 <ds>, or the names form.
func (z *ZFS) list(argv []string) ([]byte, error) {
	if len(argv) > 5 && strings.Join(argv[:5], " ") == "zfs list -H -o name" {
		return z.names(argv)
	}
	want := []string{"zfs", "list", "-H", "-p", "-t", "snapshot", "-o", "name,clones,creation", "-d", "1"}
	if len(argv) != len(want)+1 || strings.Join(argv[:len(want)], " ") != strings.Join(want, " ") {
		return nil, fail(argv, 2, "fakecli: unsupported zfs list form")
	}
	ds := argv[len(argv)-1]
	st, pool, vol, ok := z.split(ds)
	if !ok || !st.Exists(vol) {
		return nil, noDataset(argv, ds)
	}
	snaps, err := st.Snapshots(vol)
	if err != nil {
		return nil, err
	}
	var b strings.Builder
	for _, s := range snaps {
		deps, _ := st.Dependents(s.Name)
		var full []string
		for _, d := range deps {
			full = append(full, pool+"/"+d)
		}
		clones := strings.Join(full, ",")
		if clones == "" {
			clones = "-"
		}
		fmt.Fprintf(&b, "%s/%s\t%s\t%d\n", pool, s.Name, clones, s.Meta.Created)
	}
	return []byte(b.String()), nil
}

func (z *ZFS) snapshot(argv []string) ([]byte, error) {
	if len(argv) != 3 {
		return nil, fail(argv, 2, "usage: snapshot <dataset>@<snapname>")
	}
	st, _, rest, ok := z.split(argv[2])
	vol, snap, isSnap := strings.Cut(rest, "@")
	if !ok || !isSnap {
		return nil, noDataset(argv, argv[2])
	}
	if err := st.Snapshot(vol, snap); err != nil {
		if errors.Is(err, volstore.ErrExists) {
			return nil, fail(argv, 1, fmt.Sprintf("cannot create snapshot '%s': dataset already exists", argv[2]))
		}
		return nil, noDataset(argv, strings.SplitN(argv[2], "@", 2)[0])
	}
	return nil, nil
}

func (z *ZFS) clone(argv []string) ([]byte, error) {
	if len(argv) != 4 {
		return nil, fail(argv, 2, "usage: clone <snapshot> <filesystem|volume>")
	}
	st, _, origin, ok := z.split(argv[2])
	st2, _, target, ok2 := z.split(argv[3])
	if !ok || !ok2 || st.Dir != st2.Dir {
		return nil, fail(argv, 1, fmt.Sprintf("cannot create '%s': source and target pools differ", argv[3]))
	}
	if err := st.Clone(origin, target, volstore.Meta{}); err != nil {
		switch {
		case errors.Is(err, volstore.ErrExists):
			return nil, fail(argv, 1, fmt.Sprintf("cannot create '%s': dataset already exists", argv[3]))
		case errors.Is(err, volstore.ErrNotFound):
			return nil, noDataset(argv, argv[2])
		}
		return nil, err
	}
	return nil, nil
}

func (z *ZFS) destroy(argv []string) ([]byte, error) {
	recursive := false
	args := argv[2:]
	if len(args) == 2 && args[0] == "-r" {
		recursive, args = true, args[1:]
	}
	if len(args) != 1 {
		return nil, fail(argv, 2, "usage: destroy [-r] <dataset>")
	}
	st, pool, rest, ok := z.split(args[0])
	if !ok {
		return nil, noDataset(argv, args[0])
	}
	err := st.Destroy(rest, recursive)
	switch {
	case err == nil:
		return nil, nil
	case errors.Is(err, volstore.ErrNotFound):
		return nil, noDataset(argv, args[0])
	case errors.Is(err, volstore.ErrBusy):
		deps, _ := st.Dependents(rest)
		var full []string
		for _, d := range deps {
			full = append(full, pool+"/"+d)
		}
		sort.Strings(full)
		kind := "volume"
		if strings.Contains(rest, "@") {
			kind = "snapshot"
		}
		return nil, fail(argv, 1, fmt.Sprintf("cannot destroy '%s': %s has dependent clones\nuse '-R' to destroy the following datasets:\n%s", args[0], kind, strings.Join(full, "\n")))
	case strings.Contains(err.Error(), "has children"):
		return nil, fail(argv, 1, fmt.Sprintf("cannot destroy '%s': volume has children\nuse '-r' to destroy the following datasets:", args[0]))
	}
	return nil, err
}

func (z *ZFS) promote(argv []string) ([]byte, error) {
	if len(argv) != 3 {
		return nil, fail(argv, 2, "usage: promote <clone-filesystem>")
	}
	st, _, vol, ok := z.split(argv[2])
	if !ok || !st.Exists(vol) {
		return nil, noDataset(argv, argv[2])
	}
	if err := st.Promote(vol); err != nil {
		return nil, fail(argv, 1, fmt.Sprintf("cannot promote '%s': %v", argv[2], err))
	}
	return nil, nil
}
