// Command report turns the lab's copy benchmark (bench-copy.json) into the markdown section
// of docs/benchmarks.md and the copy-rate plot.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/pvesnap/pvesnap/lab/bench/plot"
)

type caseResult struct {
	Name      string       `json:"name"`
	Seconds   float64      `json:"seconds"`
	HostBytes int64        `json:"host_bytes"`
	Samples   [][2]float64 `json:"samples"`
	Note      string       `json:"note"`
	Peers     []string     `json:"peers"`
	Table     string       `json:"table"`
}

// tables are the report's tables in order: the cases of each, with their heading.
var tables = []struct{ id, heading, target string }{
	{"lv", "Copy of a 1 GiB LV (full of data) between two LUNs of one array", "EXTENDED COPY ≥ 2× faster than sg_xcopy (ratio ≤ 0.50); host copy ≥ 1.2× faster than dd with conv=fsync (≤ 0.83) and ≥ 1.0× qemu-img (≤ 1.00)"},
	{"layout", "The same host copy by I/O layout (I/Os in flight × size), dd measured again alongside", ""},
	{"san", "The same copy between the same LUNs over iSCSI with dm-multipath (two sessions), as a production node reaches its array",
		"host copy ≥ 1.2× faster than dd with conv=fsync (≤ 0.83)"},
	{"half-zero", "Copy of a 1 GiB LV whose second half is zeros", ""},
	{"zvol", "CSI copy of a zvol full of data (proxmox-csi-plugin's POST …/content/{volume})", "median ≤ 300 ms; the 8 GiB one within 1.5× of the 1 GiB one"},
	{"move", "Move of a 1 GiB zvol full of data to another node (the copy with target_node: pvecsictl migrate, cross-zone clones)",
		"throughput ≥ 0.9 of zfs send | zfs recv piped locally (time ratio ≤ 1.11) and ≥ 1.0 of zfs send | ssh … zfs recv (time ratio ≤ 1.00)"},
}

func main() {
	in := flag.String("in", "", "bench-copy.json")
	img := flag.String("img", "docs/img", "directory for the plot")
	flag.Parse()
	if err := report(*in, *img); err != nil {
		fmt.Fprintln(os.Stderr, "bench report:", err)
		os.Exit(1)
	}
}

func report(in, img string) error {
	b, err := os.ReadFile(in)
	if err != nil {
		return err
	}
	var cs []caseResult
	if err := json.Unmarshal(b, &cs); err != nil {
		return err
	}
	byName := map[string]caseResult{}
	for _, c := range cs {
		byName[c.Name] = c
	}
	esc := func(s string) string { return strings.ReplaceAll(s, "|", "\\|") }
	for _, tb := range tables {
		var rows []caseResult
		for _, c := range cs {
			if c.Table == tb.id {
				rows = append(rows, c)
			}
		}
		if len(rows) == 0 {
			continue
		}
		fmt.Printf("\n| %s | Time | Host I/O | Time / peer's |\n|---|---|---|---|\n", tb.heading)
		for _, c := range rows {
			if c.Seconds == 0 {
				fmt.Printf("| %s | - | - | - |\n", esc(c.Note))
				continue
			}
			var ratios []string
			for _, name := range c.Peers {
				if p, ok := byName[name]; ok && p.Seconds > 0 {
					ratios = append(ratios, fmt.Sprintf("%.3f vs %s", c.Seconds/p.Seconds, esc(p.Name)))
				}
			}
			ratio := "peer"
			if len(ratios) > 0 {
				ratio = strings.Join(ratios, "; ")
			}
			hostIO := fmt.Sprintf("%.1f MiB", float64(c.HostBytes)/(1<<20))
			if tb.id == "zvol" || tb.id == "move" {
				hostIO = "-"
			}
			fmt.Printf("| %s (%s) | %.3f s | %s | %s |\n", esc(c.Name), esc(c.Note), c.Seconds, hostIO, ratio)
		}
		if tb.id == "zvol" {
			one, eight := byName["1 GiB zvol: pvesnap copy, call to task OK"], byName["8 GiB zvol: pvesnap copy, call to task OK"]
			if one.Seconds > 0 && eight.Seconds > 0 {
				fmt.Printf("\n8 GiB / 1 GiB median: %.2f\n", eight.Seconds/one.Seconds)
			}
			for _, gib := range []int{1, 8} {
				own := byName[fmt.Sprintf("%d GiB zvol: pvesnap copy, call to task OK", gib)]
				floor := byName[fmt.Sprintf("%d GiB zvol: the same ioctls alone", gib)]
				if own.Seconds > 0 && floor.Seconds > 0 {
					fmt.Printf("\n%d GiB: pvesnap's own time (API, permission check, task) over the ZFS ioctls: %.0f ms\n", gib, (own.Seconds-floor.Seconds)*1000)
				}
			}
		}
		if tb.id == "move" {
			for _, c := range rows {
				if c.Seconds == 0 || len(c.Peers) == 0 {
					continue
				}
				fmt.Printf("\n%s: %.1f MiB/s", esc(c.Name), 1024/c.Seconds)
				for _, name := range c.Peers {
					if p, ok := byName[name]; ok && p.Seconds > 0 {
						fmt.Printf("; %.2f of the throughput of %s (%.1f MiB/s)", p.Seconds/c.Seconds, esc(p.Name), 1024/p.Seconds)
					}
				}
				fmt.Println()
			}
		}
		if tb.target != "" {
			fmt.Printf("\nTargets: %s.\n", tb.target)
		}
	}
	var series []plot.Series
	for _, c := range cs {
		if c.Table != "lv" || len(c.Samples) < 2 {
			continue
		}
		s := plot.Series{Name: c.Name}
		for _, p := range c.Samples {
			s.X = append(s.X, p[0])
			s.Y = append(s.Y, p[1])
		}
		series = append(series, s)
	}
	if len(series) > 0 {
		c := plot.Chart{Title: "1 GiB LV copy: MiB done over time", XLabel: "seconds", YLabel: "MiB copied", Series: series}
		return c.Save(filepath.Join(img, "bench-copy-rate.png"))
	}
	return nil
}
