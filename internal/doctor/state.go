package doctor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/buildinfo"
	"github.com/bangerdev/banger/internal/imagecat"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/rpc"
)

// daemonState is what daemon.status said, when the daemon answered.
type daemonState struct {
	status api.DaemonStatus
}

// query calls a method that takes no params on socket, within the
// doctor's call timeout.
func query[Resp any](ctx context.Context, r *runner, socket string, m api.Method[api.Empty, Resp]) (Resp, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.CallTimeout)
	defer cancel()
	return rpc.Invoke(ctx, rpc.NewClient(socket), m, api.Empty{})
}

func (r *runner) checkStore(ctx context.Context) Check {
	c := Check{Name: CheckStore}
	res, err := r.cfg.CheckStore(ctx, r.cfg.Paths.StoreFile())
	switch {
	case err != nil:
		c.Status, c.Detail = Warn, fmt.Sprintf("could not check the store: %v", err)
	case !res.WouldSucceed:
		c.Status = Fail
		c.Detail = fmt.Sprintf("%s (schema %d, this banger knows up to %d) cannot be opened: %s", res.Path, res.Current, res.Target, res.Reason)
		switch {
		case res.Current > res.Target:
			c.Fix = "a newer banger wrote this store: install that release or later (banger update), or restore the store from a backup"
		default:
			c.Fix = "restore the store from a backup, or move it aside to start empty (VM records are lost)"
		}
		// The store names the exact backup and commands (see store.damaged).
		if _, how, ok := strings.Cut(res.Reason, "banger leaves it as it is: "); ok {
			c.Fix = how
		} else if _, how, ok := strings.Cut(res.Reason, "or restore the backup taken before it migrated the store"); ok {
			c.Fix += "; the backup taken before it migrated the store" + how
		}
	case res.Current == 0:
		c.Status, c.Detail = OK, fmt.Sprintf("no store yet at %s: the daemon creates it (schema %d)", res.Path, res.Target)
	case res.Current < res.Target:
		c.Status, c.Detail = OK, fmt.Sprintf("%s at schema %d: the daemon migrates it to %d on start (checked on a copy)", res.Path, res.Current, res.Target)
	default:
		c.Status, c.Detail = OK, fmt.Sprintf("%s at schema %d (current)", res.Path, res.Current)
	}
	return c
}

// checkDaemon asks a running daemon for its status; it never starts one.
func (r *runner) checkDaemon(ctx context.Context) Check {
	c := Check{Name: CheckDaemon}
	sock := r.cfg.Paths.Socket()
	st, err := query(ctx, r, sock, api.MethodDaemonStatus)
	switch {
	case errors.Is(err, rpc.ErrNotRunning):
		c.Status, c.Detail = Warn, fmt.Sprintf("not running (socket %s)", sock)
		c.Fix = "banger daemon start (commands that need it start it themselves)"
		return c
	case err != nil:
		c.Status, c.Detail = Fail, fmt.Sprintf("the daemon at %s does not answer: %v", sock, err)
		c.Fix = fmt.Sprintf("restart it: banger daemon stop; banger daemon start (its log: %s)", r.cfg.Paths.DaemonLog())
		return c
	}
	r.daemon = &daemonState{status: st}
	c.Status = OK
	c.Detail = fmt.Sprintf("pid %d, %s, up %s (socket %s)", st.PID, st.Build.Version, time.Duration(st.UptimeSeconds*float64(time.Second)).Round(time.Second), sock)
	if mine := buildinfo.Get().Version; st.Build.Version != mine {
		c.Status = Warn
		c.Detail += fmt.Sprintf("; this banger is %s", mine)
		c.Fix = "restart the daemon to run this version: banger daemon stop; banger daemon start"
	}
	return c
}

// checkHelper asks the daemon how it reaches the root helper, or, with no
// daemon, the helper's own socket.
func (r *runner) checkHelper(ctx context.Context) Check {
	c := Check{Name: CheckHelper}
	const install = "sudo banger system install (or run bangerd as root in development)"
	if r.daemon != nil {
		h := r.daemon.status.Helper
		if h.Reachable {
			c.Status, c.Detail = OK, fmt.Sprintf("pid %d, %s (socket %s)", h.PID, h.Version, h.Socket)
			return c
		}
		c.Status, c.Detail, c.Fix = Fail, fmt.Sprintf("the daemon cannot reach it at %s: %s", h.Socket, h.Error), install
		return c
	}
	sock := r.cfg.Paths.HelperSocket()
	id, err := query(ctx, r, sock, api.MethodHelperIdentity)
	switch {
	case err == nil:
		c.Status, c.Detail = OK, fmt.Sprintf("pid %d, %s (socket %s)", id.PID, id.Build.Version, sock)
	case errors.Is(err, rpc.ErrNotRunning) && r.cfg.Geteuid() == 0:
		c.Status = Warn
		c.Detail = fmt.Sprintf("not running (socket %s); the daemon starts one when it runs as root", sock)
		c.Fix = "banger daemon start"
	case errors.Is(err, rpc.ErrNotRunning):
		c.Status = Fail
		c.Detail = fmt.Sprintf("not running (socket %s): without it banger cannot create VM network devices", sock)
		c.Fix = install
	default:
		c.Status, c.Detail, c.Fix = Fail, fmt.Sprintf("the helper at %s refused: %v", sock, err), install
	}
	return c
}

// checkHostNetwork says what banger changed on the host's network (bridge,
// taps, nftables tables, ip_forward), through the daemon or, with none, the
// root helper itself, and warns where the guest boundary is not in place.
func (r *runner) checkHostNetwork(ctx context.Context) Check {
	c := Check{Name: CheckHostNetwork}
	var st api.NetworkState
	var err error
	if r.daemon != nil {
		var ns api.NetworkStatus
		ns, err = query(ctx, r, r.cfg.Paths.Socket(), api.MethodNetworkState)
		st = ns.Network
	} else {
		st, err = query(ctx, r, r.cfg.Paths.HelperSocket(), api.MethodHelperNetworkState)
	}
	if err != nil {
		c.Status, c.Detail = Warn, fmt.Sprintf("could not read it from the root helper: %v", err)
		return c
	}
	if len(st.Changes) == 0 {
		c.Status, c.Detail = OK, "banger has changed nothing on this host's network (it does when the first VM starts)"
		return c
	}
	c.Status, c.Detail = OK, "banger changed: "+strings.Join(st.Changes, "; ")
	var problems []string
	if b := st.Bridge; b != nil && !b.IPv6Disabled {
		problems = append(problems, fmt.Sprintf("ipv6 is on on bridge %s (a guest could send router advertisements)", b.Name))
	}
	for _, t := range st.Taps {
		if t.SourceRules == 0 {
			problems = append(problems, fmt.Sprintf("tap %s has no source filter", t.Name))
		}
	}
	if len(problems) > 0 {
		c.Status = Warn
		c.Detail += "; " + strings.Join(problems, "; ")
		c.Fix = "banger system network down (stop VMs first); the next VM start rebuilds it"
	} else if st.ForwardingWas != "" {
		c.Fix = "banger system network down restores net.ipv4.ip_forward to " + st.ForwardingWas
	}
	return c
}

// artifact is the part of a kernel or image record doctor looks at.
type artifact struct {
	Name string          `json:"name"`
	VMMs []model.VMMKind `json:"vmms"`
}

func (r *runner) checkKernels(ctx context.Context) Check {
	c := Check{Name: CheckKernels}
	var kernels []artifact
	var from string
	if r.daemon != nil {
		res, err := query(ctx, r, r.cfg.Paths.Socket(), api.MethodKernelList)
		if err != nil {
			c.Status, c.Detail = Warn, fmt.Sprintf("the daemon did not list kernels: %v", err)
			return c
		}
		for _, k := range res.Kernels {
			kernels = append(kernels, artifact{Name: k.Name, VMMs: k.VMMs})
		}
		from = "the daemon"
	} else if r.cfg.OwnerState {
		c.Status, c.Detail = Warn, "the daemon is not answering, and root does not read the owner's kernel files itself"
		return c
	} else {
		var err error
		if kernels, err = readKernelDir(r.cfg.Paths.KernelsDir()); err != nil {
			c.Status, c.Detail = Warn, err.Error()
			return c
		}
		from = r.cfg.Paths.KernelsDir()
	}
	if len(kernels) == 0 {
		c.Status, c.Detail = Warn, fmt.Sprintf("no kernel (per %s): a VM needs one", from)
		c.Fix = "banger kernel pull"
		return c
	}
	names := make([]string, len(kernels))
	bootable := false
	for i, k := range kernels {
		names[i] = k.Name
		if len(k.VMMs) == 0 || slices.ContainsFunc(k.VMMs, func(v model.VMMKind) bool { return slices.Contains(r.vmms, v) }) {
			bootable = true
		}
	}
	c.Status, c.Detail = OK, strings.Join(names, ", ")
	if !bootable && len(r.vmms) > 0 {
		c.Status = Warn
		c.Detail += fmt.Sprintf(": none boots under %s, the VMM usable here", model.JoinVMMs(r.vmms, " or "))
		c.Fix = "banger kernel pull (its default kernel boots under QEMU)"
	}
	return c
}

// readKernelDir lists <dir>/<name>/kernel.json records, the layout of
// kernelcat's store. kernelcat.NewStore is not used because it creates the
// directory and prunes stale staging dirs: doctor only looks.
func readKernelDir(dir string) ([]artifact, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list kernels in %s: %w", dir, err)
	}
	var out []artifact
	for _, e := range ents {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "kernel.json"))
		if err != nil {
			continue // unfinished or foreign: not a kernel
		}
		var a artifact
		if json.Unmarshal(b, &a) != nil || a.Name != e.Name() {
			continue
		}
		out = append(out, a)
	}
	return out, nil
}

func (r *runner) checkImages(ctx context.Context) Check {
	c := Check{Name: CheckImages}
	var names []string
	var from string
	if r.daemon != nil {
		res, err := query(ctx, r, r.cfg.Paths.Socket(), api.MethodImageList)
		if err != nil {
			c.Status, c.Detail = Warn, fmt.Sprintf("the daemon did not list images: %v", err)
			return c
		}
		for _, img := range res.Images {
			names = append(names, img.Name)
		}
		from = "the daemon"
	} else if r.cfg.OwnerState {
		c.Status, c.Detail = Warn, "the daemon is not answering, and root does not read the owner's image files itself"
		return c
	} else {
		imgs, err := imagecat.Store{Dir: r.cfg.Paths.ImagesDir()}.List()
		if err != nil {
			c.Status, c.Detail = Warn, err.Error()
			return c
		}
		for _, img := range imgs {
			names = append(names, img.Name)
		}
		from = r.cfg.Paths.ImagesDir()
	}
	if len(names) == 0 {
		c.Status, c.Detail = Warn, fmt.Sprintf("no image (per %s): a VM needs one", from)
		c.Fix = "banger image build debian-bookworm (or banger image pull REF)"
		return c
	}
	c.Status, c.Detail = OK, strings.Join(names, ", ")
	return c
}
