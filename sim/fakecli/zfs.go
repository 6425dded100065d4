// Package fakecli emulates the zfs and LVM command lines over the simulator's volume stores,
// with the real tools' output formats, error messages and exit codes, so pvesnap's storage
// code can be tested against sim/pve without a kernel. The lab runs the same code against the
// real tools. The emulators answer argv with what the program would print and its exit status
// (Result): in process for the tests, or as real executables (sim/node).
package fakecli

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/pvesnap/pvesnap/sim/volstore"
)

// Result is what a command leaves behind: its standard output and error and its exit status.
type Result struct {
	Stdout []byte
	Stderr string
	Code   int
}

func fail(code int, msg string) Result { return Result{Code: code, Stderr: msg + "\n"} }

// ZFS emulates /usr/sbin/zfs for zvols in pools mapped to volume stores.
type ZFS struct {
	Pools map[string]volstore.Store // "rpool/data" -> store
	mu    sync.Mutex
	Calls [][]string
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

// DatasetNameMax is OpenZFS's limit on a dataset or snapshot name, pool included:
// ZFS_MAX_DATASET_NAME_LEN (256) with the terminating NUL.
const DatasetNameMax = 255

// Exec answers one zfs command.
func (z *ZFS) Exec(argv []string) Result {
	z.mu.Lock()
	z.Calls = append(z.Calls, append([]string(nil), argv...))
	z.mu.Unlock()
	if len(argv) < 2 || argv[0] != "zfs" {
		return fail(2, fmt.Sprintf("fakecli: not a zfs command: %v", argv))
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
	return fail(2, fmt.Sprintf("unrecognized command '%s'", argv[1]))
}

func noDataset(ds string) Result {
	return fail(1, fmt.Sprintf("cannot open '%s': dataset does not exist", ds))
}

// get: zfs get -H -p -o property,value <props> <ds>
func (z *ZFS) get(argv []string) Result {
	if len(argv) != 8 || argv[2] != "-H" || argv[3] != "-p" || argv[4] != "-o" || argv[5] != "property,value" {
		return fail(2, "fakecli: unsupported zfs get form")
	}
	props := strings.Split(argv[6], ",")
	ds := argv[7]
	st, pool, rest, ok := z.split(ds)
	if !ok {
		return noDataset(ds)
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
			return noDataset(ds)
		}
	} else {
		if !st.Exists(vol) {
			return noDataset(ds)
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
			return fail(2, fmt.Sprintf("bad property list: invalid property '%s'", p))
		}
		fmt.Fprintf(&b, "%s\t%s\n", p, v)
	}
	return Result{Stdout: []byte(b.String())}
}

// names: zfs list -H -o name <ds>…: the datasets that exist on stdout, one line each, and
// for each missing one "cannot open '<ds>': dataset does not exist" on stderr (exit 1).
func (z *ZFS) names(argv []string) Result {
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
		return Result{Stdout: []byte(out.String()), Stderr: errs.String(), Code: 1}
	}
	return Result{Stdout: []byte(out.String())}
}

// list: zfs list -H -p -t snapshot -o name,clones,creation -d 1 <ds>, or the names form.
func (z *ZFS) list(argv []string) Result {
	if len(argv) > 5 && strings.Join(argv[:5], " ") == "zfs list -H -o name" {
		return z.names(argv)
	}
	want := []string{"zfs", "list", "-H", "-p", "-t", "snapshot", "-o", "name,clones,creation", "-d", "1"}
	if len(argv) != len(want)+1 || strings.Join(argv[:len(want)], " ") != strings.Join(want, " ") {
		return fail(2, "fakecli: unsupported zfs list form")
	}
	ds := argv[len(argv)-1]
	st, pool, vol, ok := z.split(ds)
	if !ok || !st.Exists(vol) {
		return noDataset(ds)
	}
	snaps, err := st.Snapshots(vol)
	if err != nil {
		return fail(1, err.Error())
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
	return Result{Stdout: []byte(b.String())}
}

func (z *ZFS) snapshot(argv []string) Result {
	if len(argv) != 3 {
		return fail(2, "usage: snapshot <dataset>@<snapname>")
	}
	st, _, rest, ok := z.split(argv[2])
	vol, snap, isSnap := strings.Cut(rest, "@")
	if !ok || !isSnap {
		return noDataset(argv[2])
	}
	if len(argv[2]) > DatasetNameMax {
		return fail(1, fmt.Sprintf("cannot create snapshot '%s': name is too long", argv[2]))
	}
	if err := st.Snapshot(vol, snap); err != nil {
		if errors.Is(err, volstore.ErrExists) {
			return fail(1, fmt.Sprintf("cannot create snapshot '%s': dataset already exists", argv[2]))
		}
		return noDataset(strings.SplitN(argv[2], "@", 2)[0])
	}
	return Result{}
}

func (z *ZFS) clone(argv []string) Result {
	if len(argv) != 4 {
		return fail(2, "usage: clone <snapshot> <filesystem|volume>")
	}
	st, _, origin, ok := z.split(argv[2])
	st2, _, target, ok2 := z.split(argv[3])
	if !ok || !ok2 || st.Dir != st2.Dir {
		return fail(1, fmt.Sprintf("cannot create '%s': source and target pools differ", argv[3]))
	}
	if len(argv[3]) > DatasetNameMax {
		return fail(1, fmt.Sprintf("cannot create '%s': name is too long", argv[3]))
	}
	if err := st.Clone(origin, target, volstore.Meta{}); err != nil {
		switch {
		case errors.Is(err, volstore.ErrExists):
			return fail(1, fmt.Sprintf("cannot create '%s': dataset already exists", argv[3]))
		case errors.Is(err, volstore.ErrNotFound):
			return noDataset(argv[2])
		}
		return fail(1, err.Error())
	}
	return Result{}
}

func (z *ZFS) destroy(argv []string) Result {
	recursive := false
	args := argv[2:]
	if len(args) == 2 && args[0] == "-r" {
		recursive, args = true, args[1:]
	}
	if len(args) != 1 {
		return fail(2, "usage: destroy [-r] <dataset>")
	}
	st, pool, rest, ok := z.split(args[0])
	if !ok {
		return noDataset(args[0])
	}
	err := st.Destroy(rest, recursive)
	switch {
	case err == nil:
		return Result{}
	case errors.Is(err, volstore.ErrNotFound):
		return noDataset(args[0])
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
		return fail(1, fmt.Sprintf("cannot destroy '%s': %s has dependent clones\nuse '-R' to destroy the following datasets:\n%s", args[0], kind, strings.Join(full, "\n")))
	case strings.Contains(err.Error(), "has children"):
		return fail(1, fmt.Sprintf("cannot destroy '%s': volume has children\nuse '-r' to destroy the following datasets:", args[0]))
	}
	return fail(1, err.Error())
}

func (z *ZFS) promote(argv []string) Result {
	if len(argv) != 3 {
		return fail(2, "usage: promote <clone-filesystem>")
	}
	st, _, vol, ok := z.split(argv[2])
	if !ok || !st.Exists(vol) {
		return noDataset(argv[2])
	}
	if err := st.Promote(vol); err != nil {
		return fail(1, fmt.Sprintf("cannot promote '%s': %v", argv[2], err))
	}
	return Result{}
}
