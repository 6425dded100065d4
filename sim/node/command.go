package node

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pvesnap/pvesnap/sim/fakecli"
	simpve "github.com/pvesnap/pvesnap/sim/pve"
	"github.com/pvesnap/pvesnap/sim/volstore"
)

// RunCommand answers argv as the simulated node's tool argv[0] names (zfs, lvs, qm, …) and
// returns its exit status. The node's tool configuration is found beside the executable that
// was run (argv[0] as the caller spelled it: pvesnap's runner always passes the absolute
// path), else in $PVE_SIM_BIN for a tool run by hand from a shell's PATH.
func RunCommand(argv []string, stdout, stderr io.Writer) int {
	if len(argv) == 0 {
		fmt.Fprintln(stderr, "sim/node: no command")
		return 127
	}
	tc, err := loadToolConfig(argv[0])
	if err != nil {
		fmt.Fprintf(stderr, "%s: not a simulated node's tool: %v\n", filepath.Base(argv[0]), err)
		return 127
	}
	z := &fakecli.ZFS{Pools: map[string]volstore.Store{}}
	for pool, dir := range tc.Pools {
		z.Pools[pool] = volstore.Store{Dir: dir}
	}
	l := &fakecli.LVM{VGs: map[string]fakecli.VG{}}
	for vg, s := range tc.VGs {
		l.VGs[vg] = fakecli.VG{Store: volstore.Store{Dir: s.Dir}, ThinPool: s.ThinPool, PVs: s.PVs}
	}
	d := &fakecli.Dispatch{ZFS: z, LVM: l, QM: func(argv []string) fakecli.Result {
		return qm(tc.QM, argv)
	}}
	r := d.Exec(argv)
	stdout.Write(r.Stdout)
	io.WriteString(stderr, r.Stderr)
	return r.Code
}

// qm answers through the node's API as root@pam, like the real qm does through pvedaemon.
func qm(s qmSpec, argv []string) fakecli.Result {
	cl, err := simpve.NewClient(s.URL, s.CA)
	if err == nil {
		err = cl.Login("root@pam", s.Password)
	}
	if err != nil {
		return fakecli.Result{Code: 255, Stderr: fmt.Sprintf("qm: cannot reach the simulated node: %v\n", err)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	out, stderr, code := (&simpve.CLI{Client: cl, Node: s.Node}).Command(ctx, argv)
	return fakecli.Result{Stdout: out, Stderr: stderr, Code: code}
}

func loadToolConfig(argv0 string) (*toolConfig, error) {
	var dirs []string
	if strings.Contains(argv0, "/") {
		dirs = append(dirs, filepath.Dir(argv0))
	}
	if d := os.Getenv("PVE_SIM_BIN"); d != "" {
		dirs = append(dirs, d)
	}
	var lastErr error = fmt.Errorf("run it by its path or set PVE_SIM_BIN")
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, toolConfigName))
		if err != nil {
			lastErr = err
			continue
		}
		var tc toolConfig
		if err := json.Unmarshal(b, &tc); err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(d, toolConfigName), err)
		}
		return &tc, nil
	}
	return nil, lastErr
}
