// Package daemon is bangerd, the owner daemon: it owns the store and all
// per-user state, serves the JSON API on the owner's socket, threads an op_id
// through every request, and lists in-flight operations.
package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/bangerdev/banger/internal/config"
	"github.com/bangerdev/banger/internal/events"
	"github.com/bangerdev/banger/internal/guestsync"
	"github.com/bangerdev/banger/internal/kvmprobe"
	"github.com/bangerdev/banger/internal/opstate"
	"github.com/bangerdev/banger/internal/paths"
	"github.com/bangerdev/banger/internal/roothelper"
	"github.com/bangerdev/banger/internal/rpc"
	"github.com/bangerdev/banger/internal/store"
	"github.com/bangerdev/banger/internal/vmforward"
	"github.com/bangerdev/banger/internal/vmlife"
)

// Options configure the daemon.
type Options struct {
	Paths  paths.User
	Logger *slog.Logger
	// Executable is the bangerd binary, used to spawn the root helper.
	Executable string
	// Debug is passed on to a spawned root helper.
	Debug bool
	// EnableTestMethods registers test-only methods (debug.sleep).
	EnableTestMethods bool
	// Ready is called once the socket accepts requests.
	Ready func()
	Now   func() time.Time
}

// Daemon is a running owner daemon.
type Daemon struct {
	opts      Options
	log       *slog.Logger
	paths     paths.User
	store     *store.Store
	ops       *opstate.Registry
	helper    *roothelper.Client
	helperMu  sync.Mutex // guards helperPID and helperDone
	helperPID int        // set when this daemon spawned the helper (dev mode)
	// helperDone is set once the daemon stops its helper: no restart after.
	helperDone bool
	vms        *vmlife.Manager
	cfg        config.Config // the owner's config.toml, read at start
	dns        dnsState      // last table pushed to the helper's VM DNS
	kvm        kvmprobe.Result
	startedAt  time.Time
	stop       context.CancelFunc
	mcpMu      sync.Mutex           // serialises MCP creates (see mcpCreate)
	events     *events.Bus          // lifecycle events (banger events, vm ls -w)
	pub        *vmforward.Publisher // published ports (--publish-all, -p)
	syncCache  *guestsync.Cache     // guests' last listings for vm sync
}

// Run starts the daemon and serves until ctx ends or daemon.shutdown is
// called. Everything it made (socket, pid file, lock, a helper it spawned) is
// released on the way out.
func Run(ctx context.Context, opts Options) (err error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	lg := opts.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	p := opts.Paths
	if err := p.Ensure(); err != nil {
		return err
	}
	lock, err := acquireLock(p.LockFile(), p.PidFile())
	if err != nil {
		return err
	}
	defer lock.release()
	if err := writePidFile(p.PidFile()); err != nil {
		return err
	}
	defer os.Remove(p.PidFile())

	st, err := store.Open(ctx, p.StoreFile(), lg)
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	defer st.Close()

	cfg, err := config.Load(p.ConfigFile())
	if err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	d := &Daemon{
		cfg:  cfg,
		opts: opts, log: lg, paths: p, store: st,
		ops:       opstate.New(opts.Now),
		helper:    roothelper.NewClient(p.HelperSocket()),
		startedAt: opts.Now(),
		syncCache: guestsync.NewCache(),
		stop:      cancel,
	}
	d.events = events.New(opts.Now, 0)
	st.ObserveVMs(d.observeVM)
	d.ensureHelper(ctx)
	defer d.stopManagedHelper()
	go d.superviseHelper(ctx)
	d.vms = d.newVMManager(ctx)
	go d.syncDNS(ctx)
	defer d.vms.Close() // VMs keep running: the next daemon re-adopts them
	// Operations a crash cut short first (finished or rolled back), then
	// the VMs that still run.
	d.sweepArtifacts(ctx)
	if err := d.vms.Recover(ctx); err != nil {
		lg.Error("recover interrupted operations", "err", err)
	}
	if err := d.vms.Adopt(ctx); err != nil {
		lg.Error("re-adopt vms", "err", err)
	}
	d.startPublishing(ctx)
	defer d.pub.Close()

	ln, err := listenOwnerSocket(p.Socket())
	if err != nil {
		return err
	}
	defer os.Remove(p.Socket())

	srv := rpc.NewServer(d.methods(), rpc.ServerOptions{
		Logger:    lg,
		Authorize: authorizeOwner,
		Hooks:     rpc.Hooks{Start: d.trackOperation},
		// Requests are small; data frames carry 64 KiB of bytes at most.
		// Every stream (exec, logs -f, ports -w) and every connection
		// through vm forward holds a connection: room for plenty.
		MaxRequestBytes: 4 << 20,
		MaxFrameBytes:   1 << 20,
		RequestTimeout:  10 * time.Second,
		MaxConns:        512,
	})
	lg.Info("bangerd listening", "socket", p.Socket(), "pid", os.Getpid(), "store", p.StoreFile())
	if opts.Ready != nil {
		opts.Ready()
	}
	err = srv.Serve(ctx, ln)
	lg.Info("bangerd stopped")
	return err
}

// authorizeOwner admits the daemon's own uid and root. The socket's 0600 mode
// already keeps others out; this is the second lock on the door.
func authorizeOwner(p rpc.Peer) error {
	if p.UID == 0 || int(p.UID) == os.Getuid() {
		return nil
	}
	return fmt.Errorf("uid %d may not use this daemon (owner uid %d)", p.UID, os.Getuid())
}

// trackOperation lists a call in the operations list while it runs, when
// its method's descriptor says it is tracked (instant reads are not).
func (d *Daemon) trackOperation(c *rpc.Call) func(error) {
	if !c.Tracked {
		return nil
	}
	op := d.ops.Start(c.OpID, c.Method, "")
	c.Observe(op)
	c.Log.Info("operation started", "uid", c.Peer.UID)
	start := time.Now()
	return func(err error) {
		op.End()
		if err != nil {
			c.Log.Info("operation failed", "err", err, "duration", time.Since(start))
			return
		}
		c.Log.Info("operation finished", "duration", time.Since(start))
	}
}

// listenOwnerSocket binds the API socket with mode 0600 (owner only). The
// daemon holds the state lock, so an existing socket nobody answers on is
// stale and replaced.
func listenOwnerSocket(path string) (net.Listener, error) {
	return rpc.ListenUnix(path, rpc.ListenOptions{Mode: 0o600, UID: -1, GID: -1})
}
