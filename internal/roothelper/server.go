// Package roothelper is banger's only privileged process: a small, explicit
// set of operations served on its own unix socket. Each caller is authorised
// by its kernel-reported uid (SO_PEERCRED): root and the configured owner
// only, never by pid. Every operation validates its own arguments; there is no
// shell and no generic "run this command".
package roothelper

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/buildinfo"
	"github.com/bangerdev/banger/internal/hostnat"
	"github.com/bangerdev/banger/internal/jailer"
	"github.com/bangerdev/banger/internal/rpc"
	"github.com/bangerdev/banger/internal/system"
)

// Options configure the helper.
type Options struct {
	Socket   string
	OwnerUID int
	// Managed marks a helper spawned by a development daemon: that daemon may
	// stop it (helper.shutdown). A helper under systemd is not managed.
	Managed bool
	Logger  *slog.Logger
	// NetworkConfig is the host network the helper manages (zero: defaults).
	NetworkConfig hostnat.Config
	// Ready is called once the socket accepts connections.
	Ready func()
	// Jailer is how vm.jailer.* run Firecracker's jailer (zero: defaults).
	Jailer jailer.Config
	// JailerStartTimeout bounds the wait for a jail's API socket (0: 10s).
	JailerStartTimeout time.Duration
}

// Helper is a running root helper.
type Helper struct {
	opts     Options
	log      *slog.Logger
	life     context.Context // ends when the helper stops
	shutdown context.CancelFunc
	cg       *cgroupService   // shared by vm.cgroup.adopt and vm.jailer.start
	hostnet  *hostnat.Network // the network methods' (nil: invalid config); vm.jailer.* hand taps through it
	netsvc   *netService      // tap.create asks vm.jailer.*'s records about jails' taps
}

// Run serves until ctx ends or a managed helper is asked to shut down.
func Run(ctx context.Context, opts Options) error {
	if opts.OwnerUID < 0 {
		return fmt.Errorf("start root helper: owner uid %d is invalid", opts.OwnerUID)
	}
	lg := opts.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	h := &Helper{opts: opts, log: lg, life: ctx, shutdown: cancel}

	ln, err := listen(opts.Socket, opts.OwnerUID)
	if err != nil {
		return err
	}
	defer ln.Close()
	srv := rpc.NewServer(h.methods(), h.serverOptions(lg))
	lg.Info("root helper listening", "socket", opts.Socket, "owner_uid", opts.OwnerUID, "pid", os.Getpid(), "version", buildinfo.Version)
	if opts.Ready != nil {
		opts.Ready()
	}
	err = srv.Serve(ctx, ln)
	lg.Info("root helper stopped")
	return err
}

// authorize admits root and the owner uid only.
func (h *Helper) authorize(p rpc.Peer) error {
	if p.UID == 0 || int(p.UID) == h.opts.OwnerUID {
		return nil
	}
	return fmt.Errorf("uid %d may not use the root helper (allowed: root and owner uid %d)", p.UID, h.opts.OwnerUID)
}

// methods is the helper's explicit method table.
func (h *Helper) methods() *rpc.Methods {
	m := rpc.NewMethods()
	rpc.Register(m, api.MethodHelperPing, h.ping)
	rpc.Register(m, api.MethodHelperIdentity, h.identity)
	rpc.Register(m, api.MethodHelperShutdown, h.stop)
	dns := h.dnsMethods(m)
	h.networkMethods(m, dns)
	h.imageBuildMethods(m)
	h.cgroupMethods(m)
	h.jailerMethods(m)
	return m
}

func (h *Helper) ping(ctx context.Context, c *rpc.Call, _ api.Empty) (api.Empty, error) {
	c.Log.Info("helper ping", "peer_uid", c.Peer.UID)
	return api.Empty{}, nil
}

func (h *Helper) identity(ctx context.Context, c *rpc.Call, _ api.Empty) (api.HelperIdentity, error) {
	return api.HelperIdentity{PID: os.Getpid(), Build: buildinfo.Get(), OwnerUID: h.opts.OwnerUID, Managed: h.opts.Managed,
		Resources: system.Resources()}, nil
}

func (h *Helper) stop(ctx context.Context, c *rpc.Call, _ api.Empty) (api.Empty, error) {
	if !h.opts.Managed {
		return api.Empty{}, api.Errorf(api.CodeFailedPrecondition, "this root helper is run by the service manager: stop it with systemctl stop bangerd-root.service")
	}
	c.Log.Info("root helper shutting down on request", "peer_uid", c.Peer.UID)
	h.shutdown()
	return api.Empty{}, nil
}

// listen binds the helper socket: a filesystem path (never abstract) in a
// root-owned directory only root can write, handed to the owner uid with
// mode 0600 before it is reachable, so only root and the owner can connect.
// No path is looked up after binding, so swapping directories cannot turn
// it into a chown of anything else.
func listen(path string, ownerUID int) (net.Listener, error) {
	ln, err := rpc.ListenUnix(path, rpc.ListenOptions{Mode: 0o600, UID: ownerUID, GID: -1, RootDir: true})
	if err != nil {
		return nil, fmt.Errorf("root helper socket: %w", err)
	}
	return ln, nil
}
