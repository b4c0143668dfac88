package cli

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/model"
)

// vmRow is what a vm ls --format template sees: every VM field (.Name,
// .IP, .State, .CPUs, …) plus the human columns of the table.
type vmRow struct {
	model.VM
	Uptime string // since the VM last became ready, "-" when not running
	Age    string // since it was created
	Memory string // e.g. 1G, 512M
	Disk   string // e.g. 2G, 4.5G
}

func newVMRow(now time.Time, vm model.VM) vmRow {
	up := "-"
	if vm.State == model.StateRunning {
		up = since(now, vm.StartedAt)
	}
	return vmRow{VM: vm, Uptime: up, Age: since(now, vm.CreatedAt),
		Memory: sizeShort(int64(vm.MemoryMiB) << 20), Disk: sizeShort(vm.DiskBytes)}
}

func newVMLsCommand(a *app) *cobra.Command {
	var asJSON, watch bool
	var format string
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"ps", "list"},
		Short:   "List VMs",
		Long: `List VMs with their state, address, size, uptime and age. --format prints
each VM with a Go template (fields: every --json field by its Go name, e.g.
.Name .State .IP .Image .CPUs .MemoryMiB, plus .Uptime .Age .Memory .Disk).
-w keeps the table on screen and redraws it on every lifecycle event
(see banger events) until Ctrl-C.`,
		Example: `  banger vm ls
  banger vm ps --json
  banger vm ls --format '{{.Name}} {{.IP}}'
  banger vm ls -w`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			w := cmd.OutOrStdout()
			render := func(ctx context.Context) error { return a.renderVMs(ctx, w, asJSON, format) }
			if format != "" {
				if _, err := parseFormat(format); err != nil {
					return err
				}
			}
			if !watch {
				return render(cmd.Context())
			}
			return a.watchVMs(cmd.Context(), w, render)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().StringVar(&format, "format", "", formatFlagHelp)
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "redraw the list on every lifecycle event")
	return cmd
}

func (a *app) renderVMs(ctx context.Context, w io.Writer, asJSON bool, format string) error {
	res, err := call(ctx, a, api.MethodVMList, api.Empty{})
	if err != nil {
		return err
	}
	if asJSON {
		return printJSON(w, res)
	}
	now := time.Now()
	rows := make([]vmRow, 0, len(res.VMs))
	for _, vm := range res.VMs {
		rows = append(rows, newVMRow(now, vm))
	}
	if format != "" {
		t, err := parseFormat(format)
		if err != nil {
			return err
		}
		return printFormatted(w, t, rows)
	}
	cells := make([][]string, 0, len(rows))
	for _, r := range rows {
		ip := r.IP
		if ip == "" {
			ip = "-"
		}
		cells = append(cells, []string{r.Name, string(r.State), ip, r.Image, string(r.VMM),
			fmt.Sprint(r.CPUs), r.Memory, r.Disk, r.Uptime, r.Age})
	}
	return table(w, []string{"NAME", "STATE", "IP", "IMAGE", "VMM", "CPUS", "MEMORY", "DISK", "UP", "AGE"}, cells)
}

// watchVMs draws the list once subscribed to events, then again after
// each event. On a terminal each drawing replaces the last; elsewhere
// drawings follow each other under a time line.
func (a *app) watchVMs(ctx context.Context, w io.Writer, render func(context.Context) error) error {
	tty := isTerminal(w)
	draw := func() error {
		if tty {
			fmt.Fprint(w, "\x1b[H\x1b[2J")
		} else {
			fmt.Fprintf(w, "# %s\n", time.Now().Format(time.TimeOnly))
		}
		if err := render(ctx); err != nil {
			return err
		}
		if !tty {
			fmt.Fprintln(w)
		}
		return nil
	}
	return a.watchEvents(ctx, api.EventsWatch{}, draw, func(api.Event) error { return draw() })
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(interface{ Fd() uintptr })
	return ok && term.IsTerminal(int(f.Fd()))
}
