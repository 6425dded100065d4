package main

import (
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/pvesnap/pvesnap/daemon/logging"
	"github.com/pvesnap/pvesnap/daemon/tasks"
)

// workerCommand is what the daemon re-executes for each task (hidden from help): it reads the
// job from stdin, reports its UPID on fd 3 and runs the job as a native PVE task.
func workerCommand() *cli.Command {
	return &cli.Command{
		Name:   "worker",
		Usage:  "run one task (started by the daemon; not for interactive use)",
		Hidden: true,
		Action: func(c *cli.Context) error {
			hs := os.NewFile(3, "handshake")
			if hs == nil {
				return usageErr("worker: fd 3 (handshake) is not open; the daemon starts workers")
			}
			cfg, err := loadConfig(c)
			if err != nil {
				fmt.Fprintf(hs, "ERROR: %v\n", err)
				return err
			}
			logger := logging.New(cfg.SlogLevel(), os.Stderr)
			e, err := newEnv(cfg, logger)
			if err != nil {
				fmt.Fprintf(hs, "ERROR: %v\n", err)
				return err
			}
			rc := tasks.RunWorker(tasks.WorkerEnv{Dir: e.taskDir, Node: cfg.Node, Handlers: e.handlers(),
				Stdin: os.Stdin, Handshake: hs, Proc: cfg.Paths.Proc})
			os.Exit(rc)
			return nil
		},
	}
}
