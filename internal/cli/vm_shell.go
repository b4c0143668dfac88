package cli

import (
	"context"

	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// loginShell starts root's login shell from /etc/passwd (sh when it names
// nothing runnable), so a shell feels like logging in: profile read, home
// as working directory.
const loginShell = `s=/bin/sh; h=/root
while IFS=: read -r u _ _ _ _ hd sh; do
  if [ "$u" = root ]; then h=$hd; [ -x "$sh" ] && s=$sh; break; fi
done < /etc/passwd 2>/dev/null
cd "$h" 2>/dev/null || cd /
export HOME="$h" SHELL="$s"
exec "$s" -l`

func newVMShellCommand(a *app) *cobra.Command {
	var viaSSH bool
	cmd := &cobra.Command{
		Use:   "shell NAME",
		Short: "Open a login shell in a VM (through the guest agent, or --ssh)",
		Long: `Open root's login shell in a running VM with a terminal, like limactl shell.
It goes through the guest agent, so it works without sshd in the image; --ssh
goes through ssh with banger's key and pinned host key instead. The shell's
exit code is banger's, and your terminal is restored when it ends.`,
		Example: `  banger vm shell dev
  banger vm shell --ssh dev`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: a.completeVMNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			if viaSSH {
				return a.sshInto(cmd.Context(), args[0], nil, false)
			}
			return a.shellIn(cmd.Context(), args[0])
		},
	}
	cmd.Flags().BoolVar(&viaSSH, "ssh", false, "go through ssh instead of the guest agent")
	return cmd
}

// shellIn runs a login shell through the agent, with a terminal when stdin
// is one.
func (a *app) shellIn(ctx context.Context, name string) error {
	return a.execIn(ctx, name, a.interactiveOptions([]string{"/bin/sh", "-c", loginShell}))
}

// interactiveOptions streams stdin and, when stdin is a terminal, asks for
// a guest terminal with this one's TERM.
func (a *app) interactiveOptions(argv []string) execOptions {
	o := execOptions{argv: argv, stdin: true, tty: a.stdinIsTerminal()}
	if t := a.env.Getenv("TERM"); o.tty && t != "" {
		o.env = append(o.env, "TERM="+t)
	}
	return o
}

func (a *app) stdinIsTerminal() bool {
	f, ok := a.env.Stdin.(interface{ Fd() uintptr })
	return ok && term.IsTerminal(int(f.Fd()))
}
