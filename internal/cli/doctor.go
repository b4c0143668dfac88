package cli

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/internal/doctor"
)

func newDoctorCommand(a *app) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check that this host can run VMs, and say how to fix what is missing",
		Long: `Check KVM, QEMU and Firecracker, the tools banger runs, kernels and images,
free disk space, the store's schema, the daemon and the root helper. Every
problem comes with a fix for this distribution.

✓ is fine, ! works with a caveat (or needs a step first), ✗ blocks running
VMs. doctor exits 1 when any check fails and 0 when there are only warnings.
It never starts the daemon.`,
		Example: `  banger doctor
  banger doctor --json | jq '.checks[] | select(.status != "ok")'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := a.paths()
			if err != nil {
				return err
			}
			cfg := doctor.Config{Paths: p, Logger: a.log}
			if bc, _, err := a.loadConfig(); err == nil {
				cfg.Firecracker = bc.Firecracker // else the defaults; the config error shows elsewhere
			}
			if sys, _, ok, _ := a.systemInstall(); ok {
				cfg = a.ownerStateDoctor(cfg, sys)
			}
			if path := a.env.Getenv("PATH"); path != "" {
				cfg.LookPath = doctor.PathLookup(path)
			}
			// An interrupted update is settled first, so the checks see
			// one version's binaries.
			journal, replayed := a.updateJournalCheck(cmd.Context())
			rep := doctor.Run(cmd.Context(), cfg)
			if replayed {
				rep.Checks = append(rep.Checks, journal)
				rep.OK = rep.Count(doctor.Fail) == 0
			}
			if asJSON {
				if err := printJSON(cmd.OutOrStdout(), rep); err != nil {
					return err
				}
			} else {
				printDoctor(cmd.OutOrStdout(), rep)
			}
			if n := rep.Count(doctor.Fail); n > 0 {
				if n == 1 {
					return fmt.Errorf("1 problem blocks running VMs")
				}
				return fmt.Errorf("%d problems block running VMs", n)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON: {checks: [{name, status, detail, fix}], ok}")
	return cmd
}

var doctorMarks = map[doctor.Status]string{doctor.OK: "✓", doctor.Warn: "!", doctor.Fail: "✗"}

// printDoctor renders one line per check and an indented fix under each
// problem, then a one-line summary.
func printDoctor(w io.Writer, rep doctor.Report) {
	width := 0
	for _, c := range rep.Checks {
		width = max(width, len(c.Name))
	}
	pad := strings.Repeat(" ", width+4)
	for _, c := range rep.Checks {
		fmt.Fprintf(w, "%s %-*s  %s\n", doctorMarks[c.Status], width, c.Name, c.Detail)
		if c.Fix != "" && c.Status != doctor.OK {
			fmt.Fprintf(w, "%sfix: %s\n", pad, c.Fix)
		}
	}
	fmt.Fprintf(w, "\n%d checks: %d ok, %d warnings, %d failed\n",
		len(rep.Checks), rep.Count(doctor.OK), rep.Count(doctor.Warn), rep.Count(doctor.Fail))
}
