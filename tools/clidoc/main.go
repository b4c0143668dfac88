// Command clidoc writes banger's CLI reference (docs/cli.md) to stdout.
package main

import (
	"fmt"
	"os"

	"github.com/bangerdev/banger/internal/cli"
)

func main() {
	if err := cli.WriteReference(os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
