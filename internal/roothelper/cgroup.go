package roothelper

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/rpc"
)

// VMMs are started by the owner daemon and so begin life in its cgroup,
// where a service manager's stop, restart or final kill of the daemon's
// unit would reach them. vm.cgroup.adopt moves each one out: into a
// transient scope where systemd runs the host, else into banger/vm-<id>
// under every hierarchy that tracks processes (cgroup2, and systemd's
// named v1 hierarchy on hybrid hosts). Resource controllers (cpu,
// memory...) are left alone: the VMM stays within the limits it started
// under.

// cgroupParent is the directory, in each hierarchy, that holds the VMs'.
const cgroupParent = "banger"

type cgroupService struct {
	// mu serialises adopts: one's pruning of empty vm-* cgroups must not
	// remove the directory another has just made for its VMM.
	mu        sync.Mutex
	ownerUID  int
	proc      string      // "/proc"
	mountinfo string      // "/proc/self/mountinfo"
	systemd   func() bool // sd_booted
	busctl    func(ctx context.Context, args ...string) error
}

func (h *Helper) cgroupMethods(m *rpc.Methods) {
	rpc.Register(m, api.MethodHelperVMCgroupAdopt, h.cgroups().adopt)
}

// cgroups is the helper's one cgroupService.
func (h *Helper) cgroups() *cgroupService {
	if h.cg != nil {
		return h.cg
	}
	h.cg = &cgroupService{
		ownerUID: h.opts.OwnerUID, proc: "/proc", mountinfo: "/proc/self/mountinfo",
		systemd: func() bool {
			st, err := os.Stat("/run/systemd/system")
			return err == nil && st.IsDir()
		},
		busctl: runBusctl,
	}
	return h.cg
}

// vmmProcess is what /proc says of the process to adopt.
type vmmProcess struct {
	ppid      int
	startTime uint64
	tgid      int
	uids      []int // real, effective, saved, filesystem
	exe       string
	cgroups   map[string]string // hierarchy key ("" for cgroup2, "name=systemd") → path
}

func (s *cgroupService) adopt(ctx context.Context, c *rpc.Call, p api.VMCgroupAdopt) (api.VMCgroupAdopted, error) {
	if err := model.ValidateVMID(p.VMID); err != nil {
		return api.VMCgroupAdopted{}, api.Errorf(api.CodeInvalidArgument, "adopt vmm: %v", err)
	}
	if p.PID <= 1 || p.StartTime == 0 {
		return api.VMCgroupAdopted{}, api.Errorf(api.CodeInvalidArgument, "adopt vmm of vm %s: pid %d start time %d does not name a vmm process", p.VMID, p.PID, p.StartTime)
	}
	c.SetTarget(p.VMID)
	// The pidfd pins the process: while it can still be signalled, the pid
	// cannot have been reused, so the pid written below is this process.
	fd, err := unix.PidfdOpen(p.PID, 0)
	if err != nil {
		return api.VMCgroupAdopted{}, api.Errorf(api.CodeNotFound, "adopt vmm of vm %s: process %d: %v", p.VMID, p.PID, err)
	}
	defer unix.Close(fd)
	proc, err := s.readProcess(p.PID)
	if err != nil {
		return api.VMCgroupAdopted{}, api.Errorf(api.CodeNotFound, "adopt vmm of vm %s: %v", p.VMID, err)
	}
	if proc.startTime != p.StartTime {
		return api.VMCgroupAdopted{}, api.Errorf(api.CodeNotFound, "adopt vmm of vm %s: process %d started at %d, not %d (it is another process)", p.VMID, p.PID, proc.startTime, p.StartTime)
	}
	if proc.tgid != p.PID {
		return api.VMCgroupAdopted{}, api.Errorf(api.CodePermissionDenied, "adopt vmm of vm %s: %d is a thread of process %d, not a process", p.VMID, p.PID, proc.tgid)
	}
	for _, u := range proc.uids {
		if u != s.ownerUID {
			return api.VMCgroupAdopted{}, api.Errorf(api.CodePermissionDenied, "adopt vmm of vm %s: process %d runs with uids %v, not only the owner uid %d", p.VMID, p.PID, proc.uids, s.ownerUID)
		}
	}
	if !isVMMExe(proc.exe) {
		return api.VMCgroupAdopted{}, api.Errorf(api.CodePermissionDenied, "adopt vmm of vm %s: process %d runs %q, not a vmm (qemu-system-*, firecracker)", p.VMID, p.PID, proc.exe)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	systemd := s.systemd()
	already := inVMCgroup(proc.cgroups, p.VMID, systemd)
	if !already && proc.ppid != int(c.Peer.PID) {
		return api.VMCgroupAdopted{}, api.Errorf(api.CodePermissionDenied, "adopt vmm of vm %s: process %d is not a child of the calling daemon (its parent is %d, the caller %d)", p.VMID, p.PID, proc.ppid, c.Peer.PID)
	}
	res := api.VMCgroupAdopted{Manager: "cgroupfs", Already: already}
	if systemd {
		res.Manager = "systemd"
	}
	if !already {
		if systemd {
			err = s.adoptSystemd(ctx, p)
		} else {
			err = s.adoptCgroupfs(p)
		}
		if err != nil {
			return api.VMCgroupAdopted{}, api.Errorf(api.CodeInternal, "adopt vmm of vm %s: %v", p.VMID, err)
		}
		if err := unix.PidfdSendSignal(fd, 0, nil, 0); err != nil {
			return api.VMCgroupAdopted{}, api.Errorf(api.CodeNotFound, "adopt vmm of vm %s: process %d exited while it was moved: %v", p.VMID, p.PID, err)
		}
	}
	after, err := s.readProcess(p.PID)
	if err == nil {
		for k, v := range after.cgroups {
			res.Cgroups = append(res.Cgroups, k+":"+v)
		}
	}
	c.Log.InfoContext(ctx, "vmm in its own cgroup", "vm", p.VMID, "pid", p.PID, "manager", res.Manager, "already", already, "cgroups", res.Cgroups)
	return res, nil
}

// isVMMExe accepts the VMM binaries banger starts.
func isVMMExe(exe string) bool {
	base := filepath.Base(strings.TrimSuffix(exe, " (deleted)"))
	return strings.HasPrefix(base, "qemu-system-") || base == "firecracker"
}

// scopeName is the transient unit a VMM gets where systemd runs the host.
func scopeName(vmID string) string { return "banger-vm-" + vmID + ".scope" }

// inVMCgroup reports whether the process already sits in its VM's cgroup
// (a VMM a previous daemon's call moved).
func inVMCgroup(cg map[string]string, vmID string, systemd bool) bool {
	path, ok := cg[""]
	if !ok {
		path, ok = cg["name=systemd"]
	}
	if !ok {
		return false
	}
	if systemd {
		return filepath.Base(path) == scopeName(vmID)
	}
	return path == "/"+cgroupParent+"/vm-"+vmID
}

// adoptSystemd asks systemd for a transient scope holding the pid (what
// systemd-run --scope does for a new process).
func (s *cgroupService) adoptSystemd(ctx context.Context, p api.VMCgroupAdopt) error {
	return s.busctl(ctx, scopeArgs(p)...)
}

func scopeArgs(p api.VMCgroupAdopt) []string {
	return []string{"call", "--system", "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
		"org.freedesktop.systemd1.Manager", "StartTransientUnit", "ssa(sv)a(sa(sv))",
		scopeName(p.VMID), "fail", "3",
		"PIDs", "au", "1", strconv.Itoa(p.PID),
		"Description", "s", "banger vm " + p.VMID,
		"CollectMode", "s", "inactive-or-failed",
		"0"}
}

// runBusctl runs busctl with fixed, validated arguments (never a shell).
func runBusctl(ctx context.Context, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "busctl", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("busctl StartTransientUnit: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// adoptCgroupfs creates banger/vm-<id> in every process-tracking
// hierarchy and moves the pid there. Empty cgroups of VMs that ended are
// removed on the way.
func (s *cgroupService) adoptCgroupfs(p api.VMCgroupAdopt) error {
	mounts, err := s.hierarchies()
	if err != nil {
		return err
	}
	if len(mounts) == 0 {
		return errors.New("no cgroup2 or name=systemd hierarchy is mounted")
	}
	for _, mnt := range mounts {
		parent := filepath.Join(mnt, cgroupParent)
		if err := os.Mkdir(parent, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("create cgroup %s: %w", parent, err)
		}
		pruneEmpty(parent, "vm-"+p.VMID)
		dir := filepath.Join(parent, "vm-"+p.VMID)
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("create cgroup %s: %w", dir, err)
		}
		f, err := os.OpenFile(filepath.Join(dir, "cgroup.procs"), os.O_WRONLY|unix.O_NOFOLLOW, 0)
		if err != nil {
			return fmt.Errorf("open %s/cgroup.procs: %w", dir, err)
		}
		_, err = f.WriteString(strconv.Itoa(p.PID))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("move process %d into %s: %w", p.PID, dir, err)
		}
	}
	return nil
}

// pruneEmpty removes the vm-* cgroups under parent except keep; rmdir of a
// cgroup with processes fails (EBUSY), so only empty ones go. Bounded.
func pruneEmpty(parent, keep string) {
	entries, err := os.ReadDir(parent)
	if err != nil {
		return
	}
	for i, e := range entries {
		if i >= 4096 {
			return
		}
		if e.IsDir() && strings.HasPrefix(e.Name(), "vm-") && e.Name() != keep {
			_ = unix.Rmdir(filepath.Join(parent, e.Name()))
		}
	}
}

// hierarchies are the mount points of the process-tracking hierarchies
// (cgroup2, and the v1 name=systemd one), mounted at their root.
func (s *cgroupService) hierarchies() ([]string, error) {
	f, err := os.Open(s.mountinfo)
	if err != nil {
		return nil, fmt.Errorf("read mounts: %w", err)
	}
	defer f.Close()
	var out []string
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		a, b := strings.Fields(pre), strings.Fields(post)
		if len(a) < 5 || len(b) < 3 || a[3] != "/" {
			continue
		}
		key := ""
		switch {
		case b[0] == "cgroup2":
		case b[0] == "cgroup" && hasOpt(b[2], "name=systemd"):
			key = "name=systemd"
		default:
			continue
		}
		if !seen[key] {
			seen[key] = true
			out = append(out, unescapeMount(a[4]))
		}
	}
	return out, sc.Err()
}

func hasOpt(opts, want string) bool {
	for _, o := range strings.Split(opts, ",") {
		if o == want {
			return true
		}
	}
	return false
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// readProcess reads what the checks need from /proc/PID.
func (s *cgroupService) readProcess(pid int) (vmmProcess, error) {
	var p vmmProcess
	dir := filepath.Join(s.proc, strconv.Itoa(pid))
	stat, err := os.ReadFile(filepath.Join(dir, "stat"))
	if err != nil {
		return p, fmt.Errorf("process %d: %w", pid, err)
	}
	i := strings.LastIndexByte(string(stat), ')')
	if i < 0 {
		return p, fmt.Errorf("process %d: malformed stat", pid)
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 20 {
		return p, fmt.Errorf("process %d: malformed stat", pid)
	}
	if p.ppid, err = strconv.Atoi(f[1]); err != nil {
		return p, fmt.Errorf("process %d: parent pid: %w", pid, err)
	}
	if p.startTime, err = strconv.ParseUint(f[19], 10, 64); err != nil {
		return p, fmt.Errorf("process %d: start time: %w", pid, err)
	}
	status, err := os.ReadFile(filepath.Join(dir, "status"))
	if err != nil {
		return p, fmt.Errorf("process %d: %w", pid, err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		k, v, _ := strings.Cut(line, ":")
		switch k {
		case "Tgid":
			p.tgid, _ = strconv.Atoi(strings.TrimSpace(v))
		case "Uid":
			for _, u := range strings.Fields(v) {
				n, err := strconv.Atoi(u)
				if err != nil {
					return p, fmt.Errorf("process %d: uid %q", pid, u)
				}
				p.uids = append(p.uids, n)
			}
		}
	}
	if len(p.uids) != 4 {
		return p, fmt.Errorf("process %d: no uids in status", pid)
	}
	if p.exe, err = os.Readlink(filepath.Join(dir, "exe")); err != nil {
		return p, fmt.Errorf("process %d: executable: %w", pid, err)
	}
	cg, err := os.ReadFile(filepath.Join(dir, "cgroup"))
	if err != nil {
		return p, fmt.Errorf("process %d: %w", pid, err)
	}
	p.cgroups = parseProcCgroup(string(cg))
	return p, nil
}

// parseProcCgroup keeps the process-tracking hierarchies of
// /proc/PID/cgroup: "0::/path" (cgroup2) and "N:name=systemd:/path".
func parseProcCgroup(s string) map[string]string {
	out := map[string]string{}
	for _, line := range strings.Split(s, "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "":
			out[""] = parts[2]
		case parts[1] == "name=systemd":
			out["name=systemd"] = parts[2]
		}
	}
	return out
}
