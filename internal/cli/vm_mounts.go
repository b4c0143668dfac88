package cli

import (
	"fmt"
	"io"

	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/termsafe"
)

// printMounts adds a VM's shared directories to vm inspect's text view.
func printMounts(w io.Writer, vm model.VM) {
	for _, m := range vm.Mounts {
		mode := "rw"
		if m.ReadOnly {
			mode = "ro"
		}
		fmt.Fprintf(w, "%-9s %s -> %s (%s)\n", "mount:", termsafe.Line(m.Source), termsafe.Line(m.Target), mode)
	}
	if vm.Workdir != "" {
		fmt.Fprintf(w, "%-9s %s\n", "workdir:", termsafe.Line(vm.Workdir))
	}
}
