package main

import (
	"context"
	"log/slog"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/pvesnap/pvesnap/daemon/config"
	"github.com/pvesnap/pvesnap/daemon/logging"
	"github.com/pvesnap/pvesnap/daemon/server"
)

func serveCommand() *cli.Command {
	return &cli.Command{
		Name:  "serve",
		Usage: "run the daemon: the Proxmox API on the configured address, pvesnap's routes, pass-through to pveproxy",
		Action: func(c *cli.Context) error {
			cfg, err := loadConfig(c)
			if err != nil {
				return err
			}
			logger := logging.New(cfg.SlogLevel(), os.Stderr)
			d, err := newDaemon(cfg, logger)
			if err != nil {
				return configErr(err)
			}
			return d.Run(context.Background())
		},
	}
}

// newDaemon wires every module into a daemon.
func newDaemon(cfg *config.Config, logger *slog.Logger) (*server.Daemon, error) {
	e, err := newEnv(cfg, logger)
	if err != nil {
		return nil, err
	}
	d, err := server.New(cfg, logger, e.modules(), e.statics(), e.injectGUI)
	if err != nil {
		return nil, err
	}
	e.tasks.Upstream = d.UpstreamTaskList
	return d, nil
}
