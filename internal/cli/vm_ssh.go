package cli

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/sshkeys"
)

func newVMSSHCommand(a *app) *cobra.Command {
	var forget bool
	cmd := &cobra.Command{
		Use:   "ssh NAME [-- COMMAND [ARG...]]",
		Short: "Open an SSH session to a VM with banger's key and pinned host key",
		Long: `Run the system ssh client against a running VM as root, with banger's own
key. The guest's host key is trusted on first use and pinned; if it ever
changes, banger refuses to connect and names the way out: --forget-host-key
forgets the pinned key (then connects, pinning the new one). Host-key
checking is never disabled.

banger also keeps an ssh_config include in its config directory; add
"Include ~/.config/banger/ssh_config" to ~/.ssh/config and "ssh NAME.banger"
uses the same key and pinned known_hosts.`,
		Example: `  banger vm ssh dev
  banger vm ssh dev -- uname -a
  banger vm ssh --forget-host-key dev`,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: a.completeVMNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			if at := cmd.ArgsLenAtDash(); at > 1 || at == -1 && len(args) > 1 {
				return &UsageError{Err: fmt.Errorf("usage: banger vm ssh NAME [-- COMMAND [ARG...]]")}
			}
			return a.sshInto(cmd.Context(), args[0], args[1:], forget)
		},
	}
	cmd.Flags().BoolVar(&forget, "forget-host-key", false, "forget the VM's pinned host key first (after it changed on purpose)")
	return cmd
}

// sshInto has the daemon check (or pin) the host key, then runs the system
// ssh with strict checking against banger's known_hosts, so the key ssh
// accepts is exactly the pinned one.
func (a *app) sshInto(ctx context.Context, name string, argv []string, forget bool) error {
	if forget {
		if _, err := call(ctx, a, api.MethodVMForgetHostKey, api.VMRef{Name: name}); err != nil {
			return err
		}
		fmt.Fprintf(a.env.Stderr, "banger: forgot the pinned host key of vm %q; this connection pins the key it presents\n", name)
	}
	info, err := call(ctx, a, api.MethodVMSSHInfo, api.VMRef{Name: name})
	if err != nil {
		return err
	}
	if info.Pinned {
		fmt.Fprintf(a.env.Stderr, "banger: trusted the host key of vm %q on first use\n", info.Name)
	}
	bin, err := exec.LookPath("ssh")
	if err != nil {
		return fmt.Errorf("find the ssh client (install openssh-client): %w", err)
	}
	// Not CommandContext: Ctrl-C belongs to ssh (and the remote command),
	// and ssh's exit ends this command.
	c := exec.Command(bin, sshArgs(info, argv)...)
	c.Stdin, c.Stdout, c.Stderr = a.env.Stdin, a.env.Stdout, a.env.Stderr
	err = c.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return &ExitError{Code: ee.ExitCode()}
	}
	if err != nil {
		return fmt.Errorf("run ssh: %w", err)
	}
	return nil
}

// sshArgs spells out every trust option on the command line (which wins
// over any user ssh_config), so a user's "StrictHostKeyChecking no" cannot
// weaken it.
func sshArgs(info api.SSHInfo, argv []string) []string {
	q := func(s string) string { return `"` + strings.ReplaceAll(s, `"`, `\"`) + `"` }
	args := []string{
		"-i", info.KeyPath,
		"-o", "IdentitiesOnly=yes",
		"-o", "UserKnownHostsFile=" + q(info.KnownHosts),
		"-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "StrictHostKeyChecking=yes",
		"-o", "HostKeyAlias=" + info.HostAlias,
		"-o", "HostKeyAlgorithms=" + sshkeys.HostKeyAlgorithm,
		"-o", "LogLevel=ERROR",
		"-l", info.User,
		info.IP,
	}
	if len(argv) > 0 {
		args = append(append(args, "--"), argv...)
	}
	return args
}
