package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pvesnap/pvesnap/daemon/inventory"
)

func inventoryCommand() *cli.Command {
	return &cli.Command{
		Name:  "inventory",
		Usage: "list VMs (existing and deleted) with the array snapshots that can restore them",
		Description: `Without --vmid: one line per VM incarnation. With --vmid: its disks, where they live on
the arrays, and its restore points, newest first. A point taken before a disk was created is
marked "predates" for that disk: it cannot contain it and pvesnap refuses to restore from it.`,
		Flags: []cli.Flag{
			&cli.Int64Flag{Name: "vmid", Usage: "show one VM"},
			&cli.Int64Flag{Name: "ctime", Usage: "with --vmid: the incarnation created at this time (a reused VMID)"},
			&cli.BoolFlag{Name: "json", Usage: "print JSON"},
			&cli.BoolFlag{Name: "cached", Usage: "do not ask the arrays; use the last refresh"},
		},
		Action: func(c *cli.Context) error {
			e, err := commandEnv(c)
			if err != nil {
				return err
			}
			defer e.db.Close()
			if c.Bool("cached") {
				err = e.inv.ScanVMs(c.Context)
			} else {
				var res *inventory.RefreshResult
				if res, err = e.inv.Refresh(c.Context); err == nil {
					for a, msg := range res.Errors {
						fmt.Fprintf(os.Stderr, "pvesnap: array %s: %s (its snapshots are from the last refresh)\n", a, msg)
					}
				}
			}
			if err != nil {
				return err
			}
			if c.IsSet("vmid") {
				d, err := e.inv.Detail(c.Context, c.Int64("vmid"), c.Int64("ctime"))
				if err != nil {
					return err
				}
				if c.Bool("json") {
					return json.NewEncoder(os.Stdout).Encode(d)
				}
				printDetail(d)
				return nil
			}
			tree, err := e.inv.Tree(c.Context, nil)
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return json.NewEncoder(os.Stdout).Encode(tree)
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "VMID\tNAME\tSTATE\tCREATED\tDISKS\tON ARRAY\tPOINTS\tNEWEST\tPROBLEMS")
			for _, v := range tree {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\n", v.VMID, orDash(v.Name), v.State, unixTime(v.CTime*1000),
					v.Disks, v.MappedDisks, v.Restorable, unixTime(v.Newest), strings.Join(v.Problems, "; "))
			}
			return tw.Flush()
		},
	}
}

func unixTime(ms int64) string {
	if ms == 0 {
		return "-"
	}
	return time.UnixMilli(ms).Local().Format("2006-01-02 15:04")
}

func printDetail(d *inventory.VMDetail) {
	fmt.Printf("VM %d %s (%s, created %s from %s, node %s)\n", d.VMID, d.Name, d.State, unixTime(d.CTime*1000), d.CTimeSource, d.Node)
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nDISK\tVOLUME ID\tLV CREATED\tARRAY\tARRAY VOLUME\tMAPPING")
	for _, k := range d.DiskList {
		m := k.Mapping
		if k.Reason != "" {
			m += ": " + k.Reason
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", k.Key, k.Volid, unixTime(k.LVTime*1000), orDash(k.Array), orDash(k.Volume), m)
	}
	fmt.Fprintln(tw, "\nPOINT\tTAKEN\tDISKS\tNOTES")
	for _, p := range d.Points {
		var notes []string
		if len(p.PredatesDisk) > 0 {
			notes = append(notes, "predates "+strings.Join(p.PredatesDisk, ","))
		}
		if len(p.Missing) > 0 {
			notes = append(notes, "no snapshot of "+strings.Join(p.Missing, ","))
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", p.ID, unixTime(p.Created), len(p.Snapshots), strings.Join(notes, "; "))
	}
	tw.Flush()
}
