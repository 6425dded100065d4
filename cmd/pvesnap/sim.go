package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pvesnap/pvesnap/daemon/logging"
	"github.com/pvesnap/pvesnap/daemon/runner"
	"github.com/pvesnap/pvesnap/sim/flasharray"
	"github.com/pvesnap/pvesnap/sim/lio"
	"github.com/pvesnap/pvesnap/sim/node"
	simpve "github.com/pvesnap/pvesnap/sim/pve"
)

// simTool answers when this binary runs under the name of a simulated node's tool (zfs, lvs,
// qm, … linked to it by 'pvesnap sim node'); ok is false for any other name.
func simTool(args []string) (code int, ok bool) {
	if len(args) == 0 || !node.IsCommand(filepath.Base(args[0])) {
		return 0, false
	}
	return node.RunCommand(args, os.Stdout, os.Stderr), true
}

func simNodeCommand() *cli.Command {
	return &cli.Command{
		Name:  "node",
		Usage: "run one simulated Proxmox VE node with its tools until interrupted, and print what a client needs",
		Description: `The node has pveproxy (PVE's API, schema-checked), storages local-zfs (zfspool),
local-lvm (lvmthin) and local-thick (lvm), users, an API token, and executables for zfs, lvs,
pvs, lvcreate, lvchange, lvremove and qm in DIR/bin (links to this binary). DIR/pvesnap.yaml
runs 'pvesnap serve' against it; DIR/env holds the environment printed at start.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "dir", Required: true, Usage: "directory for the node's files (kept across runs)"},
			&cli.StringFlag{Name: "node", Value: "pve1", Usage: "node name"},
			&cli.StringFlag{Name: "listen", Value: "127.0.0.1:8006", Usage: "pveproxy's address"},
			&cli.StringFlag{Name: "pvesnap-listen", Value: "127.0.0.1:8009", Usage: "address written into pvesnap.yaml"},
			&cli.StringFlag{Name: "root-password", Value: "pvesnap", Usage: "root@pam password"},
			&cli.StringSliceFlag{Name: "user", Usage: "user to create: USER@REALM=PASSWORD (repeatable)"},
			&cli.StringSliceFlag{Name: "acl", Usage: "propagating ACL: PATH:USER|@GROUP|TOKENID:ROLE (repeatable)"},
			&cli.StringFlag{Name: "token", Value: "csi@pve!csi", Usage: "API token to create (privilege separation off; empty: none)"},
			&cli.StringFlag{Name: "token-role", Value: "PVEAdmin", Usage: "role of the token's user"},
			&cli.StringFlag{Name: "token-path", Value: "/", Usage: "ACL path of that role"},
			&cli.DurationFlag{Name: "auth-fail-delay", Value: 3 * time.Second, Usage: "delay of 401 answers, like pveproxy"},
			&cli.StringFlag{Name: "release", Usage: "PVE version to be (default 9.1.7)"},
			&cli.StringFlag{Name: "extjs", Usage: "Ext JS build directory: serve a stand-in of the web GUI's page at /"},
		},
		Action: func(c *cli.Context) error {
			users := map[string]string{}
			for _, u := range c.StringSlice("user") {
				name, pw, ok := strings.Cut(u, "=")
				if !ok {
					return usageErr("--user %q: want USER@REALM=PASSWORD", u)
				}
				users[name] = pw
			}
			delay := c.Duration("auth-fail-delay")
			if delay == 0 {
				delay = -1
			}
			n, err := node.Start(node.Options{Dir: c.String("dir"), Name: c.String("node"), Listen: c.String("listen"),
				PvesnapListen: c.String("pvesnap-listen"), RootPassword: c.String("root-password"), Users: users,
				ACLs: c.StringSlice("acl"), Token: c.String("token"), TokenRole: c.String("token-role"),
				TokenPath: c.String("token-path"), AuthFailDelay: delay, Release: c.String("release"),
				ExtJS: c.String("extjs"), Logger: logging.New(0, os.Stderr)})
			if err != nil {
				return err
			}
			defer n.Close()
			fmt.Printf("# simulated node %s: pveproxy %s, tools in %s\n# pvesnap against it: pvesnap --config %s serve\n%s",
				n.O.Name, n.Cluster.URL(n.O.Name), n.Bin, n.Config, n.Env())
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			<-ctx.Done()
			return nil
		},
	}
}

func simCommand() *cli.Command {
	return &cli.Command{
		Name:  "sim",
		Usage: "run the simulators (a Proxmox VE cluster, a FlashArray; used by tests and the demo)",
		Subcommands: []*cli.Command{simNodeCommand(), simFlashArrayCommand(), simQMCommand(), {
			Name:  "pve",
			Usage: "run a simulated Proxmox VE cluster until interrupted",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "dir", Usage: "directory for the cluster's files", Required: true},
				&cli.StringSliceFlag{Name: "node", Usage: "node name (repeat for a cluster)", Value: cli.NewStringSlice("pve1")},
				&cli.StringFlag{Name: "cluster", Usage: "cluster name (empty: standalone node)"},
				&cli.StringSliceFlag{Name: "listen", Usage: "node=host:port (default 127.0.0.1:0)"},
				&cli.StringFlag{Name: "root-password", Value: "pvesnap", Usage: "root@pam password"},
				&cli.DurationFlag{Name: "auth-fail-delay", Value: 3 * time.Second, Usage: "delay of 401 answers, like pveproxy"},
				&cli.StringFlag{Name: "extjs", Usage: "Ext JS build directory: serve a stand-in of the web GUI's page at / (with pvesnap's panel when on :8009)"},
			},
			Action: func(c *cli.Context) error {
				listen := map[string]string{}
				for _, l := range c.StringSlice("listen") {
					n, a, ok := strings.Cut(l, "=")
					if !ok {
						return usageErr("--listen %q: want node=host:port", l)
					}
					listen[n] = a
				}
				delay := c.Duration("auth-fail-delay")
				if delay == 0 {
					delay = -1
				}
				cl, err := simpve.Start(simpve.Options{Dir: c.String("dir"), Nodes: c.StringSlice("node"), ClusterName: c.String("cluster"),
					Listen: listen, RootPassword: c.String("root-password"), AuthFailDelay: delay, ExtJS: c.String("extjs"),
					Logger: logging.New(0, os.Stderr)})
				if err != nil {
					return err
				}
				defer cl.Close()
				for _, n := range cl.Nodes() {
					p := cl.NodePaths(n)
					fmt.Printf("node %s: pveproxy %s  /etc/pve %s  tasks %s\n", n, cl.URL(n), p.PVE, p.Tasks)
				}
				fmt.Printf("login: root@pam / %s   CA: %s\n", c.String("root-password"), cl.CAFile())
				ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
				defer stop()
				<-ctx.Done()
				return nil
			},
		}},
	}
}

func simFlashArrayCommand() *cli.Command {
	return &cli.Command{
		Name:  "flasharray",
		Usage: "run a simulated Pure FlashArray (REST 2.x) until interrupted",
		Description: `Volume bytes are sparse files under --dir. With --lio-host, connections to that
array host become LIO LUNs in a tcm_loop target of their own, so connected volumes appear on
this machine's SCSI bus with a FlashArray volume's identity (needs root and the target modules).`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "dir", Required: true, Usage: "directory for certificates, the API token and volume data"},
			&cli.StringFlag{Name: "name", Value: "fa-sim", Usage: "array name"},
			&cli.StringFlag{Name: "listen", Value: "127.0.0.1:0", Usage: "HTTPS address"},
			&cli.StringFlag{Name: "max-version", Usage: "highest REST version to offer (default 2.44)"},
			&cli.StringSliceFlag{Name: "host", Usage: "array host to create: NAME=IQN|NQN|WWPN (repeatable)"},
			&cli.StringSliceFlag{Name: "volume", Usage: "volume to create: NAME=SIZE in GiB (repeatable; its serial is printed)"},
			&cli.StringFlag{Name: "lio-host", Usage: "array host whose connections are mapped into a local LIO target"},
			&cli.IntFlag{Name: "lio-target", Value: 1, Usage: "id of that loopback target (one per simulated array)"},
		},
		Action: func(c *cli.Context) error {
			files := flasharray.Files{Dir: filepath.Join(c.String("dir"), "volumes")}
			var data flasharray.DataPlane = &files
			if h := c.String("lio-host"); h != "" {
				run := &runner.Exec{Timeout: time.Minute}
				if _, err := run.Run(c.Context, append([]string{"modprobe", "-a"}, lio.Modules...)); err != nil {
					return err
				}
				l, err := lio.Open()
				if err != nil {
					return err
				}
				t, err := l.CreateTarget(c.Int("lio-target"))
				if err != nil {
					return err
				}
				data = &flasharray.LIO{Files: &files, L: l, Targets: map[string]*lio.Target{h: t}}
			}
			a := flasharray.New(c.String("name"), data)
			if v := c.String("max-version"); v != "" {
				for i, x := range a.Offered {
					if x == v {
						a.Offered = a.Offered[:i+1]
					}
				}
			}
			for _, spec := range c.StringSlice("host") {
				name, id, ok := strings.Cut(spec, "=")
				if !ok {
					return usageErr("--host %q: want NAME=IQN|NQN|WWPN", spec)
				}
				var iqns, nqns, wwns []string
				switch {
				case strings.HasPrefix(id, "iqn."):
					iqns = []string{id}
				case strings.HasPrefix(id, "nqn."):
					nqns = []string{id}
				default:
					wwns = []string{id}
				}
				if err := a.CreateHost(name, iqns, nqns, wwns); err != nil {
					return err
				}
			}
			for _, spec := range c.StringSlice("volume") {
				name, size, ok := strings.Cut(spec, "=")
				gib, err := strconv.ParseInt(size, 10, 64)
				if !ok || err != nil || gib <= 0 {
					return usageErr("--volume %q: want NAME=SIZE (GiB)", spec)
				}
				serial, err := a.CreateVolume(name, gib<<30)
				if err != nil {
					return err
				}
				fmt.Printf("volume %s serial %s\n", name, serial)
			}
			srv, err := flasharray.Listen(a, c.String("listen"), c.String("dir"))
			if err != nil {
				return err
			}
			defer srv.Close()
			fmt.Printf("flasharray %s: %s  CA %s  API token in %s\n", a.Name, srv.URL, srv.CAFile, srv.TokenFile)
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			<-ctx.Done()
			return nil
		},
	}
}

// SimConn is how `pvesnap sim qm` reaches a simulated node (written by whoever starts the
// simulator: the lab tests, the demo).
type SimConn struct {
	URL      string `json:"url"`
	CA       string `json:"ca"`
	Node     string `json:"node"`
	Password string `json:"root_password"`
}

func simQMCommand() *cli.Command {
	return &cli.Command{
		Name:      "qm",
		Usage:     "answer a qm command against a simulated node (the lab's stand-in for qm)",
		ArgsUsage: "--conn FILE -- COMMAND VMID [OPTIONS]",
		Flags:     []cli.Flag{&cli.StringFlag{Name: "conn", Required: true, Usage: "JSON file with url, ca, node, root_password"}},
		Action: func(c *cli.Context) error {
			b, err := os.ReadFile(c.String("conn"))
			if err != nil {
				return err
			}
			var sc SimConn
			if err := json.Unmarshal(b, &sc); err != nil {
				return fmt.Errorf("%s: %w", c.String("conn"), err)
			}
			cl, err := simpve.NewClient(sc.URL, sc.CA)
			if err != nil {
				return err
			}
			if err := cl.Login("root@pam", sc.Password); err != nil {
				return err
			}
			cli := &simpve.CLI{Client: cl, Node: sc.Node}
			out, stderr, code := cli.Command(c.Context, append([]string{"qm"}, c.Args().Slice()...))
			os.Stdout.Write(out)
			if code != 0 {
				fmt.Fprint(os.Stderr, stderr)
				os.Exit(code)
			}
			return nil
		},
	}
}
