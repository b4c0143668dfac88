package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/guestsync"
)

// syncDebounce gathers a burst of host changes (a save, a git checkout)
// into one round.
const syncDebounce = 250 * time.Millisecond

func newVMSyncCommand(a *app) *cobra.Command {
	var (
		excludes       []string
		del, watch, js bool
	)
	cmd := &cobra.Command{
		Use:   "sync HOST_DIR NAME:GUEST_DIR",
		Short: "Mirror a host directory into a VM, incrementally",
		Long: `Mirror HOST_DIR into GUEST_DIR (absolute; created if missing) in a running VM
through the guest agent, one way: the guest lists GUEST_DIR, and only what
differs by type, size, mode or link target is sent; files of the same size
whose modification time differs are compared by sha256 first. Symlinks are
synced as symlinks (never followed on either side), and nothing is written
outside GUEST_DIR nor through a link in it.

Names matching HOST_DIR/.gitignore or an --exclude pattern (same syntax,
repeatable) are neither sent nor, with --delete, removed from the guest.
--delete removes guest names HOST_DIR does not have. --watch keeps
following HOST_DIR (new directories included) and syncs again after each
burst of changes, one line per round, until Ctrl-C.`,
		Example: `  banger vm sync . dev:/root/src
  banger vm sync ./site dev:/srv/www --delete --exclude node_modules --exclude '*.log'
  banger vm sync -w . dev:/root/src --delete`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := syncParams(args[0], args[1])
			if err != nil {
				return &UsageError{Err: err}
			}
			p.Excludes, p.Delete = excludes, del
			if _, err := guestsync.ParseIgnore("--exclude", excludes); err != nil {
				return &UsageError{Err: err}
			}
			w := cmd.OutOrStdout()
			round := func(ctx context.Context) error {
				res, err := call(ctx, a, api.MethodVMSync, p)
				if err != nil {
					return err
				}
				printSyncRound(w, res, js)
				return nil
			}
			if !watch {
				return round(cmd.Context())
			}
			return watchAndSync(cmd.Context(), p, cmd.ErrOrStderr(), round)
		},
	}
	cmd.Flags().StringArrayVar(&excludes, "exclude", nil, "leave names matching this .gitignore-style pattern alone (repeatable)")
	cmd.Flags().BoolVar(&del, "delete", false, "remove guest names that HOST_DIR does not have")
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "keep syncing on every change until Ctrl-C")
	cmd.Flags().BoolVar(&js, "json", false, "print each round as a JSON object, one per line")
	return cmd
}

func syncParams(hostDir, remote string) (api.VMSync, error) {
	m := remoteRef.FindStringSubmatch(remote)
	if m == nil {
		return api.VMSync{}, fmt.Errorf("%q is not NAME:/guest/dir", remote)
	}
	if !path.IsAbs(m[2]) || path.Clean(m[2]) == "/" {
		return api.VMSync{}, fmt.Errorf("guest directory %q must be absolute and not / (NAME:/guest/dir)", m[2])
	}
	abs, err := filepath.Abs(hostDir)
	if err != nil {
		return api.VMSync{}, fmt.Errorf("resolve %s: %w", hostDir, err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return api.VMSync{}, fmt.Errorf("host directory: %w", err)
	}
	if !fi.IsDir() {
		return api.VMSync{}, fmt.Errorf("%s is not a directory (vm cp copies single files)", hostDir)
	}
	return api.VMSync{Name: m[1], Local: abs, Guest: path.Clean(m[2])}, nil
}

func printSyncRound(w io.Writer, r api.SyncResult, asJSON bool) {
	if asJSON {
		_ = printJSON(w, r)
		return
	}
	fmt.Fprintf(w, "%s synced: %d sent (%s), %d removed, %d hashed, %d scanned in %.2fs\n",
		time.Now().Format(time.TimeOnly), r.Uploaded, humanBytes(r.Bytes), r.Removed, r.Hashed, r.Scanned, r.DurationMS/1000)
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// watchAndSync runs a first round, then one after each burst of changes
// under p.Local until ctx ends. The watches are in place before the first
// round, so a change made once it is reported is never missed. A failed
// later round is reported and the next change tries again.
func watchAndSync(ctx context.Context, p api.VMSync, errw io.Writer, round func(context.Context) error) error {
	root, err := os.OpenRoot(p.Local)
	if err != nil {
		return fmt.Errorf("open %s: %w", p.Local, err)
	}
	m, err := guestsync.LoadMatcher(root, p.Excludes)
	_ = root.Close()
	if err != nil {
		return err
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch %s: %w", p.Local, err)
	}
	defer w.Close()
	addTree := func(dir string) {
		_ = filepath.WalkDir(dir, func(name string, d fs.DirEntry, err error) error {
			if err != nil || !d.IsDir() { // WalkDir never follows a link
				return nil
			}
			if rel, _ := filepath.Rel(p.Local, name); rel != "." && m.Match(filepath.ToSlash(rel), true) {
				return fs.SkipDir
			}
			if err := w.Add(name); err != nil {
				fmt.Fprintf(errw, "watch %s: %v (changes there are picked up by the next round)\n", name, err)
			}
			return nil
		})
	}
	addTree(p.Local)
	if err := round(ctx); err != nil {
		return err
	}

	var timer <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil // Ctrl-C
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			rel, err := filepath.Rel(p.Local, ev.Name)
			if err != nil {
				continue
			}
			fi, statErr := os.Lstat(ev.Name)
			isDir := statErr == nil && fi.IsDir()
			if rel != "." && m.Match(filepath.ToSlash(rel), isDir) {
				continue
			}
			if ev.Has(fsnotify.Create) && isDir {
				addTree(ev.Name)
			}
			if timer == nil {
				timer = time.After(syncDebounce)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				timer = time.After(syncDebounce) // events were lost: a full round catches up
				continue
			}
			fmt.Fprintf(errw, "watch %s: %v\n", p.Local, err)
		case <-timer:
			timer = nil
			if err := round(ctx); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				fmt.Fprintf(errw, "%s sync failed: %v\n", time.Now().Format(time.TimeOnly), err)
			}
		}
	}
}
