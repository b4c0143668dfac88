package imagecat

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"github.com/bangerdev/banger/internal/ext4"
	"github.com/bangerdev/banger/internal/progress"
	"github.com/bangerdev/banger/internal/testutil"
)

// TestBuildDebootstrapDefaultImage builds the catalog's default image for
// real from the host's Debian mirror (about 30-60 s) and inspects the ext4.
func TestBuildDebootstrapDefaultImage(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireBinary(t, "debootstrap")
	requireE2fsprogs(t)
	ctx := testCtx(t, 10*time.Minute)
	c, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	e, err := c.DefaultEntry()
	if err != nil {
		t.Fatal(err)
	}
	work, outDir := t.TempDir(), t.TempDir()
	out := filepath.Join(outDir, "rootfs.ext4")
	var mu sync.Mutex
	lines := map[string]int{}
	start := time.Now()
	var mkfsAt time.Time
	res, err := BuildDebootstrap(ctx, e, BuildOptions{
		WorkDir: work, Out: out,
		Progress: func(ev progress.Event) {
			mu.Lock()
			defer mu.Unlock()
			lines[ev.Stage]++
			if ev.Stage == StageMkfs {
				mkfsAt = time.Now()
			}
			if ev.Stage == StageDebootstrap && ev.Message == "" {
				t.Errorf("debootstrap event without a line: %+v", ev)
			}
		},
	})
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("debootstrap + ext4 of %s took %s (until mkfs %s, mkfs+hash %s; %d MB image, %s)", e.Name,
		took.Round(100*time.Millisecond), mkfsAt.Sub(start).Round(100*time.Millisecond),
		time.Since(mkfsAt).Round(100*time.Millisecond), res.SizeBytes>>20, res.Source)
	checkResult(t, res, e.Name, out, "debootstrap:bookworm@http")
	if lines[StageDebootstrap] < 10 || lines[StageMkfs] != 1 {
		t.Fatalf("progress events per stage: %v", lines)
	}
	assertDirHolds(t, work)
	assertDirHolds(t, outDir, "rootfs.ext4")

	sshd, err := ext4.Stat(ctx, out, "/usr/sbin/sshd")
	if err != nil || sshd.Type != "regular" || sshd.Mode&0o111 == 0 || sshd.UID != 0 || sshd.Size < 100_000 {
		t.Fatalf("/usr/sbin/sshd: %+v %v", sshd, err)
	}
	if ip, err := ext4.Stat(ctx, out, "/usr/bin/ip"); err != nil || ip.Type != "regular" {
		t.Fatalf("/usr/bin/ip (iproute2): %+v %v", ip, err)
	}
	cfg, err := ext4.ReadFile(ctx, out, "/etc/ssh/sshd_config")
	if err != nil {
		t.Fatal(err)
	}
	active := activeDirectives(string(cfg))
	if len(active) < 3 || active[0] != "PermitRootLogin prohibit-password" || active[1] != "PasswordAuthentication no" {
		t.Fatalf("sshd_config does not start with key-only root login:\n%s", cfg)
	}
	if !strings.Contains(string(cfg), "Include /etc/ssh/sshd_config.d/*.conf") {
		t.Fatalf("sshd_config lost Debian's own settings:\n%s", cfg)
	}
	ents, err := ext4.List(ctx, out, "/etc/ssh")
	if err != nil {
		t.Fatal(err)
	}
	for _, en := range ents {
		if strings.HasPrefix(en.Name, "ssh_host_") {
			t.Fatalf("host key %s left in the image", en.Name)
		}
	}
	if id, err := ext4.Stat(ctx, out, "/etc/machine-id"); err != nil || id.Type != "regular" || id.Size != 0 {
		t.Fatalf("machine-id: %+v %v", id, err)
	}
	if fstab, err := ext4.ReadFile(ctx, out, "/etc/fstab"); err != nil || string(fstab) != fstabContent {
		t.Fatalf("fstab: %q %v", fstab, err)
	}
	for _, dir := range []string{"/var/cache/apt/archives", "/var/lib/apt/lists"} {
		ents, err := ext4.List(ctx, out, dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, en := range ents {
			if en.Name != "partial" && en.Name != "lock" {
				t.Fatalf("%s/%s left in the image", dir, en.Name)
			}
		}
	}
}

// TestBuildDebootstrapFailureLeavesNothing: a mirror nobody serves and a
// suite no archive has both fail, and neither leaves an output file or a
// work dir.
func TestBuildDebootstrapFailureLeavesNothing(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireBinary(t, "debootstrap")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadMirror := fmt.Sprintf("http://%s/debian", l.Addr())
	l.Close()
	c, _ := Load()
	def, _ := c.DefaultEntry()
	bogus := def
	bogus.Suite = "no-such-suite"
	for name, tc := range map[string]struct {
		e      Entry
		mirror string
	}{
		"dead mirror": {def, deadMirror},
		"bogus suite": {bogus, ""},
	} {
		t.Run(name, func(t *testing.T) {
			ctx := testCtx(t, 3*time.Minute)
			work, outDir := t.TempDir(), t.TempDir()
			_, err := BuildDebootstrap(ctx, tc.e, BuildOptions{Mirror: tc.mirror, WorkDir: work, Out: filepath.Join(outDir, "rootfs.ext4")})
			if err == nil {
				t.Fatal("build succeeded")
			}
			if !strings.Contains(err.Error(), "debootstrap") {
				t.Fatalf("error does not say what failed: %v", err)
			}
			t.Logf("expected failure: %v", err)
			assertDirHolds(t, work)
			assertDirHolds(t, outDir)
		})
	}
}

func TestBuildDebootstrapCancelLeavesNothing(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireBinary(t, "debootstrap")
	c, _ := Load()
	e, _ := c.DefaultEntry()
	work, outDir := t.TempDir(), t.TempDir()
	ctx, cancel := context.WithCancel(testCtx(t, 3*time.Minute))
	var once sync.Once
	_, err := BuildDebootstrap(ctx, e, BuildOptions{WorkDir: work, Out: filepath.Join(outDir, "rootfs.ext4"),
		Progress: func(ev progress.Event) {
			// Cancel mid-install, when debootstrap has /proc mounted in
			// the target and dpkg runs in a chroot.
			if strings.Contains(ev.Message, "Installing core packages") {
				once.Do(cancel)
			}
		}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled build: %v, want context.Canceled", err)
	}
	assertDirHolds(t, work)
	assertDirHolds(t, outDir)
}

func TestBuildDebootstrapRejectsBadInput(t *testing.T) {
	ctx := testCtx(t, time.Minute)
	c, _ := Load()
	oci, _ := c.Lookup("alpine")
	if _, err := BuildDebootstrap(ctx, oci, BuildOptions{Out: filepath.Join(t.TempDir(), "x")}); err == nil {
		t.Fatal("built an OCI entry with debootstrap")
	}
	def, _ := c.DefaultEntry()
	if _, err := BuildDebootstrap(ctx, def, BuildOptions{}); err == nil {
		t.Fatal("built without an output path")
	}
	if _, err := BuildDebootstrap(ctx, def, BuildOptions{Out: filepath.Join(t.TempDir(), "x"), Mirror: "--foreign"}); err == nil {
		t.Fatal("an option-like mirror was accepted")
	}
	want := []string{"--variant=minbase", "--include=openssh-server,iproute2,ca-certificates", "--keyring=/k.gpg", "--force-check-gpg", "bookworm", "/t", "http://m/debian"}
	if got := debootstrapArgs(def, Mirror{URI: "http://m/debian", Keyring: "/k.gpg"}, "/t"); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("args = %q, want %q", got, want)
	}
}

// TestBuildDebootstrapRefusesWithoutKeyring: with no keyring to verify the
// archive (no Signed-By file, no debian-archive-keyring) a build refuses
// before anything is created, and says how to fix it.
func TestBuildDebootstrapRefusesWithoutKeyring(t *testing.T) {
	ctx := testCtx(t, time.Minute)
	c, _ := Load()
	def, _ := c.DefaultEntry()
	for name, mirror := range map[string]string{"host or default mirror": "", "configured mirror": "http://mirror.example/debian"} {
		t.Run(name, func(t *testing.T) {
			hostRoot, work, outDir := t.TempDir(), t.TempDir(), t.TempDir()
			// The host lists the archive, but with an inline key block
			// debootstrap cannot use, and no keyring file exists.
			writeFile(t, filepath.Join(hostRoot, "etc/apt/sources.list.d/debian.sources"),
				"Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\nComponents: main\nSigned-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n x\n -----END PGP PUBLIC KEY BLOCK-----\n")
			_, err := BuildDebootstrap(ctx, def, BuildOptions{HostRoot: hostRoot, Mirror: mirror, WorkDir: work, Out: filepath.Join(outDir, "rootfs.ext4")})
			if !errors.Is(err, ErrNoKeyring) {
				t.Fatalf("build without a keyring: %v, want ErrNoKeyring", err)
			}
			for _, want := range []string{"apt-get install debian-archive-keyring", "http://mirror.example/debian", DefaultKeyring} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error does not say %q: %v", want, err)
				}
			}
			assertDirHolds(t, work)
			assertDirHolds(t, outDir)
		})
	}
}

// TestBuildDebootstrapRejectsWrongKeyring proves the keyring passed is the
// one checked: against the real archive, a host source whose Signed-By
// holds only a key that never signed it makes debootstrap stop at the
// Release file, before any package is fetched, leaving nothing behind.
func TestBuildDebootstrapRejectsWrongKeyring(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireBinary(t, "debootstrap")
	testutil.RequireBinary(t, "gpgv")
	ctx := testCtx(t, 3*time.Minute)
	c, _ := Load()
	def, _ := c.DefaultEntry()
	host, err := ResolveMirror("/", "", def)
	if err != nil {
		t.Fatal(err)
	}
	key, err := openpgp.NewEntity("not-debian", "test", "nobody@example.org", &packet.Config{Algorithm: packet.PubKeyAlgoEdDSA})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := key.Serialize(&buf); err != nil {
		t.Fatal(err)
	}
	hostRoot, work, outDir := t.TempDir(), t.TempDir(), t.TempDir()
	writeFile(t, filepath.Join(hostRoot, "usr/share/keyrings/wrong.gpg"), buf.String())
	writeFile(t, filepath.Join(hostRoot, "etc/apt/sources.list.d/debian.sources"),
		fmt.Sprintf("Types: deb\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/wrong.gpg\n", host.URI, def.Suite))
	var lines []string
	var mu sync.Mutex
	_, err = BuildDebootstrap(ctx, def, BuildOptions{HostRoot: hostRoot, WorkDir: work, Out: filepath.Join(outDir, "rootfs.ext4"),
		Progress: func(ev progress.Event) {
			mu.Lock()
			lines = append(lines, ev.Message)
			mu.Unlock()
		}})
	if err == nil {
		t.Fatal("debootstrap accepted an archive its keyring does not sign")
	}
	mu.Lock()
	defer mu.Unlock()
	for _, l := range lines {
		if ll := strings.ToLower(l); strings.Contains(ll, "retrieving packages") || strings.Contains(ll, "installing") || strings.Contains(ll, "extracting") {
			t.Fatalf("debootstrap went on past the unverified Release file: %q", l)
		}
	}
	if !strings.Contains(err.Error(), "debootstrap") {
		t.Fatalf("error does not say what failed: %v", err)
	}
	t.Logf("expected failure: %v", err)
	assertDirHolds(t, work)
	assertDirHolds(t, outDir)
}

// debootstrap's raw output becomes one counting progress item naming the
// current package; the full output is kept in a log file whose path the
// error names when debootstrap fails, and removed when it succeeds.
func TestDebootstrapOutputToProgressAndLog(t *testing.T) {
	testutil.RequireRoot(t) // runDebootstrap unshares a mount namespace
	bin := t.TempDir()
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	fake := func(exit int) {
		writeFile(t, filepath.Join(bin, "debootstrap"), fmt.Sprintf(`#!/bin/sh
echo "I: Retrieving InRelease "
echo "I: Retrieving libc6 2.36-9"
echo "I: Validating libc6 2.36-9"
echo "I: Unpacking libc6..."
echo "noise that only the log keeps" >&2
echo "I: Configuring libc6..."
exit %d
`, exit))
		if err := os.Chmod(filepath.Join(bin, "debootstrap"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	logsBefore, _ := filepath.Glob(filepath.Join(os.TempDir(), "banger-debootstrap-fake-*.log"))
	run := func() ([]progress.Event, error) {
		var evs []progress.Event
		var mu sync.Mutex
		err := runDebootstrap(testCtx(t, time.Minute), Entry{Name: "fake", Suite: "bookworm"}, Mirror{URI: "http://127.0.0.1:1/debian", Keyring: "/nonexistent"},
			filepath.Join(t.TempDir(), "rootfs"), slog.New(slog.DiscardHandler), func(ev progress.Event) {
				mu.Lock()
				evs = append(evs, ev)
				mu.Unlock()
			})
		return evs, err
	}

	fake(3)
	evs, err := run()
	if err == nil {
		t.Fatal("a failing debootstrap succeeded")
	}
	_, path, ok := strings.Cut(err.Error(), "full output: ")
	if !ok {
		t.Fatalf("error does not name the full log: %v", err)
	}
	defer os.Remove(path)
	b, rerr := os.ReadFile(path)
	if rerr != nil || !strings.Contains(string(b), "noise that only the log keeps") || !strings.Contains(string(b), "I: Configuring libc6...") {
		t.Fatalf("log %s: %q, %v", path, b, rerr)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("log mode %v, want 0600", fi.Mode().Perm())
	}
	var msgs []string
	var last int64
	for _, ev := range evs {
		if ev.Stage != StageDebootstrap || ev.Done < last || ev.Done < 1 {
			t.Fatalf("event %+v after done=%d", ev, last)
		}
		last = ev.Done
		msgs = append(msgs, ev.Message)
	}
	if last != 4 || !slices.Contains(msgs, "unpacking libc6") || !slices.Contains(msgs, "configuring libc6") {
		t.Fatalf("progress: done=%d messages %q", last, msgs)
	}

	fake(0)
	if _, err := run(); err != nil {
		t.Fatal(err)
	}
	logsAfter, _ := filepath.Glob(filepath.Join(os.TempDir(), "banger-debootstrap-fake-*.log"))
	if len(logsAfter) != len(logsBefore)+1 { // only the failed run's, removed by the defer above
		t.Fatalf("logs before %v, after %v: a successful run kept its log", logsBefore, logsAfter)
	}
}
