package roothelper

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/imagecat"
	"github.com/bangerdev/banger/internal/paths"
	"github.com/bangerdev/banger/internal/rpc"
)

// StageInstall is the progress stage of copying a built image into the
// owner's store.
const StageInstall = "install"

// imageBuilder serves image.build: a debootstrap build of an embedded
// catalog entry, for the owner's image store.
//
// Where things are written, and why it is safe:
//   - The caller names a catalog entry and nothing else. The store comes from
//     the helper's own environment (BANGER_HOME or XDG, set by the unit or
//     inherited from the daemon that spawned it), never from a request.
//   - debootstrap, the rootfs tree and the ext4 file live in a fresh 0700
//     directory under os.TempDir(), which must be reachable through
//     root-owned directories only (rootOnlyDir). The owner's cache dir is not
//     used: the owner could swap a path component for a symlink while root
//     works under it and aim debootstrap's writes anywhere.
//   - The finished image enters the store on a thread whose credentials are
//     the owner's (asOwner): directories made, the temp file, the copy and
//     the rename are all done as the owner. A symlink the owner planted in
//     the store (at images/, images/<name>/ or rootfs.ext4) can then only
//     lead where the owner could write anyway. The file is also opened
//     through an os.Root on the images dir, so it cannot leave the store.
//     The copy (not a rename) is needed anyway: the temp dir and the store
//     are often on different filesystems.
type imageBuilder struct {
	ownerUID int
	busy     chan struct{} // one build at a time: debootstrap is heavy
}

// imageBuildMethods adds image.build to the helper's method table.
func (h *Helper) imageBuildMethods(m *rpc.Methods) {
	b := &imageBuilder{ownerUID: h.opts.OwnerUID, busy: make(chan struct{}, 1)}
	rpc.Register(m, api.MethodHelperImageBuild, b.build)
	rpc.Register(m, api.MethodHelperImagePlan, b.plan)
}

func (b *imageBuilder) build(ctx context.Context, c *rpc.Call, p api.HelperImageBuild) (api.HelperImageBuilt, error) {
	// authorize admits only these two already; checked again here because
	// this method writes into the owner's files.
	if c.Peer.UID != 0 && int(c.Peer.UID) != b.ownerUID {
		return api.HelperImageBuilt{}, api.Errorf(api.CodePermissionDenied, "build image: uid %d is neither root nor the owner uid %d", c.Peer.UID, b.ownerUID)
	}
	e, err := debootstrapEntry(p.Name)
	if err != nil {
		return api.HelperImageBuilt{}, err
	}
	return b.buildEntry(ctx, c, e, imagecat.BuildOptions{})
}

// buildEntry builds the validated entry e into the owner's store; opts
// adds a Check and a SourceSuffix (a plan image).
func (b *imageBuilder) buildEntry(ctx context.Context, c *rpc.Call, e imagecat.Entry, opts imagecat.BuildOptions) (api.HelperImageBuilt, error) {
	owner, err := b.owner(c.Peer)
	if err != nil {
		return api.HelperImageBuilt{}, err
	}
	layout, err := paths.FromEnv()
	if err != nil {
		return api.HelperImageBuilt{}, api.Errorf(api.CodeFailedPrecondition, "build image %q: locate the owner's image store: %v", e.Name, err)
	}
	store := imagecat.Store{Dir: layout.ImagesDir()}
	if !filepath.IsAbs(store.Dir) {
		return api.HelperImageBuilt{}, api.Errorf(api.CodeFailedPrecondition, "build image %q: the owner's images dir %q is not absolute (set BANGER_HOME for the root helper)", e.Name, store.Dir)
	}

	// No keyring to verify the archive with: refuse before any work (and
	// before queueing behind another build).
	if _, err := imagecat.ResolveMirror("", "", e); err != nil {
		return api.HelperImageBuilt{}, buildError(fmt.Sprintf("build image %q", e.Name), err)
	}

	select {
	case b.busy <- struct{}{}:
		defer func() { <-b.busy }()
	default:
		c.ProgressFunc().Stage(imagecat.StageDebootstrap, "waiting for another image build to finish")
		select {
		case b.busy <- struct{}{}:
			defer func() { <-b.busy }()
		case <-ctx.Done():
			return api.HelperImageBuilt{}, api.Errorf(api.CodeCanceled, "build image %q: %v", e.Name, ctx.Err())
		}
	}

	base, err := rootOnlyDir(os.TempDir())
	if err != nil {
		return api.HelperImageBuilt{}, api.Errorf(api.CodeFailedPrecondition, "build image %q: work dir: %v", e.Name, err)
	}
	work, err := os.MkdirTemp(base, "banger-image-build-")
	if err != nil {
		return api.HelperImageBuilt{}, api.Errorf(api.CodeInternal, "build image %q: create work dir: %v", e.Name, err)
	}
	built := filepath.Join(work, "rootfs.ext4")
	defer func() {
		// Not RemoveAll: BuildDebootstrap removes its own tree (unmounting
		// first); whatever it could not remove is left for a human.
		if err := os.Remove(built); err != nil && !errors.Is(err, fs.ErrNotExist) {
			c.Log.Error("remove built image from work dir", "path", built, "err", err)
		}
		if err := os.Remove(work); err != nil {
			c.Log.Error("remove image build work dir", "dir", work, "err", err)
		}
	}()

	c.Log.Info("image build for owner", "image", e.Name, "owner_uid", owner.UID, "owner_gid", owner.GID, "store", store.Dir, "peer_uid", c.Peer.UID)
	opts.Out, opts.WorkDir, opts.Logger, opts.Progress = built, work, c.Log, c.ProgressFunc()
	res, err := imagecat.BuildDebootstrap(ctx, e, opts)
	if err != nil {
		return api.HelperImageBuilt{}, buildError(fmt.Sprintf("build image %q", e.Name), err)
	}
	c.ProgressFunc().Stage(StageInstall, "copy image into the owner's store")
	res.Path, err = installAsOwner(ctx, built, store, e.Name, owner)
	if err != nil {
		return api.HelperImageBuilt{}, buildError(fmt.Sprintf("build image %q: install into %s", e.Name, store.Dir), err)
	}
	c.Log.Info("image installed for owner", "image", e.Name, "path", res.Path, "digest", res.Digest, "bytes", res.SizeBytes)
	return api.HelperImageBuilt{
		Name: res.Name, Source: res.Source, Digest: res.Digest,
		SizeBytes: res.SizeBytes, Path: res.Path, CreatedAt: res.CreatedAt,
	}, nil
}

// debootstrapEntry returns the embedded catalog's debootstrap entry name,
// refusing anything else before any work is done.
func debootstrapEntry(name string) (imagecat.Entry, error) {
	if err := imagecat.ValidateName(name); err != nil {
		return imagecat.Entry{}, api.Errorf(api.CodeInvalidArgument, "build image: %v", err)
	}
	cat, err := imagecat.Load()
	if err != nil {
		return imagecat.Entry{}, api.Errorf(api.CodeInternal, "build image %q: %v", name, err)
	}
	e, err := cat.Lookup(name)
	if err != nil {
		return imagecat.Entry{}, api.Errorf(api.CodeNotFound, "build image: %v", err)
	}
	if e.Kind != imagecat.KindDebootstrap {
		return imagecat.Entry{}, api.Errorf(api.CodeInvalidArgument, "build image %q: it is a %s catalog entry, not %s: pull it instead", name, e.Kind, imagecat.KindDebootstrap)
	}
	if err := e.Validate(); err != nil {
		return imagecat.Entry{}, api.Errorf(api.CodeInvalidArgument, "build image %q: %v", name, err)
	}
	return e, nil
}

// owner is who the image is built for: the helper's owner uid with its
// primary gid from the user database. An owner without a passwd entry
// (a bare uid) gets the gid the kernel reports for its own connection.
func (b *imageBuilder) owner(peer rpc.Peer) (imagecat.Owner, error) {
	o := imagecat.Owner{UID: b.ownerUID}
	u, err := user.LookupId(strconv.Itoa(b.ownerUID))
	if err == nil {
		if o.GID, err = strconv.Atoi(u.Gid); err != nil {
			return o, api.Errorf(api.CodeInternal, "build image: owner uid %d has primary gid %q: %v", b.ownerUID, u.Gid, err)
		}
		return o, nil
	}
	var unknown user.UnknownUserIdError
	if errors.As(err, &unknown) && int(peer.UID) == b.ownerUID {
		o.GID = int(peer.GID)
		return o, nil
	}
	return o, api.Errorf(api.CodeFailedPrecondition, "build image: find the primary group of owner uid %d: %v", b.ownerUID, err)
}

// rootOnlyDir resolves dir and checks that only root can change what the
// path leads to: every directory from / down is owned by root and is not
// writable by others unless sticky (as /tmp). Work under it cannot be
// redirected by another user's symlink.
func rootOnlyDir(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	resolved, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", err
	}
	for p := resolved; ; p = filepath.Dir(p) {
		fi, err := os.Lstat(p)
		if err != nil {
			return "", err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok || !fi.IsDir() {
			return "", fmt.Errorf("%s is not a directory", p)
		}
		if st.Uid != 0 {
			return "", fmt.Errorf("%s is owned by uid %d, not root", p, st.Uid)
		}
		if fi.Mode().Perm()&0o022 != 0 && fi.Mode()&fs.ModeSticky == 0 {
			return "", fmt.Errorf("%s is writable by others and not sticky", p)
		}
		if p == filepath.Dir(p) {
			return resolved, nil
		}
	}
}

// installAsOwner copies the built image src into store as the owner (see
// imageBuilder) and returns its path there. src is opened as root: it sits
// in a directory only root may enter.
func installAsOwner(ctx context.Context, src string, store imagecat.Store, name string, owner imagecat.Owner) (string, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return "", err
	}
	var dst string
	err = asOwner(owner, func() error {
		var err error
		dst, err = install(ctx, in, fi.Size(), store, name)
		return err
	})
	return dst, err
}

// install runs with the owner's credentials: it makes the image's directory
// (Store.Prepare), writes a temp file beside the rootfs through an os.Root
// on the images dir, and renames it into place. A directory it made is
// removed again on failure.
func install(ctx context.Context, in *os.File, size int64, store imagecat.Store, name string) (_ string, err error) {
	out, created, err := store.Prepare(name)
	if err != nil {
		return "", err
	}
	root, err := os.OpenRoot(store.Dir)
	if err != nil {
		return "", err
	}
	defer root.Close()
	defer func() {
		if err != nil && created {
			_ = root.RemoveAll(name)
		}
	}()
	rel, err := filepath.Rel(store.Dir, out)
	if err != nil || strings.HasPrefix(rel, "..") {
		return "", fmt.Errorf("rootfs path %s is outside %s", out, store.Dir)
	}
	suffix := make([]byte, 8)
	_, _ = rand.Read(suffix)
	tmp := filepath.Join(filepath.Dir(rel), "."+filepath.Base(rel)+".tmp-"+hex.EncodeToString(suffix))
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", err
	}
	defer func() {
		if err != nil {
			_ = root.Remove(tmp)
		}
	}()
	err = copySparse(ctx, in, f, size)
	if err == nil {
		err = f.Chmod(0o644) // by descriptor, and independent of the umask
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("copy image: %w", err)
	}
	if err := root.Rename(tmp, rel); err != nil {
		return "", err
	}
	return out, nil
}

// copySparse copies the data extents of in to out (SEEK_DATA/SEEK_HOLE), so
// the mostly empty ext4 image stays mostly unallocated in the store.
func copySparse(ctx context.Context, in, out *os.File, size int64) error {
	if err := out.Truncate(size); err != nil {
		return err
	}
	fd := int(in.Fd())
	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; {
		if err := ctx.Err(); err != nil {
			return err
		}
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) { // only a hole is left
			return nil
		}
		if err != nil {
			return fmt.Errorf("seek data: %w", err)
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("seek hole: %w", err)
		}
		if _, err := io.CopyBuffer(io.NewOffsetWriter(out, data), io.NewSectionReader(in, data, hole-data), buf); err != nil {
			return err
		}
		off = hole
	}
	return nil
}

// asOwner runs fn on a fresh OS thread whose credentials are the owner's
// (no supplementary groups, gid, uid; effective capabilities are dropped
// with the uid). The raw syscalls change this thread only, and the thread
// is never unlocked, so it exits with the goroutine instead of returning to
// the runtime's pool.
func asOwner(o imagecat.Owner, fn func() error) error {
	ch := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer func() {
			if r := recover(); r != nil {
				ch <- fmt.Errorf("panic as owner uid %d: %v", o.UID, r)
			}
		}()
		if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, 0, 0, 0); e != 0 {
			ch <- fmt.Errorf("drop supplementary groups: %w", e)
			return
		}
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, uintptr(o.GID), uintptr(o.GID), uintptr(o.GID)); e != 0 {
			ch <- fmt.Errorf("switch to owner gid %d: %w", o.GID, e)
			return
		}
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(o.UID), uintptr(o.UID), uintptr(o.UID)); e != 0 {
			ch <- fmt.Errorf("switch to owner uid %d: %w", o.UID, e)
			return
		}
		ch <- fn()
	}()
	return <-ch
}

// buildError maps a failed build to a wire code.
func buildError(doing string, err error) error {
	code := api.CodeInternal
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		code = api.CodeCanceled
	case errors.Is(err, imagecat.ErrNeedRoot), errors.Is(err, imagecat.ErrNoKeyring), errors.Is(err, fs.ErrPermission):
		code = api.CodeFailedPrecondition
	case errors.Is(err, imagecat.ErrInvalidName), errors.Is(err, imagecat.ErrInvalidPlan):
		code = api.CodeInvalidArgument
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, doing) {
		msg = doing + ": " + msg
	}
	return &api.Error{Code: code, Message: msg}
}
