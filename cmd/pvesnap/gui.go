package main

import (
	"errors"
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/pvesnap/pvesnap/pvehook"
)

func guiCommand() *cli.Command {
	flags := []cli.Flag{
		&cli.StringFlag{Name: "template", Value: pvehook.Default.Template, Usage: "pve-manager's GUI page template"},
		&cli.StringFlag{Name: "jsdir", Value: pvehook.Default.JSDir, Usage: "pve-manager's script directory (served as /pve2/js/)"},
		&cli.BoolFlag{Name: "quiet", Usage: "no output; no error when pve-manager is not installed (dpkg triggers)"},
	}
	paths := func(c *cli.Context) pvehook.Paths {
		return pvehook.Paths{Template: c.String("template"), JSDir: c.String("jsdir")}
	}
	return &cli.Command{
		Name:  "gui",
		Usage: "add the panel to pveproxy's own GUI on :8006 (on :8009 pvesnap adds it by itself)",
		Subcommands: []*cli.Command{
			{Name: "install", Usage: "install the panel's script and load it from index.html.tpl", Flags: flags,
				Action: func(c *cli.Context) error {
					err := pvehook.Install(paths(c))
					if errors.Is(err, pvehook.ErrNoGUI) && c.Bool("quiet") {
						return nil
					}
					if err == nil && !c.Bool("quiet") {
						fmt.Println("panel added to", c.String("template"))
					}
					return err
				}},
			{Name: "remove", Usage: "take the panel out of pveproxy's GUI", Flags: flags,
				Action: func(c *cli.Context) error { return pvehook.Remove(paths(c)) }},
			{Name: "status", Usage: "tell whether pveproxy's GUI loads the panel (exit 1 when not, or not current)", Flags: flags,
				Action: func(c *cli.Context) error {
					inst, cur, err := pvehook.Status(paths(c))
					if err != nil {
						return err
					}
					switch {
					case cur:
						fmt.Println("installed, current")
						return nil
					case inst:
						return errors.New("installed, but not this version's panel: run 'pvesnap gui install'")
					}
					return errors.New("not installed")
				}},
		},
	}
}
