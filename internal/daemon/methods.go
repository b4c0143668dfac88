package daemon

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/buildinfo"
	"github.com/bangerdev/banger/internal/progress"
	"github.com/bangerdev/banger/internal/rpc"
	"github.com/bangerdev/banger/internal/system"
)

// methods is the daemon's API: one explicit table of area.verb names, each
// registered through its api descriptor (request and result types, and
// whether it is tracked in the operations list). Each handler checks its
// own arguments.
func (d *Daemon) methods() *rpc.Methods {
	m := rpc.NewMethods()
	rpc.Register(m, api.MethodDaemonPing, d.ping)
	rpc.Register(m, api.MethodDaemonStatus, d.status)
	rpc.Register(m, api.MethodDaemonShutdown, d.shutdown)
	rpc.Register(m, api.MethodOperationsList, d.listOperations)
	d.vmMethods(m)
	d.artifactMethods(m)
	d.artifactMakeMethods(m)
	d.networkMethods(m)
	d.guestAccessMethods(m)
	d.sessionMethods(m)
	d.eventMethods(m)
	d.snapshotMethods(m)
	d.templateMethods(m)
	d.syncMethods(m)
	d.imagePlanMethods(m)
	if d.opts.EnableTestMethods {
		rpc.Register(m, api.MethodDebugSleep, d.debugSleep)
	}
	return m
}

func (d *Daemon) ping(ctx context.Context, c *rpc.Call, _ api.Empty) (api.Empty, error) {
	return api.Empty{}, nil
}

func (d *Daemon) status(ctx context.Context, c *rpc.Call, _ api.Empty) (api.DaemonStatus, error) {
	v, err := d.store.SchemaVersion(ctx)
	if err != nil {
		return api.DaemonStatus{}, fmt.Errorf("read store schema version: %w", err)
	}
	c.Log.DebugContext(ctx, "status requested")
	now := d.opts.Now()
	return api.DaemonStatus{
		PID:           os.Getpid(),
		Build:         buildinfo.Get(),
		StartedAt:     d.startedAt,
		UptimeSeconds: now.Sub(d.startedAt).Seconds(),
		Socket:        d.paths.Socket(),
		Home:          d.paths.State,
		Store:         d.paths.StoreFile(),
		SchemaVersion: v,
		Helper:        d.helperStatus(ctx),
		Resources:     system.Resources(),
	}, nil
}

func (d *Daemon) shutdown(ctx context.Context, c *rpc.Call, _ api.Empty) (api.Empty, error) {
	c.Log.InfoContext(ctx, "shutdown requested", "peer_uid", c.Peer.UID, "peer_pid", c.Peer.PID)
	// Stop after this reply is written: Serve waits for in-flight calls.
	time.AfterFunc(10*time.Millisecond, d.stop)
	return api.Empty{}, nil
}

func (d *Daemon) listOperations(ctx context.Context, c *rpc.Call, _ api.Empty) (api.OperationsList, error) {
	return api.OperationsList{Operations: d.ops.List()}, nil
}

// debugSleep is a slow test-only operation: it reports stages, calls the
// root helper (so tests can follow its op_id there), and honours cancel.
func (d *Daemon) debugSleep(ctx context.Context, c *rpc.Call, p api.SleepParams) (api.Empty, error) {
	if p.Milliseconds < 0 || p.Milliseconds > 60_000 {
		return api.Empty{}, api.Errorf(api.CodeInvalidArgument, "debug.sleep: milliseconds must be within 0..60000, got %d", p.Milliseconds)
	}
	c.SetTarget(p.Target)
	c.Log.InfoContext(ctx, "debug sleep", "ms", p.Milliseconds, "target", p.Target)
	if err := d.helper.Ping(ctx); err != nil {
		c.Log.InfoContext(ctx, "debug sleep: helper unreachable", "err", err)
	}
	const steps = 4
	for i := 1; i <= steps; i++ {
		c.Progress(progress.Event{Stage: "sleeping", Item: p.Target, Done: int64(i - 1), Total: steps, Unit: "steps"})
		select {
		case <-time.After(time.Duration(p.Milliseconds) * time.Millisecond / steps):
		case <-ctx.Done():
			return api.Empty{}, fmt.Errorf("debug.sleep: %w", ctx.Err())
		}
	}
	return api.Empty{}, nil
}
