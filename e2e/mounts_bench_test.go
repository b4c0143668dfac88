package e2e

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/testutil"
)

// BenchmarkMountTarAndGitStatus measures a shared directory (virtio-fs)
// against the VM's own ext4 root disk, inside one guest, alternating:
// `tar -c` of a ~200 MB, 10k-file tree (guest page cache dropped before
// each run; the host's stays warm, as it would in use), and `git status`
// in a clone of this repository on the mount against the same command on
// the host. The daemon runs as a real second uid, as in the mount tests.
// BANGER_BENCH_MB sets another tree size.
func BenchmarkMountTarAndGitStatus(b *testing.B) {
	if os.Getenv(testutil.EnvInNetNS) != "1" {
		b.Skip("run inside a network namespace: scripts/bench.sh does (unshare -n)")
	}
	e := mountSetup(b)
	e.timeout = 20 * time.Minute // 200 MB through TCG
	mb := 200
	if v, err := strconv.Atoi(os.Getenv("BANGER_BENCH_MB")); err == nil && v > 0 {
		mb = v
	}
	files := mb * 50 // ~20 KiB each: 10k files for 200 MB
	share := filepath.Join(e.base, "bench")
	tree := filepath.Join(share, "tree")
	mountBenchTree(b, tree, files, int64(mb)<<20)
	// git and its libraries, run in the guest through the host's loader
	// (the image has no git).
	tools := filepath.Join(share, "tools")
	repo := filepath.Join(share, "repo")
	out, err := exec.Command("sh", "-ec", `
mkdir -p "$1"
git=$(command -v git)
cp "$git" "$1/git"
for lib in $(ldd "$git" | awk '/=> \//{print $3} /^\t\/lib64/{print $1}'); do cp -L "$lib" "$1/"; done
git clone -q --no-hardlinks "$3" "$2"
`, "sh", tools, repo, "/work/main").CombinedOutput()
	if err != nil {
		b.Fatalf("prepare tools and repo: %v\n%s", err, out)
	}
	if out, err := exec.Command("chown", "-R", fmt.Sprintf("%d:%d", e.uid, e.gid), share).CombinedOutput(); err != nil {
		b.Fatalf("chown: %v\n%s", err, out)
	}
	if err := os.Chmod(share, 0o755); err != nil {
		b.Fatal(err)
	}

	e.ok("", "vm", "create", "--name", "bench", "--memory", "1G", "--disk-size", "4G", "--mount", share+":/mnt/bench", "--start")
	// The same tree on the root disk.
	if _, errOut, code := e.guest("bench", "cp -a /mnt/bench/tree /root/tree && sync"); code != 0 {
		b.Fatalf("copy tree to the root disk: exit %d: %s", code, errOut)
	}
	guestTime := func(script string) time.Duration {
		b.Helper()
		out, errOut, code := e.guest("bench", `sync; echo 3 > /proc/sys/vm/drop_caches; s=$(date +%s%N); `+script+` >/dev/null; e=$(date +%s%N); echo $((e-s))`)
		if code != 0 {
			b.Fatalf("guest %q: exit %d: %s", script, code, errOut)
		}
		ns, err := strconv.ParseInt(strings.TrimSpace(out), 10, 64)
		if err != nil {
			b.Fatalf("guest timing %q: %v", out, err)
		}
		return time.Duration(ns)
	}
	var fsT, extT []time.Duration
	for i := 0; i < b.N; i++ {
		fsT = append(fsT, guestTime("tar -cf - -C /mnt/bench tree | wc -c"))
		extT = append(extT, guestTime("tar -cf - -C /root tree | wc -c"))
	}

	// git status: host as the owner (warm), then the guest (its first run
	// refreshes the index with the guest's view of the files).
	git := filepath.Join(tools, "git")
	hostGit := func() time.Duration {
		cmd := exec.Command(git, "-C", repo, "status", "--porcelain")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: e.cred()}
		cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + e.in.home}
		start := time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("host git status: %v\n%s", err, out)
		}
		return time.Since(start)
	}
	guestGit := `/mnt/bench/tools/ld-linux-x86-64.so.2 --library-path /mnt/bench/tools /mnt/bench/tools/git -C /mnt/bench/repo status --porcelain`
	hostGit()
	var hostG, guestG []time.Duration
	for i := 0; i < 5; i++ {
		hostG = append(hostG, hostGit())
	}
	if out, errOut, code := e.guest("bench", guestGit); code != 0 {
		b.Fatalf("guest git status: exit %d: %s %s", code, out, errOut)
	}
	for i := 0; i < 5; i++ {
		out, errOut, code := e.guest("bench", `s=$(date +%s%N); `+guestGit+` >/dev/null; e=$(date +%s%N); echo $((e-s))`)
		ns, err := strconv.ParseInt(strings.TrimSpace(out), 10, 64)
		if code != 0 || err != nil {
			b.Fatalf("guest git status: exit %d: %q %s", code, out, errOut)
		}
		guestG = append(guestG, time.Duration(ns))
	}
	med := func(d []time.Duration) time.Duration {
		s := append([]time.Duration(nil), d...)
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		return s[len(s)/2]
	}
	fm, em, hg, gg := med(fsT), med(extT), med(hostG), med(guestG)
	b.ReportMetric(float64(fm.Milliseconds()), "tar-virtiofs-ms")
	b.ReportMetric(float64(em.Milliseconds()), "tar-ext4-ms")
	b.ReportMetric(float64(fm)/float64(em), "tar-virtiofs/ext4")
	b.ReportMetric(float64(gg.Milliseconds()), "git-guest-ms")
	b.ReportMetric(float64(hg.Milliseconds()), "git-host-ms")
	b.ReportMetric(float64(gg)/float64(hg), "git-guest/host")
	b.Logf("tar: virtio-fs %v, ext4 %v; git status: guest %v, host %v (files %d, %d MB)", fsT, extT, guestG, hostG, files, mb)
}

// mountBenchTree writes n files totalling about size bytes under dir, 100
// per directory.
func mountBenchTree(b testing.TB, dir string, n int, size int64) {
	b.Helper()
	r := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 2*size/int64(n))
	for i := range buf {
		buf[i] = byte(r.Uint32())
	}
	for i := 0; i < n; i++ {
		d := filepath.Join(dir, fmt.Sprintf("d%03d", i/100))
		if i%100 == 0 {
			if err := os.MkdirAll(d, 0o755); err != nil {
				b.Fatal(err)
			}
		}
		sz := r.IntN(len(buf))
		if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("f%05d", i)), buf[:sz], 0o644); err != nil {
			b.Fatal(err)
		}
	}
}
