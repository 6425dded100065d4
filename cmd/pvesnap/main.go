// Command pvesnap is the Proxmox VE storage companion: the daemon on :8009 and the tools that
// share its code (copy, devices, restore, arrays, inventory, simulators).
//
// Exit codes scripts can rely on:
//
//	0  success
//	1  the operation failed (the message says why)
//	2  usage error: unknown command or flag, bad argument
//	3  configuration error: the config file is invalid or unreadable
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/pvesnap/pvesnap/daemon/config"
	"github.com/pvesnap/pvesnap/daemon/server"
)

// Exit codes.
const (
	exitFailure = 1
	exitUsage   = 2
	exitConfig  = 3
)

// exitError carries an exit code through urfave/cli.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func usageErr(format string, args ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format, args...)}
}

func configErr(err error) error { return &exitError{code: exitConfig, err: err} }

var configFlag = &cli.StringFlag{Name: "config", Aliases: []string{"c"}, Value: config.DefaultPath,
	EnvVars: []string{"PVESNAP_CONFIG"}, Usage: "node-local settings file"}

// loadConfig reads --config; problems are configuration errors (exit 3).
func loadConfig(c *cli.Context) (*config.Config, error) {
	cfg, err := config.Load(c.String("config"))
	if err != nil {
		return nil, configErr(err)
	}
	return cfg, nil
}

func app() *cli.App {
	a := &cli.App{
		Name:                 "pvesnap",
		Usage:                "storage companion for Proxmox VE: instant copies, array snapshots and restores",
		Version:              server.Version,
		EnableBashCompletion: true,
		Flags:                []cli.Flag{configFlag},
		Commands: []*cli.Command{
			serveCommand(),
			versionCommand(),
			configCommand(),
			copyCommand(),
			devicesCommand(),
			arraysCommand(),
			inventoryCommand(),
			restoreCommand(),
			guiCommand(),
			docsCommand(),
			simCommand(),
			workerCommand(),
		},
		OnUsageError: func(c *cli.Context, err error, isSub bool) error {
			return usageErr("%v", err)
		},
		CommandNotFound: func(c *cli.Context, name string) {
			fmt.Fprintf(os.Stderr, "pvesnap: unknown command %q (see 'pvesnap help')\n", name)
			os.Exit(exitUsage)
		},
		ExitErrHandler: func(c *cli.Context, err error) {},
	}
	// A bad flag anywhere is a usage error (exit 2), not only at the top level.
	var walk func([]*cli.Command)
	walk = func(cs []*cli.Command) {
		for _, c := range cs {
			if c.OnUsageError == nil {
				c.OnUsageError = a.OnUsageError
			}
			walk(c.Subcommands)
		}
	}
	walk(a.Commands)
	return a
}

func main() {
	if code, ok := simTool(os.Args); ok {
		os.Exit(code)
	}
	err := app().Run(os.Args)
	if err == nil {
		return
	}
	fmt.Fprintf(os.Stderr, "pvesnap: %v\n", err)
	var ee *exitError
	if errors.As(err, &ee) {
		os.Exit(ee.code)
	}
	var ce cli.ExitCoder
	if errors.As(err, &ce) {
		os.Exit(ce.ExitCode())
	}
	os.Exit(exitFailure)
}

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print the version",
		Action: func(c *cli.Context) error {
			fmt.Println("pvesnap", server.Version)
			return nil
		},
	}
}

func configCommand() *cli.Command {
	return &cli.Command{
		Name:  "config",
		Usage: "inspect the node-local settings",
		Subcommands: []*cli.Command{{
			Name:  "check",
			Usage: "validate the config file (exit 3 with file:line: key: reason when invalid)",
			Action: func(c *cli.Context) error {
				cfg, err := loadConfig(c)
				if err != nil {
					return err
				}
				fmt.Printf("%s: ok (node %s, listen %s, upstream %s)\n", cfg.File(), cfg.Node, cfg.Listen, cfg.Upstream)
				return nil
			},
		}},
	}
}
