package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/pvesnap/pvesnap/daemon/tasks"
	"github.com/pvesnap/pvesnap/lvm/engine"
)

// devicePath accepts /dev/… paths and vg/lv names.
func devicePath(s string) (string, error) {
	if strings.HasPrefix(s, "/") {
		return s, nil
	}
	vg, lv, ok := strings.Cut(s, "/")
	if !ok || vg == "" || lv == "" || strings.Contains(lv, "/") {
		return "", usageErr("%q is neither a /dev path nor vg/lv", s)
	}
	return "/dev/" + vg + "/" + lv, nil
}

func isTTY(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func copyCommand() *cli.Command {
	return &cli.Command{
		Name:      "copy",
		Usage:     "copy an LV or block device to another, offloaded to the array when possible",
		ArgsUsage: "SRC DST   (a /dev path or vg/lv each; DST must be at least as large)",
		Description: `Copies SRC onto DST. When both sit on one array (SCSI EXTENDED COPY) or one NVMe
subsystem (NVMe Copy), the array copies the data itself; otherwise the host copies it with
O_DIRECT, several I/Os in flight and zero ranges written as BLKZEROOUT. One line explains the
method chosen, and any fallback says why. The destination must not be mounted or open.`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "force-host-copy", Usage: "skip offload and copy through the host"},
			&cli.BoolFlag{Name: "verify", Usage: "compare source and destination after the copy"},
			&cli.IntFlag{Name: "in-flight", Value: 8, Usage: "host-copy I/Os in flight"},
			&cli.IntFlag{Name: "chunk-mib", Value: 8, Usage: "host-copy I/O size in MiB"},
			&cli.BoolFlag{Name: "json", Usage: "print the result as JSON"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 2 {
				return usageErr("copy needs SRC and DST")
			}
			src, err := devicePath(c.Args().Get(0))
			if err != nil {
				return err
			}
			dst, err := devicePath(c.Args().Get(1))
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			tty := isTTY(os.Stderr) && !c.Bool("json")
			started := time.Now()
			o := engine.Options{ForceHost: c.Bool("force-host-copy"), Verify: c.Bool("verify"),
				HostInFlight: c.Int("in-flight"), HostChunk: int64(c.Int("chunk-mib")) << 20,
				Log: func(format string, args ...any) {
					if tty {
						fmt.Fprint(os.Stderr, "\r\033[K")
					}
					fmt.Fprintf(os.Stderr, format+"\n", args...)
				},
				Progress: func(done, total int64) {
					if tty {
						fmt.Fprintf(os.Stderr, "\r\033[K%s", progressBar(done, total, started))
					} else if !c.Bool("json") {
						fmt.Fprintln(os.Stderr, progressBar(done, total, started))
					}
				}}
			res, err := engine.Copy(ctx, src, dst, o)
			if tty {
				fmt.Fprintln(os.Stderr)
			}
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return json.NewEncoder(os.Stdout).Encode(map[string]any{"bytes": res.Bytes, "offloaded": res.Offloaded,
					"host_copied": res.HostCopied, "zeroed": res.Zeroed, "redone": res.Redone, "methods": res.Methods, "fallbacks": res.Fallbacks,
					"seconds": res.Duration.Seconds()})
			}
			redone := ""
			if res.Redone > 0 {
				redone = fmt.Sprintf(" (%s of it a second time)", tasks.HumanBytes(res.Redone))
			}
			fmt.Printf("copied %s in %s (%s/s): %s offloaded, %s through the host%s, %s zeroed\n", tasks.HumanBytes(res.Bytes),
				res.Duration.Round(time.Millisecond), tasks.HumanBytes(int64(float64(res.Bytes)/res.Duration.Seconds())),
				tasks.HumanBytes(res.Offloaded), tasks.HumanBytes(res.HostCopied), redone, tasks.HumanBytes(res.Zeroed))
			return nil
		},
	}
}

func progressBar(done, total int64, started time.Time) string {
	pct := 100.0
	if total > 0 {
		pct = 100 * float64(done) / float64(total)
	}
	width := 30
	fill := int(pct / 100 * float64(width))
	el := time.Since(started).Seconds()
	rate := float64(done) / max(el, 0.001)
	eta := "-"
	if rate > 0 && done < total {
		eta = (time.Duration(float64(total-done)/rate) * time.Second).Round(time.Second).String()
	}
	return fmt.Sprintf("[%s%s] %5.1f%% %s of %s, %s/s, ETA %s", strings.Repeat("#", fill), strings.Repeat(".", width-fill), pct,
		tasks.HumanBytes(done), tasks.HumanBytes(total), tasks.HumanBytes(int64(rate)), eta)
}
