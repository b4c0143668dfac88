package roothelper

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/hostnat"
	"github.com/bangerdev/banger/internal/imagecat"
	"github.com/bangerdev/banger/internal/jailer"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/paths"
	"github.com/bangerdev/banger/internal/rpc"
)

// Firecracker's jailer needs root: it makes the chroot and its device
// nodes, joins cgroups and drops to the jail's uid. vm.jailer.* run it for
// the owner, who names only a VM id:
//
//   - Every path is the helper's own: the jail under the chroot base of its
//     root-owned settings (checked root-only from / down), the VM dir from
//     the owner's layout. The jailer and firecracker binaries come from the
//     same settings and must be root-owned.
//   - The owner's files (vmlinux, initrd.img, root.ext4, config.img and
//     console.log of the VM dir) are opened on a thread with the owner's
//     credentials, beneath the VM dir, refusing every symlink
//     (openat2 RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS), and must be regular
//     files the owner owns. A link the owner plants to a root file fails
//     there; root never re-looks a path up in a directory the owner writes.
//   - The read-only files are copied into the jail from those descriptors;
//     the root disk, which must persist, is hard-linked from its descriptor
//     (linkat AT_EMPTY_PATH) and its group set to the jail's gid (g+rw)
//     while the VM runs, so the owner keeps owning it.
//   - The uid/gid come from the reserved range of the settings, never from
//     the request, skipping ids /etc/passwd or /etc/group name.
//   - The API socket is reached without following links (an O_PATH
//     descriptor of a socket the jail's uid owns, connected through
//     /proc/self/fd), since the jail's uid owns the chroot and could plant a
//     link to a root-only socket; the connection is passed to the owner.
//   - A record beside the chroot (root-only) names the process by pid and
//     start time, so a later call reconnects to, or kills, that process and
//     no other.
type jailerService struct {
	cfg      jailer.Config
	cfgErr   error
	ownerUID int
	cg       *cgroupService
	net      *hostnat.Network // nil: invalid network config
	passwd   string           // "/etc/passwd"
	group    string           // "/etc/group"
	// startTimeout bounds the wait for the API socket.
	startTimeout time.Duration

	mu sync.Mutex // one start or stop at a time: uid allocation, jail dirs
}

func (h *Helper) jailerMethods(m *rpc.Methods) {
	cfg := h.opts.Jailer.WithDefaults()
	err := cfg.Validate()
	if err != nil {
		h.log.Error("firecracker jailer settings are invalid: vm.jailer methods will fail", "err", err)
	}
	s := &jailerService{cfg: cfg, cfgErr: err, ownerUID: h.opts.OwnerUID, cg: h.cgroups(), net: h.hostnet,
		passwd: "/etc/passwd", group: "/etc/group", startTimeout: h.opts.JailerStartTimeout}
	if s.startTimeout <= 0 {
		s.startTimeout = 10 * time.Second
	}
	if h.netsvc != nil {
		h.netsvc.jails = s // tap.create re-applies the rules of a jail's tap
	}
	rpc.Register(m, api.MethodHelperVMJailerStart, s.start)
	rpc.Register(m, api.MethodHelperVMJailerConnect, s.connect)
	rpc.Register(m, api.MethodHelperVMJailerStop, s.stop)
}

// Names of a VM dir's files the jail takes, and of the jail's sockets.
const (
	jailKernel  = "vmlinux"
	jailInitrd  = "initrd.img"
	jailRoot    = "root.ext4"
	jailConfig  = "config.img"
	jailConsole = "console.log"
	jailAPI     = "api.sock"
	jailVsock   = "vsock.sock"
	jailRecord  = "banger-jail.json" // beside the chroot, root-only
	maxCopied   = 1 << 30            // kernel, initrd and config disk each
)

// jailRecord is what the helper keeps of a jail it started.
type jailRec struct {
	VMID      string `json:"vm_id"`
	UID       int    `json:"uid"`
	GID       int    `json:"gid"`
	PID       int    `json:"pid"`
	StartTime uint64 `json:"start_time"`
	VMDir     string `json:"vm_dir"`
	// The root disk's identity and what its group and mode were.
	DiskDev  uint64 `json:"disk_dev"`
	DiskIno  uint64 `json:"disk_ino"`
	DiskGID  int    `json:"disk_gid"`
	DiskMode uint32 `json:"disk_mode"`
	// The VM's tap while the jail holds it: its name, device index and
	// owner before (given back at stop).
	Tap      string `json:"tap,omitempty"`
	TapIndex int    `json:"tap_index,omitempty"`
	TapUID   int    `json:"tap_uid,omitempty"`
	TapGID   int    `json:"tap_gid,omitempty"`
}

func (s *jailerService) ready(vmID string) error {
	if s.cfgErr != nil {
		return api.Errorf(api.CodeFailedPrecondition, "firecracker jail of vm %s: root helper settings: %v (fix the helper's --jailer-* flags or [firecracker] in root's config)", vmID, s.cfgErr)
	}
	return nil
}

func checkJailVMID(doing, id string) error {
	if err := model.ValidateVMID(id); err != nil {
		return api.Errorf(api.CodeInvalidArgument, "%s: %v", doing, err)
	}
	return nil
}

// owner is the owner's uid and primary gid.
func (s *jailerService) owner(peer rpc.Peer) (imagecat.Owner, error) {
	o := imagecat.Owner{UID: s.ownerUID}
	u, err := user.LookupId(strconv.Itoa(s.ownerUID))
	if err == nil {
		if o.GID, err = strconv.Atoi(u.Gid); err != nil {
			return o, fmt.Errorf("owner uid %d has primary gid %q", s.ownerUID, u.Gid)
		}
		return o, nil
	}
	if int(peer.UID) == s.ownerUID {
		o.GID = int(peer.GID)
		return o, nil
	}
	return o, fmt.Errorf("find the primary group of owner uid %d: %w", s.ownerUID, err)
}

// ownerFiles are the VM dir's files, opened as the owner.
type ownerFiles struct {
	kernel, initrd, root, config, console *os.File
}

func (f *ownerFiles) Close() {
	for _, x := range []*os.File{f.kernel, f.initrd, f.root, f.config, f.console} {
		if x != nil {
			x.Close()
		}
	}
}

const beneath = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV

// openOwnerFiles opens the VM dir's files with the owner's credentials.
func (s *jailerService) openOwnerFiles(o imagecat.Owner, vmDir string) (*ownerFiles, error) {
	files := &ownerFiles{}
	err := asOwner(o, func() error {
		dfd, err := unix.Open(vmDir, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open vm dir %s as uid %d: %w", vmDir, o.UID, err)
		}
		defer unix.Close(dfd)
		var st unix.Stat_t
		if err := unix.Fstat(dfd, &st); err != nil {
			return fmt.Errorf("stat vm dir %s: %w", vmDir, err)
		}
		if int(st.Uid) != o.UID {
			return fmt.Errorf("%w: vm dir %s belongs to uid %d, not the owner uid %d", errNotOwners, vmDir, st.Uid, o.UID)
		}
		open := func(name string, flags int, optional bool) (*os.File, error) {
			how := &unix.OpenHow{Flags: uint64(flags | unix.O_NOFOLLOW | unix.O_CLOEXEC), Resolve: beneath}
			if flags&unix.O_CREAT != 0 {
				how.Mode = 0o600 // openat2 refuses a mode without O_CREAT
			}
			fd, err := unix.Openat2(dfd, name, how)
			if optional && errors.Is(err, unix.ENOENT) {
				return nil, nil
			}
			if err != nil {
				return nil, fmt.Errorf("open %s in vm dir %s as uid %d (a symlink is refused): %w", name, vmDir, o.UID, err)
			}
			f := os.NewFile(uintptr(fd), filepath.Join(vmDir, name))
			var st unix.Stat_t
			if err := unix.Fstat(fd, &st); err != nil {
				f.Close()
				return nil, err
			}
			if st.Mode&unix.S_IFMT != unix.S_IFREG || int(st.Uid) != o.UID {
				f.Close()
				return nil, fmt.Errorf("%w: %s in vm dir %s is not a regular file owned by uid %d (mode %o, uid %d)", errNotOwners, name, vmDir, o.UID, st.Mode, st.Uid)
			}
			return f, nil
		}
		if files.kernel, err = open(jailKernel, unix.O_RDONLY, false); err != nil {
			return err
		}
		if files.initrd, err = open(jailInitrd, unix.O_RDONLY, true); err != nil {
			return err
		}
		if files.root, err = open(jailRoot, unix.O_RDONLY, false); err != nil {
			return err
		}
		if files.config, err = open(jailConfig, unix.O_RDONLY, true); err != nil {
			return err
		}
		files.console, err = open(jailConsole, unix.O_WRONLY|unix.O_APPEND|unix.O_CREAT, false)
		return err
	})
	if err != nil {
		files.Close()
		return nil, err
	}
	return files, nil
}

var errNotOwners = errors.New("not the owner's")

// undo is a LIFO list of clean-ups.
type undo []func()

func (u *undo) push(f func()) { *u = append(*u, f) }
func (u *undo) run() {
	for i := len(*u) - 1; i >= 0; i-- {
		(*u)[i]()
	}
	*u = nil
}

func (s *jailerService) start(ctx context.Context, c *rpc.Call, p api.VMJailerRef) (api.VMJailerStarted, error) {
	if err := checkJailVMID("start jailer", p.VMID); err != nil {
		return api.VMJailerStarted{}, err
	}
	c.SetTarget(p.VMID)
	doing := "start jailer for vm " + p.VMID
	if err := s.ready(p.VMID); err != nil {
		return api.VMJailerStarted{}, err
	}
	fail := func(code string, err error) (api.VMJailerStarted, error) {
		return api.VMJailerStarted{}, api.Errorf(code, "%s: %v", doing, err)
	}
	for _, b := range []string{s.cfg.JailerBinary, s.cfg.FirecrackerBinary} {
		if err := jailer.CheckRootBinary(b); err != nil {
			return fail(api.CodeFailedPrecondition, err)
		}
	}
	o, err := s.owner(c.Peer)
	if err != nil {
		return fail(api.CodeFailedPrecondition, err)
	}
	layout, err := paths.FromEnv()
	if err != nil || !filepath.IsAbs(layout.VMsDir()) {
		return fail(api.CodeFailedPrecondition, fmt.Errorf("locate the owner's vm dirs (%v): set BANGER_HOME for the root helper", err))
	}
	vmDir := layout.VMDir(p.VMID)

	s.mu.Lock()
	defer s.mu.Unlock()
	// The base and the exec name's dir are made by root under a root-only
	// parent; everything after is reached through them.
	if err := jailer.CheckRootDir(filepath.Dir(s.cfg.ChrootBase)); err != nil {
		return fail(api.CodeFailedPrecondition, fmt.Errorf("chroot base %s: %w", s.cfg.ChrootBase, err))
	}
	execDir := filepath.Join(s.cfg.ChrootBase, s.cfg.ExecName())
	for _, d := range []string{s.cfg.ChrootBase, execDir} {
		if err := os.Mkdir(d, 0o711); err != nil && !errors.Is(err, os.ErrExist) {
			return fail(api.CodeInternal, fmt.Errorf("create %s: %w", d, err))
		}
	}
	if err := jailer.CheckRootDir(execDir); err != nil {
		return fail(api.CodeFailedPrecondition, fmt.Errorf("chroot base %s: %w", s.cfg.ChrootBase, err))
	}
	jailDir := s.cfg.JailDir(p.VMID)
	if rec, err := s.readRecord(p.VMID); err == nil {
		if pfd, err := s.verify(rec); err == nil {
			unix.Close(pfd)
			return fail(api.CodeAlreadyExists, fmt.Errorf("its jailed firecracker runs already (pid %d): stop it first", rec.PID))
		}
		c.Log.InfoContext(ctx, "removing the stale jail of a vm whose firecracker ended", "vm", p.VMID, "pid", rec.PID)
		if err := s.remove(ctx, rec, o, c.Log); err != nil {
			return fail(api.CodeInternal, fmt.Errorf("remove stale jail: %w", err))
		}
	} else if _, err := os.Lstat(jailDir); err == nil {
		return fail(api.CodeFailedPrecondition, fmt.Errorf("%s exists without banger's record: remove it by hand", jailDir))
	}

	files, err := s.openOwnerFiles(o, vmDir)
	if err != nil {
		code := api.CodeFailedPrecondition
		if errors.Is(err, errNotOwners) || errors.Is(err, unix.EACCES) {
			code = api.CodePermissionDenied
		} else if errors.Is(err, unix.ENOENT) {
			code = api.CodeNotFound
		}
		return fail(code, err)
	}
	defer files.Close()

	id, err := s.allocate(execDir)
	if err != nil {
		return fail(api.CodeUnavailable, err)
	}
	rec := jailRec{VMID: p.VMID, UID: id, GID: id, VMDir: vmDir}
	var u undo
	defer u.run()
	if err := os.Mkdir(jailDir, 0o700); err != nil {
		return fail(api.CodeInternal, fmt.Errorf("create jail dir: %w", err))
	}
	u.push(func() { removeJailDir(execDir, p.VMID) })
	if err := s.writeRecord(rec); err != nil {
		return fail(api.CodeInternal, err)
	}
	chroot := filepath.Join(jailDir, "root")
	if err := os.Mkdir(chroot, 0o700); err != nil {
		return fail(api.CodeInternal, fmt.Errorf("create chroot: %w", err))
	}
	rootDir, err := os.OpenFile(chroot, unix.O_DIRECTORY|unix.O_NOFOLLOW|os.O_RDONLY, 0)
	if err != nil {
		return fail(api.CodeInternal, fmt.Errorf("open chroot: %w", err))
	}
	defer rootDir.Close()
	rfd := int(rootDir.Fd())
	for _, cp := range []struct {
		name string
		f    *os.File
	}{{jailKernel, files.kernel}, {jailInitrd, files.initrd}, {jailConfig, files.config}} {
		if cp.f == nil {
			continue
		}
		if err := copyInto(rfd, cp.name, cp.f, rec.UID, rec.GID); err != nil {
			return fail(api.CodeInternal, fmt.Errorf("copy %s into the jail: %w", cp.name, err))
		}
	}
	if err := s.linkRootDisk(rfd, files.root, &rec, &u); err != nil {
		code := api.CodeInternal
		if errors.Is(err, unix.EXDEV) {
			code = api.CodeFailedPrecondition
		}
		return fail(code, err)
	}
	if err := s.writeRecord(rec); err != nil {
		return fail(api.CodeInternal, err)
	}
	if err := unix.Fchown(rfd, rec.UID, rec.GID); err != nil {
		return fail(api.CodeInternal, fmt.Errorf("hand the chroot to uid %d: %w", rec.UID, err))
	}
	if err := s.handTap(ctx, &rec, &u, c.Log); err != nil {
		return fail(tapErrorCode(err), err)
	}
	if err := s.writeRecord(rec); err != nil {
		return fail(api.CodeInternal, err)
	}

	proc, err := s.exec(p.VMID, rec, files.console)
	if err != nil {
		return fail(api.CodeInternal, err)
	}
	u.push(func() { proc.kill() })
	rec.PID, rec.StartTime = proc.pid, proc.startTime
	if err := s.writeRecord(rec); err != nil {
		return fail(api.CodeInternal, err)
	}
	u.push(func() { s.cg.removeVMCgroup(p.VMID) })
	if err := s.intoCgroup(ctx, p.VMID, proc.pid); err != nil {
		return fail(api.CodeInternal, fmt.Errorf("move firecracker into the vm's cgroup: %w", err))
	}
	conn, err := s.waitAPI(ctx, rfd, rec, proc.exited)
	if err != nil {
		tail := ""
		if b, rerr := tailOf(files.console); rerr == nil && len(b) > 0 {
			tail = "; console:\n" + b
		}
		return fail(api.CodeUnavailable, fmt.Errorf("%w%s", err, tail))
	}
	defer conn.Close()
	if err := passConn(c, conn); err != nil {
		return fail(api.CodeInternal, err)
	}
	u = nil // the jail is the VM's now
	c.Log.InfoContext(ctx, "jailed firecracker started", "vm", p.VMID, "pid", rec.PID, "uid", rec.UID, "gid", rec.GID, "jail", chroot, "peer_uid", c.Peer.UID)
	return api.VMJailerStarted{PID: rec.PID, StartTime: rec.StartTime, UID: rec.UID, GID: rec.GID, JailRoot: chroot}, nil
}

// allocate picks the lowest uid of the range that no jail holds and no
// user or group of the host has.
func (s *jailerService) allocate(execDir string) (int, error) {
	used := map[int]bool{}
	entries, err := os.ReadDir(execDir)
	if err != nil {
		return 0, fmt.Errorf("list jails: %w", err)
	}
	for i, e := range entries {
		if i >= 1<<16 {
			break
		}
		if rec, err := s.readRecord(e.Name()); err == nil {
			used[rec.UID] = true
		}
	}
	for _, f := range []string{s.passwd, s.group} {
		ids, err := jailer.TakenIDs(f)
		if err != nil {
			return 0, fmt.Errorf("read %s: %w", f, err)
		}
		for id := range ids {
			used[id] = true
		}
	}
	used[s.ownerUID] = true
	for id := s.cfg.UIDStart; id < s.cfg.UIDStart+s.cfg.UIDCount; id++ {
		if !used[id] {
			return id, nil
		}
	}
	return 0, fmt.Errorf("all %d jail uids from %d are taken: stop a firecracker vm or raise firecracker.uid_count", s.cfg.UIDCount, s.cfg.UIDStart)
}

func (s *jailerService) recordPath(vmID string) string {
	return filepath.Join(s.cfg.JailDir(vmID), jailRecord)
}

func (s *jailerService) writeRecord(rec jailRec) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	// The jail dir is root's (0700, under root-only parents).
	if err := os.WriteFile(s.recordPath(rec.VMID), b, 0o600); err != nil {
		return fmt.Errorf("write jail record: %w", err)
	}
	return nil
}

func (s *jailerService) readRecord(vmID string) (jailRec, error) {
	var rec jailRec
	if model.ValidateVMID(vmID) != nil {
		return rec, fmt.Errorf("%q is not a vm id", vmID)
	}
	f, err := os.OpenFile(s.recordPath(vmID), os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return rec, err
	}
	defer f.Close()
	if err := json.NewDecoder(io.LimitReader(f, 1<<16)).Decode(&rec); err != nil {
		return rec, fmt.Errorf("read jail record of vm %s: %w", vmID, err)
	}
	if rec.VMID != vmID || !s.cfg.InRange(rec.UID) || rec.GID != rec.UID {
		return rec, fmt.Errorf("jail record of vm %s does not match its jail", vmID)
	}
	return rec, nil
}

// copyInto copies src into a new file name in the chroot, readable by the
// jail's uid only.
func copyInto(dirfd int, name string, src *os.File, uid, gid int) error {
	fd, err := unix.Openat(dirfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o400)
	if err != nil {
		return err
	}
	dst := os.NewFile(uintptr(fd), name)
	defer dst.Close()
	n, err := io.Copy(dst, io.LimitReader(src, maxCopied+1))
	if err != nil {
		return err
	}
	if n > maxCopied {
		return fmt.Errorf("larger than %d bytes", maxCopied)
	}
	if err := unix.Fchown(fd, uid, gid); err != nil {
		return err
	}
	return dst.Close()
}

// linkRootDisk hard-links the owner's root disk into the chroot and lets
// the jail's gid write it; the undo gives the group and mode back.
func (s *jailerService) linkRootDisk(rfd int, disk *os.File, rec *jailRec, u *undo) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(disk.Fd()), &st); err != nil {
		return fmt.Errorf("stat root disk: %w", err)
	}
	if err := unix.Linkat(int(disk.Fd()), "", rfd, jailRoot, unix.AT_EMPTY_PATH); err != nil {
		if errors.Is(err, unix.EXDEV) {
			return fmt.Errorf("link root disk into the jail: %w: firecracker.chroot_base %s is on another filesystem than the vm dir %s; set it to a root-owned directory on that filesystem", err, s.cfg.ChrootBase, rec.VMDir)
		}
		return fmt.Errorf("link root disk into the jail: %w", err)
	}
	rec.DiskDev, rec.DiskIno, rec.DiskGID, rec.DiskMode = st.Dev, st.Ino, int(st.Gid), st.Mode&0o7777
	u.push(func() { restoreDisk(disk, *rec) })
	if err := unix.Fchown(int(disk.Fd()), -1, rec.GID); err != nil {
		return fmt.Errorf("give root disk to gid %d: %w", rec.GID, err)
	}
	if err := unix.Fchmod(int(disk.Fd()), (st.Mode&0o7777|0o060)&^0o6000); err != nil {
		return fmt.Errorf("let gid %d write the root disk: %w", rec.GID, err)
	}
	return nil
}

// restoreDisk gives the root disk (an open descriptor of that very inode)
// its group and mode back.
func restoreDisk(disk *os.File, rec jailRec) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(disk.Fd()), &st); err != nil {
		return err
	}
	if st.Dev != rec.DiskDev || st.Ino != rec.DiskIno {
		return fmt.Errorf("%s is not the disk the jail took", disk.Name())
	}
	if err := unix.Fchown(int(disk.Fd()), -1, rec.DiskGID); err != nil {
		return err
	}
	return unix.Fchmod(int(disk.Fd()), rec.DiskMode)
}

// jailProc is a jailer the helper started.
type jailProc struct {
	pid       int
	startTime uint64
	exited    chan struct{}
	cmd       *exec.Cmd
}

func (p *jailProc) kill() {
	_ = p.cmd.Process.Kill()
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
	}
}

// exec starts the jailer detached (own session, not tied to a request),
// its output (firecracker's serial console) going to the owner's console
// log descriptor.
func (s *jailerService) exec(vmID string, rec jailRec, console *os.File) (*jailProc, error) {
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, err
	}
	defer devnull.Close()
	cmd := &exec.Cmd{
		Path:        s.cfg.JailerBinary,
		Args:        append([]string{s.cfg.JailerBinary}, s.cfg.Args(vmID, rec.UID, rec.GID)...),
		Env:         []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"},
		Dir:         "/",
		Stdin:       devnull,
		Stdout:      console,
		Stderr:      console,
		SysProcAttr: &unix.SysProcAttr{Setsid: true},
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("run jailer %s: %w", s.cfg.JailerBinary, err)
	}
	p := &jailProc{pid: cmd.Process.Pid, exited: make(chan struct{}), cmd: cmd}
	go func() { _ = cmd.Wait(); close(p.exited) }() // reap
	st, err := procStartTime(p.pid)
	if err != nil {
		p.kill()
		return nil, fmt.Errorf("jailer %d: %w", p.pid, err)
	}
	p.startTime = st
	return p, nil
}

func procStartTime(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	return parseStartTime(b)
}

func parseStartTime(stat []byte) (uint64, error) {
	i := strings.LastIndexByte(string(stat), ')')
	if i < 0 {
		return 0, errors.New("malformed stat")
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 20 {
		return 0, errors.New("malformed stat")
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// intoCgroup moves pid into the VM's own cgroup, as vm.cgroup.adopt does.
func (s *jailerService) intoCgroup(ctx context.Context, vmID string, pid int) error {
	s.cg.mu.Lock()
	defer s.cg.mu.Unlock()
	p := api.VMCgroupAdopt{VMID: vmID, PID: pid}
	if s.cg.systemd() {
		return s.cg.adoptSystemd(ctx, p)
	}
	return s.cg.adoptCgroupfs(p)
}

// waitAPI waits, bounded, for the API socket and connects to it.
func (s *jailerService) waitAPI(ctx context.Context, rfd int, rec jailRec, exited <-chan struct{}) (*net.UnixConn, error) {
	ctx, cancel := context.WithTimeout(ctx, s.startTimeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		conn, err := connectBeneath(rfd, jailAPI, rec.UID)
		if err == nil {
			return conn, nil
		}
		last = err
		select {
		case <-exited:
			return nil, errors.New("the jailer exited before firecracker's api socket answered")
		case <-ctx.Done():
			return nil, fmt.Errorf("firecracker's api socket not answering after %s: %v", s.startTimeout, last)
		case <-tick.C:
		}
	}
}

// connectBeneath connects to the socket name in the directory dirfd
// without following any link: the socket inode is opened O_PATH, checked
// to be a socket the jail's uid owns, and connected through its
// /proc/self/fd entry.
func connectBeneath(dirfd int, name string, uid int) (*net.UnixConn, error) {
	fd, err := unix.Openat2(dirfd, name, &unix.OpenHow{Flags: unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC, Resolve: beneath})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", name, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK || int(st.Uid) != uid {
		return nil, fmt.Errorf("%s is not a socket of the jail's uid %d (mode %o, uid %d)", name, uid, st.Mode, st.Uid)
	}
	return net.DialUnix("unix", nil, &net.UnixAddr{Net: "unix", Name: "/proc/self/fd/" + strconv.Itoa(fd)})
}

func passConn(c *rpc.Call, conn *net.UnixConn) error {
	f, err := conn.File()
	if err != nil {
		return fmt.Errorf("pass the connection: %w", err)
	}
	defer f.Close()
	if err := c.SendFile(f); err != nil {
		return fmt.Errorf("pass the connection: %w", err)
	}
	return nil
}

// verify checks that the record's process still runs: same pid, start
// time, and only the jail's uid. It returns a pidfd pinning it.
func (s *jailerService) verify(rec jailRec) (int, error) {
	if rec.PID <= 1 {
		return -1, errors.New("no process recorded")
	}
	fd, err := unix.PidfdOpen(rec.PID, 0)
	if err != nil {
		return -1, fmt.Errorf("process %d: %w", rec.PID, err)
	}
	proc, err := s.cg.readProcess(rec.PID)
	if err == nil && proc.startTime != rec.StartTime {
		err = fmt.Errorf("process %d started at %d, not %d (another process)", rec.PID, proc.startTime, rec.StartTime)
	}
	if err == nil {
		for _, u := range proc.uids {
			if u != rec.UID {
				err = fmt.Errorf("process %d runs with uids %v, not the jail's %d", rec.PID, proc.uids, rec.UID)
				break
			}
		}
	}
	if err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

func (s *jailerService) connect(ctx context.Context, c *rpc.Call, p api.VMJailerConnect) (api.VMJailerStarted, error) {
	if err := checkJailVMID("connect to jail", p.VMID); err != nil {
		return api.VMJailerStarted{}, err
	}
	c.SetTarget(p.VMID)
	if err := s.ready(p.VMID); err != nil {
		return api.VMJailerStarted{}, err
	}
	name := ""
	switch p.Socket {
	case api.JailerSocketAPI:
		name = jailAPI
	case api.JailerSocketVsock:
		name = jailVsock
	default:
		return api.VMJailerStarted{}, api.Errorf(api.CodeInvalidArgument, "connect to jail of vm %s: socket %q is not %q or %q", p.VMID, printable(p.Socket), api.JailerSocketAPI, api.JailerSocketVsock)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, err := s.readRecord(p.VMID)
	if err != nil {
		return api.VMJailerStarted{}, api.Errorf(api.CodeNotFound, "connect to jail of vm %s: no jail the helper started: %v", p.VMID, err)
	}
	pfd, err := s.verify(rec)
	if err != nil {
		return api.VMJailerStarted{}, api.Errorf(api.CodeNotFound, "connect to jail of vm %s: its firecracker is not running: %v", p.VMID, err)
	}
	defer unix.Close(pfd)
	chroot := filepath.Join(s.cfg.JailDir(p.VMID), "root")
	dfd, err := unix.Open(chroot, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return api.VMJailerStarted{}, api.Errorf(api.CodeInternal, "connect to jail of vm %s: %v", p.VMID, err)
	}
	defer unix.Close(dfd)
	conn, err := connectBeneath(dfd, name, rec.UID)
	if err != nil {
		return api.VMJailerStarted{}, api.Errorf(api.CodeUnavailable, "connect to jail of vm %s: %v", p.VMID, err)
	}
	defer conn.Close()
	if err := passConn(c, conn); err != nil {
		return api.VMJailerStarted{}, api.Errorf(api.CodeInternal, "connect to jail of vm %s: %v", p.VMID, err)
	}
	return api.VMJailerStarted{PID: rec.PID, StartTime: rec.StartTime, UID: rec.UID, GID: rec.GID, JailRoot: chroot}, nil
}

func (s *jailerService) stop(ctx context.Context, c *rpc.Call, p api.VMJailerRef) (api.Empty, error) {
	if err := checkJailVMID("stop jail", p.VMID); err != nil {
		return api.Empty{}, err
	}
	c.SetTarget(p.VMID)
	if err := s.ready(p.VMID); err != nil {
		return api.Empty{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, err := s.readRecord(p.VMID)
	if errors.Is(err, os.ErrNotExist) {
		if _, lerr := os.Lstat(s.cfg.JailDir(p.VMID)); lerr == nil {
			return api.Empty{}, api.Errorf(api.CodeFailedPrecondition, "stop jail of vm %s: %s exists without banger's record: remove it by hand", p.VMID, s.cfg.JailDir(p.VMID))
		}
		return api.Empty{}, nil // nothing to stop
	}
	if err != nil {
		return api.Empty{}, api.Errorf(api.CodeInternal, "stop jail of vm %s: %v", p.VMID, err)
	}
	o, err := s.owner(c.Peer)
	if err != nil {
		// Root stopping the jail of an owner with no passwd entry: the
		// disk's own group was the owner's.
		o = imagecat.Owner{UID: s.ownerUID, GID: rec.DiskGID}
	}
	if err := s.remove(ctx, rec, o, c.Log); err != nil {
		return api.Empty{}, api.Errorf(api.CodeInternal, "stop jail of vm %s: %v", p.VMID, err)
	}
	c.Log.InfoContext(ctx, "jailed firecracker stopped and jail removed", "vm", p.VMID, "pid", rec.PID, "peer_uid", c.Peer.UID)
	return api.Empty{}, nil
}

// remove kills the record's process (if it is still that process), gives
// the root disk its group and mode back and removes the jail.
func (s *jailerService) remove(ctx context.Context, rec jailRec, o imagecat.Owner, log *slog.Logger) error {
	if pfd, err := s.verify(rec); err == nil {
		err := unix.PidfdSendSignal(pfd, unix.SIGKILL, nil, 0)
		if err == nil {
			fds := []unix.PollFd{{Fd: int32(pfd), Events: unix.POLLIN}}
			_, err = unix.Poll(fds, 10000)
			if err == nil && fds[0].Revents&unix.POLLIN == 0 {
				err = errors.New("still running 10s after SIGKILL")
			}
		}
		unix.Close(pfd)
		if err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("kill firecracker %d: %w", rec.PID, err)
		}
	}
	// The disk is found again as the owner through the VM dir, else through
	// the jail's link (before the jail goes), and only touched if it is the
	// inode the jail took. If neither leads to it (the owner moved it), it
	// keeps the jail's group: the owner owns it and may chgrp it back.
	if rec.DiskIno != 0 {
		err := s.restoreDiskOf(rec, o)
		if err != nil {
			log.WarnContext(ctx, "root disk keeps the jail's group", "vm", rec.VMID, "gid", rec.GID, "err", err)
		}
	}
	// A tap left to the jail's uid would go to the next jail given that
	// uid: the record (and so the uid) stays until it is back.
	if err := s.giveTapBack(ctx, rec, log); err != nil {
		return err
	}
	if err := removeJailDir(filepath.Join(s.cfg.ChrootBase, s.cfg.ExecName()), rec.VMID); err != nil {
		return err
	}
	s.cg.removeVMCgroup(rec.VMID)
	return nil
}

func (s *jailerService) restoreDiskOf(rec jailRec, o imagecat.Owner) error {
	var disk *os.File
	err := asOwner(o, func() error {
		dfd, err := unix.Open(rec.VMDir, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(dfd)
		fd, err := unix.Openat2(dfd, jailRoot, &unix.OpenHow{Flags: unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_CLOEXEC, Resolve: beneath})
		if err != nil {
			return err
		}
		disk = os.NewFile(uintptr(fd), filepath.Join(rec.VMDir, jailRoot))
		return nil
	})
	if err == nil {
		err = restoreDisk(disk, rec)
		disk.Close()
		if err == nil {
			return nil
		}
	}
	chroot := filepath.Join(s.cfg.JailDir(rec.VMID), "root")
	dfd, jerr := unix.Open(chroot, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if jerr == nil {
		defer unix.Close(dfd)
		var fd int
		fd, jerr = unix.Openat2(dfd, jailRoot, &unix.OpenHow{Flags: unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_CLOEXEC, Resolve: beneath})
		if jerr == nil {
			disk := os.NewFile(uintptr(fd), filepath.Join(chroot, jailRoot))
			jerr = restoreDisk(disk, rec)
			disk.Close()
		}
	}
	if jerr == nil {
		return nil
	}
	return fmt.Errorf("through the vm dir: %v; through the jail: %v", err, jerr)
}

// removeJailDir removes <execDir>/<id> without following any link the
// jail's uid planted in it.
func removeJailDir(execDir, id string) error {
	r, err := os.OpenRoot(execDir)
	if err != nil {
		return fmt.Errorf("remove jail: %w", err)
	}
	defer r.Close()
	if err := r.RemoveAll(id); err != nil {
		return fmt.Errorf("remove jail %s/%s: %w", execDir, id, err)
	}
	return nil
}

// tailOf returns the last bytes of an append-only file descriptor.
func tailOf(f *os.File) (string, error) {
	st, err := f.Stat()
	if err != nil {
		return "", err
	}
	off := st.Size() - 2048
	if off < 0 {
		off = 0
	}
	b := make([]byte, st.Size()-off)
	// The console was opened write-only: read it again through /proc.
	r, err := os.Open("/proc/self/fd/" + strconv.Itoa(int(f.Fd())))
	if err != nil {
		return "", err
	}
	defer r.Close()
	n, _ := r.ReadAt(b, off)
	// Console output is the guest's: no control characters reach a log.
	return strings.Map(func(r rune) rune {
		if r == '\n' || (r >= 0x20 && r != 0x7f && r != utf8.RuneError) {
			return r
		}
		return '?'
	}, strings.ToValidUTF8(string(b[:n]), "?")), nil
}

// removeVMCgroup removes the VM's empty cgroupfs cgroups (a systemd scope
// goes by itself once empty).
func (s *cgroupService) removeVMCgroup(vmID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	mounts, err := s.hierarchies()
	if err != nil {
		return
	}
	for _, m := range mounts {
		_ = unix.Rmdir(filepath.Join(m, cgroupParent, "vm-"+vmID))
	}
}
