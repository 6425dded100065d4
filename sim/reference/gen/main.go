// Command gen extracts from the full reference schemas (../shared/reference by default) the
// parts pvesnap's tests check against, into compressed files committed beside it. Run it when
// a route is added: the reference test fails until the subset covers every implemented path.
//
//	go run ./sim/reference/gen [-shared DIR] [-out DIR]
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/pvesnap/pvesnap/sim/reference"
)

func main() {
	shared := flag.String("shared", reference.SharedDir(), "directory holding the full reference files")
	out := flag.String("out", "sim/reference", "where to write the subsets")
	flag.Parse()
	if *shared == "" {
		fmt.Fprintln(os.Stderr, "gen: no reference directory found (set -shared or PVESNAP_SHARED_REFERENCE)")
		os.Exit(1)
	}
	for _, v := range reference.PVEVersions {
		b, err := reference.ExtractPVE(filepath.Join(*shared, "pve-api-schema-"+v+".json"))
		if err != nil {
			fmt.Fprintln(os.Stderr, "gen:", err)
			os.Exit(1)
		}
		if err := reference.WriteGz(filepath.Join(*out, "pve-schema-"+v+".json.gz"), b); err != nil {
			fmt.Fprintln(os.Stderr, "gen:", err)
			os.Exit(1)
		}
		fmt.Printf("pve %s: %d bytes\n", v, len(b))
	}
	for _, v := range reference.FAVersions {
		b, err := reference.ExtractFA(filepath.Join(*shared, "purity-fa-rest-"+v+".oas3.yaml"))
		if err != nil {
			fmt.Fprintln(os.Stderr, "gen:", err)
			os.Exit(1)
		}
		if err := reference.WriteGz(filepath.Join(*out, "fa-spec-"+v+".json.gz"), b); err != nil {
			fmt.Fprintln(os.Stderr, "gen:", err)
			os.Exit(1)
		}
		fmt.Printf("flasharray %s: %d bytes\n", v, len(b))
	}
}
