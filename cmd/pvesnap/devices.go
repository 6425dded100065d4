package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/pvesnap/pvesnap/daemon/tasks"
	"github.com/pvesnap/pvesnap/lvm/engine"
)

func devicesCommand() *cli.Command {
	return &cli.Command{
		Name:  "devices",
		Usage: "list block devices with identity, paths, copy-offload capabilities, block sizes, protection information and health",
		Description: `Asks every SCSI LU (once, whatever its number of paths), SATA disk and NVMe namespace of
this node what it is and how it is: INQUIRY, VPD pages, READ CAPACITY(16), the copy operating
parameters and the Informational Exceptions log page of a SCSI LU; IDENTIFY DEVICE, SMART
attributes and SMART RETURN STATUS of a SATA disk; Identify Controller and Namespace, Host
Behavior Support and the SMART / Health log of an NVMe namespace's controller.`,
		Flags: []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print JSON"}},
		Action: func(c *cli.Context) error {
			devs, err := engine.List(context.Background(), engine.Roots{Sys: "/sys", Dev: "/dev"})
			if err != nil {
				return err
			}
			views := make([]engine.View, 0, len(devs))
			for _, d := range devs {
				views = append(views, d.View())
			}
			if c.Bool("json") {
				return json.NewEncoder(os.Stdout).Encode(views)
			}
			return printDevices(views)
		},
	}
}

func printDevices(views []engine.View) error {
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tTRANSPORT\tSIZE\tBLOCKS\tPI\tIDENTITY\tPATHS\tCOPY OFFLOAD\tHEALTH")
	var cdfe []string
	for _, v := range views {
		paths := strings.Join(v.Paths, ",")
		if v.Multipath != "" {
			paths += " (" + v.Multipath + ")"
		}
		if len(v.Controllers) > 0 {
			paths += " via " + strings.Join(v.Controllers, ",")
		}
		blocks := fmt.Sprint(v.BlockSize)
		if v.Physical != 0 && v.Physical != v.BlockSize {
			blocks += "/" + fmt.Sprint(v.Physical)
		}
		offload := v.Copy.Summary
		if !v.Copy.Offload && v.Copy.Reason != "" && !strings.Contains(offload, v.Copy.Reason) {
			offload += " (no offload: " + v.Copy.Reason + ")"
		}
		if v.Copy.CDFEState != "" && v.Copy.CDFEState != "no Copy command" {
			cdfe = append(cdfe, v.Name+": "+v.Copy.CDFEState)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", v.Name, v.Transport, tasks.HumanBytes(v.Size), blocks, dash(v.PI),
			dash(v.Identity()), dash(paths), offload, v.Health.Summary())
	}
	if err := w.Flush(); err != nil {
		return err
	}
	// The cross-namespace copy format's state, and what follows from it, below the table.
	for _, c := range cdfe {
		fmt.Println(c)
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
