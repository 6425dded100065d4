package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pvesnap/pvesnap/daemon/restore"
)

func restoreCommand() *cli.Command {
	return &cli.Command{
		Name:  "restore",
		Usage: "restore a VM from an array snapshot, in place or as a new VM (as a PVE task; its log is printed)",
		Description: `The same restore as POST /nodes/{node}/pvesnap/restore, run by root on this node. Find the
restore points with 'pvesnap inventory --vmid N'. Exit status 0 when the task ends OK.

--status lists the restore jobs that are not finished (or one, with --job) and explains each:
what it did, what was undone, which undo failed and why, and what waits for it. --resume JOB
runs a stuck job's remaining undos now (the daemon also retries every 30 s), once the cause of
the failed undo is fixed.`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "status", Usage: "explain unfinished restore jobs (all, or --job) instead of restoring"},
			&cli.StringFlag{Name: "job", Usage: "with --status: only this job"},
			&cli.StringFlag{Name: "resume", Usage: "finish the undos of restore job `JOB` whose worker is gone"},
			&cli.Int64Flag{Name: "vmid", Usage: "source VM (existing or deleted)"},
			&cli.Int64Flag{Name: "ctime", Usage: "creation time of the source incarnation (a reused VMID)"},
			&cli.StringFlag{Name: "point", Usage: "restore point <array>:<point>"},
			&cli.StringFlag{Name: "mode", Value: restore.NewVM, Usage: "new | overwrite"},
			&cli.StringFlag{Name: "disks", Usage: "disk keys to restore, comma-separated (default: all on array volumes)"},
			&cli.Int64Flag{Name: "newid", Usage: "VMID of the new VM (default: the next free one)"},
			&cli.StringFlag{Name: "name", Usage: "name of the new VM"},
			&cli.StringFlag{Name: "storage", Usage: "LVM storage for the new VM's disks"},
			&cli.BoolFlag{Name: "preserve-macs", Usage: "keep the NICs' MAC addresses (new VM)"},
			&cli.BoolFlag{Name: "link-down", Usage: "set link_down=1 on every NIC"},
			&cli.BoolFlag{Name: "start", Usage: "start the VM afterwards"},
			&cli.BoolFlag{Name: "force-host-copy", Usage: "copy through the host instead of offloading"},
			&cli.BoolFlag{Name: "no-safety-snapshot", Usage: "overwrite: skip the safety snapshot of the VM's volumes"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usageErr("restore takes no arguments (options only)")
			}
			if c.Bool("status") || c.String("resume") != "" {
				return restoreJobs(c)
			}
			if !c.IsSet("vmid") || !c.IsSet("point") {
				return usageErr("restore needs --vmid and --point (or --status, --resume)")
			}
			if m := c.String("mode"); m != restore.NewVM && m != restore.Overwrite {
				return usageErr("--mode %q: new or overwrite", m)
			}
			e, err := commandEnv(c)
			if err != nil {
				return err
			}
			defer e.db.Close()
			spec := restore.Spec{Mode: c.String("mode"), VMID: c.Int64("vmid"), CTime: c.Int64("ctime"), Point: c.String("point"),
				NewVMID: c.Int64("newid"), Name: c.String("name"), Storage: c.String("storage"), PreserveMACs: c.Bool("preserve-macs"),
				LinkDown: c.Bool("link-down"), Start: c.Bool("start"), ForceHostCopy: c.Bool("force-host-copy"), Safety: !c.Bool("no-safety-snapshot")}
			if d := c.String("disks"); d != "" {
				spec.Disks = strings.Split(d, ",")
			}
			upid, err := e.restore.Launch(c.Context, spec, "root@pam", nil)
			if err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "task %s\n", upid)
			return follow(e, upid)
		},
	}
}

// restoreJobs answers --status and --resume.
func restoreJobs(c *cli.Context) error {
	e, err := commandEnv(c)
	if err != nil {
		return err
	}
	defer e.db.Close()
	if job := c.String("resume"); job != "" {
		return e.restore.Resume(c.Context, job, func(f string, a ...any) { fmt.Printf(f+"\n", a...) })
	}
	ids := []string{c.String("job")}
	if ids[0] == "" {
		jobs, err := restore.Unfinished(c.Context, e.db)
		if err != nil {
			return err
		}
		if len(jobs) == 0 {
			fmt.Println("no unfinished restore jobs")
			return nil
		}
		ids = ids[:0]
		for _, j := range jobs {
			ids = append(ids, j.ID)
		}
	}
	for i, id := range ids {
		st, err := restore.JobStatusOf(c.Context, e.db, id)
		if err != nil {
			return err
		}
		if i > 0 {
			fmt.Println()
		}
		fmt.Print(st.String())
	}
	return nil
}

// follow prints a task's log as it grows and returns an error unless it ends OK.
func follow(e *env, upid string) error {
	printed := 0
	for {
		st, err := e.taskDir.Status(upid)
		if err != nil {
			return err
		}
		lines, _, err := e.taskDir.ReadLog(upid, printed, 0)
		if err == nil {
			for _, l := range lines {
				if l.T != "no content" {
					fmt.Println(l.T)
				}
				printed = l.N
			}
		}
		if st.Status == "stopped" {
			if st.ExitStatus != "OK" && !strings.HasPrefix(st.ExitStatus, "WARNINGS") {
				return fmt.Errorf("task failed: %s", st.ExitStatus)
			}
			return nil
		}
		time.Sleep(500 * time.Millisecond)
	}
}
