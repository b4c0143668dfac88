package cli

import (
	"fmt"
	"path"
	"path/filepath"
	"regexp"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/internal/api"
)

func newVMCpCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cp SRC DST",
		Short: "Copy files and directories between the host and a VM",
		Long: `Copy a file, directory or symlink between the host and a running VM through
the guest agent; one side is NAME:/absolute/path. SRC is copied under its own
name into the directory DST, which is created if missing (like cp -r SRC
DST/). Modes and modification times are kept, symlinks are copied as links
and never followed out of the source, and nothing is written outside DST.

A guest is not trusted: copying out of it creates only SRC's name in DST
and what is beneath it, never writes through a symlink, drops set-uid,
set-gid and sticky bits, skips or refuses devices, fifos and sockets, leaves
the mode of directories that already exist alone, and stops at
copy.max_bytes / copy.max_entries (config.toml). An archive that breaks a
rule is refused as a whole and what it had written is removed.`,
		Example: `  banger vm cp ./src dev:/root/work        # makes /root/work/src
  banger vm cp dev:/var/log/syslog ./logs   # makes ./logs/syslog`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := copyParams(args[0], args[1])
			if err != nil {
				return &UsageError{Err: err}
			}
			_, err = callWithProgress(cmd.Context(), a, api.MethodVMCopy, p)
			return err
		},
	}
	return cmd
}

// remoteRef is NAME:PATH, NAME being a VM name (no slash before the colon,
// so ./a:b and /x:y stay local paths).
var remoteRef = regexp.MustCompile(`^([A-Za-z0-9][A-Za-z0-9._-]*):(.*)$`)

func copyParams(src, dst string) (api.VMCopy, error) {
	sm, dm := remoteRef.FindStringSubmatch(src), remoteRef.FindStringSubmatch(dst)
	var p api.VMCopy
	var local string
	switch {
	case sm != nil && dm != nil:
		return p, fmt.Errorf("both %q and %q name a VM: copy between VMs through the host", src, dst)
	case sm == nil && dm == nil:
		return p, fmt.Errorf("neither %q nor %q names a VM (write NAME:/path)", src, dst)
	case dm != nil:
		p = api.VMCopy{Name: dm[1], Direction: api.CopyIn, Guest: dm[2]}
		local = src
	default:
		p = api.VMCopy{Name: sm[1], Direction: api.CopyOut, Guest: sm[2]}
		local = dst
	}
	if !path.IsAbs(p.Guest) {
		return p, fmt.Errorf("guest path %q must be absolute (NAME:/path)", p.Guest)
	}
	abs, err := filepath.Abs(local)
	if err != nil {
		return p, fmt.Errorf("resolve %s: %w", local, err)
	}
	p.Local = abs
	return p, nil
}
