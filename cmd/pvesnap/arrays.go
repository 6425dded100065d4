package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pvesnap/pvesnap/daemon/arrays"
	"github.com/pvesnap/pvesnap/daemon/config"
	"github.com/pvesnap/pvesnap/daemon/restore"
)

func arraysConfig(cfg *config.Config) *arrays.Config { return &arrays.Config{PVE: cfg.Paths.PVE} }

func nodePaths(cfg *config.Config) arrays.NodePaths {
	return arrays.NodePaths{ISCSI: cfg.Paths.ISCSI, NVMe: cfg.Paths.NVMe, Sys: cfg.Paths.Sys}
}

// readToken reads an API token from a file or stdin ("-"): never from the command line,
// where every user on the node could read it in the process list.
func readToken(src string) (string, error) {
	var r io.Reader
	if src == "-" {
		if isTTY(os.Stdin) {
			fmt.Fprint(os.Stderr, "API token: ")
		}
		r = os.Stdin
	} else {
		f, err := os.Open(src)
		if err != nil {
			return "", err
		}
		defer f.Close()
		r = f
	}
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	return strings.TrimSpace(line), nil
}

func arraysCommand() *cli.Command {
	return &cli.Command{
		Name:  "arrays",
		Usage: "manage the storage arrays pvesnap restores from (cluster-wide, /etc/pve/pvesnap/arrays.cfg)",
		Subcommands: []*cli.Command{
			{
				Name:      "add",
				Usage:     "add an array; its API token is read from --token-file or stdin",
				ArgsUsage: "ID   (options go before the ID)",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "endpoint", Usage: "management address, https://<host>[:port] (required)"},
					&cli.StringFlag{Name: "type", Value: arrays.TypeFlashArray, Usage: "array type"},
					&cli.StringFlag{Name: "token-file", Value: "-", Usage: "file holding the API token ('-': stdin)"},
					&cli.StringFlag{Name: "ca", Usage: "PEM file the array's certificate must chain to (default: system CAs)"},
					&cli.StringFlag{Name: "hostgroup", Usage: "host group to connect restored volumes to (default: this node's host, found by initiator)"},
					&cli.StringFlag{Name: "comment", Usage: "description"},
					&cli.BoolFlag{Name: "no-check", Usage: "save without logging in to the array first"},
				},
				Action: func(c *cli.Context) error {
					if err := oneArg(c, "arrays add", "the array ID"); err != nil {
						return err
					}
					if c.String("endpoint") == "" {
						return usageErr("arrays add: --endpoint is required")
					}
					cfg, err := loadConfig(c)
					if err != nil {
						return err
					}
					a := arrays.Array{ID: c.Args().First(), Type: c.String("type"), Endpoint: strings.TrimRight(c.String("endpoint"), "/"),
						CA: c.String("ca"), HostGroup: c.String("hostgroup"), Comment: c.String("comment")}
					if err := a.Validate(); err != nil {
						return usageErr("%v", err)
					}
					tok, err := readToken(c.String("token-file"))
					if err != nil {
						return fmt.Errorf("reading the API token: %w", err)
					}
					if err := arrays.CheckToken(tok); err != nil {
						return usageErr("%v", err)
					}
					if !c.Bool("no-check") {
						st, err := probe(c.Context, a, tok, nodePaths(cfg))
						if err != nil {
							return fmt.Errorf("array %s not added: %w", a.ID, err)
						}
						printStatus(st)
					}
					if err := arraysConfig(cfg).Add(a, tok); err != nil {
						return err
					}
					fmt.Printf("array %s added\n", a.ID)
					return nil
				},
			},
			{
				Name:  "sweep",
				Usage: "remove temporary volumes of this cluster's restores that no journal knows (as a task; its log is printed)",
				Description: `Restores copy snapshots into temporary volumes named pvesnap-<cluster>-<node>-<job>-<i>.
A sweep removes those of this node whose job this node's journal does not know or that ended
without removing them, and those of nodes that left the cluster, once older than --grace.
Volumes of other clusters, of member nodes and of running restores are never touched. The
daemon sweeps at start and every 6 hours; --dry-run only lists what would go.`,
				Flags: []cli.Flag{
					&cli.BoolFlag{Name: "dry-run", Usage: "list, do not remove"},
					&cli.DurationFlag{Name: "grace", Value: restore.SweepGrace, Usage: "leave younger volumes alone"},
				},
				Action: func(c *cli.Context) error {
					if c.NArg() > 0 {
						return usageErr("arrays sweep takes no arguments")
					}
					e, err := commandEnv(c)
					if err != nil {
						return err
					}
					defer e.db.Close()
					if c.Bool("dry-run") {
						found, err := e.restore.R.Sweep(c.Context, true, c.Duration("grace"), func(f string, a ...any) { fmt.Printf(f+"\n", a...) })
						fmt.Printf("%d leftover temporary volume(s)\n", len(found))
						return err
					}
					upid, err := e.restore.StartSweep(c.Context, restore.SweepSpec{Grace: c.Duration("grace")}, "root@pam")
					if err != nil {
						return err
					}
					fmt.Fprintf(os.Stderr, "task %s\n", upid)
					return follow(e, upid)
				},
			},
			{
				Name:  "list",
				Usage: "list the configured arrays (tokens are never shown)",
				Flags: []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print JSON"}},
				Action: func(c *cli.Context) error {
					cfg, err := loadConfig(c)
					if err != nil {
						return err
					}
					all, err := arraysConfig(cfg).List()
					if err != nil {
						return err
					}
					if c.Bool("json") {
						if all == nil {
							all = []arrays.Array{}
						}
						return json.NewEncoder(os.Stdout).Encode(all)
					}
					tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "ID\tTYPE\tENDPOINT\tHOSTGROUP\tSTATUS\tCOMMENT")
					for _, a := range all {
						state := "enabled"
						if a.Disable {
							state = "disabled"
						}
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", a.ID, a.Type, a.Endpoint, orDash(a.HostGroup), state, a.Comment)
					}
					return tw.Flush()
				},
			},
			{
				Name:      "test",
				Usage:     "log in to an array and show its identity and where this node's volumes would be connected",
				ArgsUsage: "ID",
				Action: func(c *cli.Context) error {
					if err := oneArg(c, "arrays test", "the array ID"); err != nil {
						return err
					}
					cfg, err := loadConfig(c)
					if err != nil {
						return err
					}
					ac := arraysConfig(cfg)
					a, err := ac.Get(c.Args().First())
					if err != nil {
						return err
					}
					tok, err := ac.Token(a.ID)
					if err != nil {
						return err
					}
					st, err := probe(c.Context, a, tok, nodePaths(cfg))
					if err != nil {
						return err
					}
					printStatus(st)
					if st.TargetError != "" {
						return errors.New(st.TargetError)
					}
					return nil
				},
			},
			{
				Name:      "remove",
				Usage:     "remove an array and its token from pvesnap (nothing on the array is touched)",
				ArgsUsage: "ID",
				Action: func(c *cli.Context) error {
					if err := oneArg(c, "arrays remove", "the array ID"); err != nil {
						return err
					}
					cfg, err := loadConfig(c)
					if err != nil {
						return err
					}
					if err := arraysConfig(cfg).Remove(c.Args().First()); err != nil {
						return err
					}
					fmt.Printf("array %s removed\n", c.Args().First())
					return nil
				},
			},
		},
	}
}

// oneArg requires exactly one argument; options after it are what urfave/cli cannot parse,
// so say so instead of failing obscurely.
func oneArg(c *cli.Context, cmd, what string) error {
	for _, a := range c.Args().Slice()[min(1, c.NArg()):] {
		if strings.HasPrefix(a, "-") {
			return usageErr("%s: option %s after %s: options go before it", cmd, a, what)
		}
	}
	if c.NArg() != 1 {
		return usageErr("%s needs %s", cmd, what)
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func probe(ctx context.Context, a arrays.Array, token string, node arrays.NodePaths) (*arrays.Status, error) {
	return arrays.Check(ctx, a, token, node, 30*time.Second, nil)
}

func printStatus(st *arrays.Status) {
	fmt.Printf("array %s: %s (id %s), Purity %s, REST %s\n", st.Array, st.ArrayName, st.ArrayID, st.Purity, st.RESTVersion)
	if st.Target != "" {
		fmt.Printf("this node's volumes connect to %s\n", st.Target)
	} else {
		fmt.Printf("this node has no connection target: %s\n", st.TargetError)
	}
}
