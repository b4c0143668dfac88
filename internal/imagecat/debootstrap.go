package imagecat

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/bangerdev/banger/internal/ext4"
	"github.com/bangerdev/banger/internal/progress"
)

// BuildOptions tunes BuildDebootstrap.
type BuildOptions struct {
	// Mirror overrides the archive (the configured Debian mirror); empty
	// means the entry's, else the host's apt mirror for the suite.
	Mirror string
	// HostRoot is where the host's apt sources are read ("/" when empty).
	HostRoot string
	// WorkDir holds the temporary rootfs tree (os.TempDir() when empty); it
	// must be on a filesystem that allows device nodes and suid (not nodev).
	WorkDir string
	// Out is the ext4 file to write (e.g. Store.RootfsPath(name)).
	Out      string
	Owner    *Owner // hand Out to this uid/gid (root helper building for a user)
	Logger   *slog.Logger
	Progress progress.Func
	// Check inspects the debootstrapped tree before it is prepared (a plan
	// image checks the versions installed); an error fails the build.
	Check func(rootfs string) error
	// SourceSuffix is appended to the Result's Source (a plan's packages).
	SourceSuffix string
}

// StageDebootstrap and friends name the progress stages of a build.
const (
	StageDebootstrap = "debootstrap"
	StagePrepare     = "prepare"
	StageMkfs        = "mkfs"
	StageDigest      = "digest"
)

// BuildDebootstrap builds a debootstrap catalog entry into opts.Out:
// debootstrap into a work dir, prepare the tree for banger (PrepareRootfs),
// then ext4. It needs root. The work dir is removed on every path, and Out
// appears (atomically) only on success.
func BuildDebootstrap(ctx context.Context, e Entry, opts BuildOptions) (Result, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if e.Kind != KindDebootstrap {
		return Result{}, fmt.Errorf("build image %q: kind %q is not %s", e.Name, e.Kind, KindDebootstrap)
	}
	if err := e.Validate(); err != nil {
		return Result{}, fmt.Errorf("build image %q: %w", e.Name, err)
	}
	if opts.Out == "" {
		return Result{}, fmt.Errorf("build image %q: no output path", e.Name)
	}
	// The archive and its keyring first: without a keyring nothing is
	// created at all.
	mirror, err := ResolveMirror(opts.HostRoot, opts.Mirror, e)
	if err != nil {
		return Result{}, fmt.Errorf("build image %q: %w", e.Name, err)
	}
	if os.Geteuid() != 0 {
		return Result{}, fmt.Errorf("build image %q: %w", e.Name, ErrNeedRoot)
	}
	if _, err := exec.LookPath("debootstrap"); err != nil {
		return Result{}, fmt.Errorf("build image %q: debootstrap is not installed (apt-get install debootstrap): %w", e.Name, err)
	}
	// debootstrap checks Release signatures with gpgv; without it,
	// --force-check-gpg makes it fail late and obscurely.
	if _, err := exec.LookPath("gpgv"); err != nil {
		return Result{}, fmt.Errorf("build image %q: gpgv is not installed, so the archive's signature cannot be checked (apt-get install gpgv): %w", e.Name, err)
	}
	work, err := makeWorkDir(opts.WorkDir, "banger-debootstrap-")
	if err != nil {
		return Result{}, fmt.Errorf("build image %q: create work dir: %w", e.Name, err)
	}
	defer func() {
		if err := removeWorkDir(work); err != nil {
			log.ErrorContext(ctx, "remove image build work dir", "dir", work, "err", err)
		}
	}()
	rootfs := filepath.Join(work, "rootfs")

	start := time.Now()
	log.InfoContext(ctx, "debootstrap", "image", e.Name, "suite", e.Suite, "mirror", mirror.URI, "mirror_from", mirror.From, "keyring", mirror.Keyring)
	if err := runDebootstrap(ctx, e, mirror, rootfs, log, opts.Progress); err != nil {
		return Result{}, fmt.Errorf("build image %q: %w", e.Name, err)
	}
	log.InfoContext(ctx, "debootstrap done", "image", e.Name, "took", time.Since(start).Round(time.Millisecond))

	if opts.Check != nil {
		if err := opts.Check(rootfs); err != nil {
			return Result{}, fmt.Errorf("build image %q: %w", e.Name, err)
		}
	}
	opts.Progress.Stage(StagePrepare, "prepare rootfs for banger")
	if err := PrepareRootfs(rootfs); err != nil {
		return Result{}, fmt.Errorf("build image %q: %w", e.Name, err)
	}

	opts.Progress.Stage(StageMkfs, "make ext4 image")
	tmp, err := tempBeside(opts.Out)
	if err != nil {
		return Result{}, fmt.Errorf("build image %q: %w", e.Name, err)
	}
	defer os.Remove(tmp) // no-op once published
	if _, err := ext4.Make(ctx, rootfs, tmp, ext4.Options{Label: "rootfs", Logger: log}); err != nil {
		return Result{}, fmt.Errorf("build image %q: %w", e.Name, err)
	}
	opts.Progress.Stage(StageDigest, "hash image")
	res, err := finish(e.Name, "debootstrap:"+e.Suite+"@"+mirror.URI+opts.SourceSuffix, tmp)
	if err != nil {
		return Result{}, fmt.Errorf("build image %q: %w", e.Name, err)
	}
	if err := publish(tmp, opts.Out, opts.Owner); err != nil {
		return Result{}, fmt.Errorf("build image %q: publish %s: %w", e.Name, opts.Out, err)
	}
	res.Path, _ = filepath.Abs(opts.Out)
	log.InfoContext(ctx, "image built", "image", e.Name, "bytes", res.SizeBytes, "digest", res.Digest, "took", time.Since(start).Round(time.Millisecond))
	return res, nil
}

// debootstrapArgs is debootstrap's argv (without the program).
func debootstrapArgs(e Entry, m Mirror, target string) []string {
	variant := e.Variant
	if variant == "" {
		variant = "minbase"
	}
	args := []string{"--variant=" + variant}
	if len(e.Include) > 0 {
		args = append(args, "--include="+strings.Join(e.Include, ","))
	}
	// Always verify: without a usable keyring debootstrap would only warn
	// and install unsigned packages, whose maintainer scripts run as root.
	// --force-check-gpg makes any failure to verify the Release file fatal.
	args = append(args, "--keyring="+m.Keyring, "--force-check-gpg")
	// debootstrap knows no "--"; suite, target and mirror are validated not
	// to start with '-'.
	return append(args, e.Suite, target, m.URI)
}

// runDebootstrap runs debootstrap in a private mount namespace, so the
// /proc and /sys it mounts in the target vanish with it even when it dies
// half way, and streams its output lines as progress events.
func runDebootstrap(ctx context.Context, e Entry, m Mirror, target string, log *slog.Logger, report progress.Func) error {
	cmd := exec.CommandContext(ctx, "debootstrap", debootstrapArgs(e, m, target)...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C")
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:      true,
		Unshareflags: syscall.CLONE_NEWNS, // Go makes / rprivate in the child
	}
	// Kill the whole group (dpkg, wget, chroot children), not just the script.
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	// The full output goes to a fresh file (O_EXCL in the temp dir, 0600)
	// kept when the build fails, so the progress bar can stay one line.
	full, err := os.CreateTemp("", "banger-debootstrap-"+e.Name+"-*.log")
	if err != nil {
		return fmt.Errorf("create debootstrap log: %w", err)
	}
	keepLog := false
	defer func() {
		full.Close()
		if !keepLog {
			os.Remove(full.Name())
		}
	}()
	steps := progress.Lines{Stage: StageDebootstrap, Step: progress.DebootstrapStep}

	tail := newTail(15)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if line == "" {
				continue
			}
			tail.add(line)
			fmt.Fprintln(full, line)
			log.DebugContext(ctx, "debootstrap", "line", line)
			if ev, ok := steps.Line(line); ok {
				report.Report(ev)
			}
		}
		io.Copy(io.Discard, pr) // keep draining after an over-long line
	}()
	err = cmd.Start()
	if err == nil {
		err = cmd.Wait()
	}
	pw.Close()
	wg.Wait()
	if err == nil {
		return nil
	}
	keepLog = true
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("debootstrap %s: %w", e.Suite, ctxErr)
	}
	// debootstrap prints little; its log in the target says why.
	detail := tail.String()
	if b, rerr := os.ReadFile(filepath.Join(target, "debootstrap", "debootstrap.log")); rerr == nil {
		lt := newTail(10)
		for _, l := range strings.Split(string(b), "\n") {
			if l = strings.TrimSpace(l); l != "" {
				lt.add(l)
			}
		}
		detail += "\n--- debootstrap.log ---\n" + lt.String()
	}
	return fmt.Errorf("debootstrap %s from %s: %w\n%s\nfull output: %s", e.Suite, m.URI, err, detail, full.Name())
}

// tail keeps the last n lines of output for error messages.
type tail struct {
	mu    sync.Mutex
	n     int
	lines []string
}

func newTail(n int) *tail { return &tail{n: n} }

func (t *tail) add(l string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lines = append(t.lines, l)
	if len(t.lines) > t.n {
		t.lines = t.lines[len(t.lines)-t.n:]
	}
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.lines, "\n")
}

// removeWorkDir detaches anything still mounted below dir (belt and braces:
// debootstrap runs in its own mount namespace) and removes it. RemoveAll
// must never descend into a live /proc or /sys bind.
func removeWorkDir(dir string) error {
	mounts, err := mountsBelow(dir)
	if err != nil {
		return err
	}
	for i := len(mounts) - 1; i >= 0; i-- {
		if err := syscall.Unmount(mounts[i], syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) {
			return fmt.Errorf("unmount %s: %w", mounts[i], err)
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove work dir: %w", err)
	}
	return nil
}

// mountsBelow lists mount points at or under dir, in mount order.
func mountsBelow(dir string) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mount table: %w", err)
	}
	defer f.Close()
	dir = filepath.Clean(dir)
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	return out, sc.Err()
}

// unescapeMount undoes mountinfo's octal escapes (\040 for space, ...).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			ok := true
			for _, c := range []byte(s[i+1 : i+4]) {
				if c < '0' || c > '7' {
					ok = false
					break
				}
				v = v*8 + (c - '0')
			}
			if ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// makeWorkDir creates a fresh absolute temporary directory under base
// (os.TempDir() when empty).
func makeWorkDir(base, pattern string) (string, error) {
	if base == "" {
		base = os.TempDir()
	}
	abs, err := filepath.Abs(base)
	if err != nil {
		return "", err
	}
	return os.MkdirTemp(abs, pattern)
}
