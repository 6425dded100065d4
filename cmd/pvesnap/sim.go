package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pvesnap/pvesnap/daemon/logging"
	simpve "github.com/pvesnap/pvesnap/sim/pve"
)

func simCommand() *cli.Command {
	return &cli.Command{
		Name:  "sim",
		Usage: "run the simulators (a Proxmox VE cluster; used by tests and the demo)",
		Subcommands: []*cli.Command{{
			Name:  "pve",
			Usage: "run a simulated Proxmox VE cluster until interrupted",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "dir", Usage: "directory for the cluster's files", Required: true},
				&cli.StringSliceFlag{Name: "node", Usage: "node name (repeat for a cluster)", Value: cli.NewStringSlice("pve1")},
				&cli.StringFlag{Name: "cluster", Usage: "cluster name (empty: standalone node)"},
				&cli.StringSliceFlag{Name: "listen", Usage: "node=host:port (default 127.0.0.1:0)"},
				&cli.StringFlag{Name: "root-password", Value: "pvesnap", Usage: "root@pam password"},
				&cli.DurationFlag{Name: "auth-fail-delay", Value: 3 * time.Second, Usage: "delay of 401 answers, like pveproxy"},
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
					Listen: listen, RootPassword: c.String("root-password"), AuthFailDelay: delay,
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
