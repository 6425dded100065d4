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
}

func main() {
	in := flag.String("in", "", "bench-copy.json")
	img := flag.String("img", "docs/img", "directory for the plot")
	flag.Parse()
	b, err := os.ReadFile(*in)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var cs []caseResult
	if err := json.Unmarshal(b, &cs); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	byName := map[string]caseResult{}
	for _, c := range cs {
		byName[c.Name] = c
	}
	dd := byName["dd bs=8M iflag=direct oflag=direct"]
	fmt.Println("| Copy of a 1 GiB LV between two LUNs of one array | Time | Host I/O | vs dd |")
	fmt.Println("|---|---|---|---|")
	var series []plot.Series
	for _, c := range cs {
		if c.Seconds == 0 || c.Name[:3] == "zvo" {
			continue
		}
		ratio := "-"
		if dd.Seconds > 0 {
			ratio = fmt.Sprintf("%.2f", c.Seconds/dd.Seconds)
		}
		fmt.Printf("| %s (%s) | %.2f s | %.1f MiB | %s |\n", c.Name, c.Note, c.Seconds, float64(c.HostBytes)/(1<<20), ratio)
		if len(c.Samples) > 1 {
			s := plot.Series{Name: c.Name}
			for _, p := range c.Samples {
				s.X = append(s.X, p[0])
				s.Y = append(s.Y, p[1])
			}
			series = append(series, s)
		}
	}
	clone, send := byName["zvol copy: zfs snapshot + clone (pvesnap)"], byName["zvol copy: zfs send | zfs recv (PVE's copy)"]
	fmt.Println()
	if clone.Seconds > 0 && send.Seconds > 0 {
		fmt.Println("| CSI copy of a zvol (512 MiB of data) | Time | vs zfs send \\| recv |")
		fmt.Println("|---|---|---|")
		esc := func(s string) string { return strings.ReplaceAll(s, "|", "\\|") }
		fmt.Printf("| %s | %.3f s | %.3f |\n| %s | %.3f s | 1.00 |\n", esc(clone.Name), clone.Seconds, clone.Seconds/send.Seconds, esc(send.Name), send.Seconds)
	} else if z, ok := byName["zfs"]; ok {
		fmt.Printf("ZFS cases: %s\n", z.Note)
	}
	if len(series) > 0 {
		c := plot.Chart{Title: "1 GiB LV copy: MiB done over time", XLabel: "seconds", YLabel: "MiB copied", Series: series}
		if err := c.Save(filepath.Join(*img, "bench-copy-rate.png")); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
}
