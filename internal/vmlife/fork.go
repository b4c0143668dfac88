package vmlife

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/guest/guestagent/agentproto"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/namegen"
	"github.com/bangerdev/banger/internal/opid"
	"github.com/bangerdev/banger/internal/policy"
	"github.com/bangerdev/banger/internal/progress"
	"github.com/bangerdev/banger/internal/sshkeys"
	"github.com/bangerdev/banger/internal/store"
	"github.com/bangerdev/banger/internal/vmdisk"
	"github.com/bangerdev/banger/internal/vmm"
)

// Forks. A clone is restored from a snapshot's memory, so until told
// otherwise it is its source: same MAC and address, host name,
// machine-id, SSH host keys, CRNG state and agent id. The host restores it
// paused on its own tap and disk copy, continues it, and the first thing it
// asks of the agent (which answers with the source's id) is
// system.reidentify: the guest reseeds its CRNG with host entropy, then
// takes the new MAC, address, host name, machine-id and SSH host keys and
// answers with its new id; only then is the clone ready. Its new host keys
// are pinned from that answer.

// MaxForkCount bounds one fork request.
const MaxForkCount = 64

// ForkRequest is vm.fork's input.
type ForkRequest struct {
	From  string `json:"from"`           // a snapshot (or template), else a running vm to snapshot first
	Name  string `json:"name,omitempty"` // the clone's name; with Count > 1 a prefix (NAME-1, NAME-2, …)
	Count int    `json:"count,omitempty"`
	// VMM and Kernel, when given, must be the snapshot's: a clone can only
	// be restored by the VMM and kernel its memory was saved from.
	VMM    model.VMMKind `json:"vmm,omitempty"`
	Kernel string        `json:"kernel,omitempty"`
	Origin string        `json:"origin,omitempty"`
	// Policy is added to the snapshot's (it only ever denies more), and
	// Isolated puts the clones on the isolated network whatever the
	// snapshot's: both are host-side, so a restored guest needs no change.
	Policy   model.VMPolicy `json:"policy,omitzero"`
	Isolated bool           `json:"isolated,omitempty"`
}

// ForkResult is what a fork made.
type ForkResult struct {
	Snapshot model.Snapshot `json:"snapshot"`
	VMs      []model.VM     `json:"vms"`
}

// Fork makes Count VMs from a snapshot (or from a running VM, snapshotted
// first). All or nothing: a clone that fails takes the ones made before it
// with it.
func (m *Manager) Fork(ctx context.Context, req ForkRequest, report progress.Func) (ForkResult, error) {
	var res ForkResult
	if req.Count == 0 {
		req.Count = 1
	}
	if req.Count < 1 || req.Count > MaxForkCount {
		return res, api.Errorf(api.CodeInvalidArgument, "--count %d is outside 1..%d", req.Count, MaxForkCount)
	}
	names, err := m.forkNames(ctx, req)
	if err != nil {
		return res, err
	}
	sn, err := m.d.Store.GetSnapshot(ctx, req.From)
	switch {
	case errors.Is(err, store.ErrNotFound):
		if _, verr := m.d.Store.GetVM(ctx, req.From); verr != nil {
			return res, api.Errorf(api.CodeNotFound, "%q is neither a snapshot nor a vm (banger snapshot ls, banger vm ls)", req.From)
		}
		// Named apart from any other fork of the same VM in the same second.
		var tail [3]byte
		if _, err := rand.Read(tail[:]); err != nil {
			return res, err
		}
		as := strings.TrimRight(fmt.Sprintf("%.40s", req.From), "-") + "-fork-" + hex.EncodeToString(tail[:])
		if sn, err = m.Snapshot(ctx, SnapshotRequest{VM: req.From, As: as}, report); err != nil {
			return res, err
		}
	case err != nil:
		return res, err
	}
	// Held until every clone is made: snapshot rm is refused meanwhile,
	// so no clone starts from a snapshot being removed. Read again under
	// the lock: a removal that won the race leaves nothing to fork.
	sl := m.snapLock(sn.ID)
	sl.RLock()
	defer sl.RUnlock()
	if sn, err = m.d.Store.GetSnapshot(ctx, sn.ID); errors.Is(err, store.ErrNotFound) {
		return res, api.Errorf(api.CodeNotFound, "snapshot %q was removed while the fork began (banger snapshot ls lists them)", req.From)
	} else if err != nil {
		return res, err
	}
	res.Snapshot = sn
	drv, k, err := m.checkForkable(ctx, sn, req)
	if err != nil {
		return res, err
	}
	report.Stage("verify", "checking the snapshot's state")
	if err := m.verifySnapshot(sn); err != nil {
		return res, err
	}
	// Clones restore side by side, as many at a time as the host has
	// CPUs (restores are CPU-bound under TCG); the first failure stops
	// new ones from starting.
	par := min(max(m.d.HostCPUs, 1), forkParallel, len(names))
	vms := make([]model.VM, len(names))
	errs := make([]error, len(names))
	sem := make(chan struct{}, par)
	var wg sync.WaitGroup
	var failed atomic.Bool
	for i, name := range names {
		sem <- struct{}{}
		if failed.Load() {
			<-sem
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			vms[i], errs[i] = m.forkOne(ctx, forkedSnapshot(sn, req), drv, k, name, req.Origin, report)
			if errs[i] != nil {
				failed.Store(true)
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		bg := context.WithoutCancel(ctx)
		for _, done := range vms {
			if done.ID == "" {
				continue
			}
			if rerr := m.Remove(bg, done.ID, true); rerr != nil {
				err = errors.Join(err, fmt.Errorf("clean up vm %q: %w", done.Name, rerr))
			}
		}
		return ForkResult{Snapshot: sn}, err
	}
	res.VMs = vms
	return res, nil
}

// forkParallel caps how many clones of one fork restore at once.
const forkParallel = 4

// forkedSnapshot is sn as the clones see it: req's policy added and, when
// asked, the isolated network. The stored snapshot is unchanged.
func forkedSnapshot(sn model.Snapshot, req ForkRequest) model.Snapshot {
	sn.Policy = policy.Merge(sn.Policy, req.Policy)
	if req.Isolated {
		sn.Network = model.NetworkIsolated
	}
	return sn
}

// forkNames picks the clones' names, all free, before anything is made.
func (m *Manager) forkNames(ctx context.Context, req ForkRequest) ([]string, error) {
	taken := func(n string) bool { _, err := m.d.Store.GetVM(ctx, n); return err == nil }
	var names []string
	for i := range req.Count {
		var n string
		switch {
		case req.Name == "":
			for range 100 {
				n = namegen.New(taken)
				if !slices.Contains(names, n) {
					break
				}
			}
		case req.Count == 1:
			n = req.Name
		default:
			n = fmt.Sprintf("%s-%d", req.Name, i+1)
		}
		if err := model.ValidateVMName(n); err != nil {
			return nil, api.Errorf(api.CodeInvalidArgument, "%v", err)
		}
		if taken(n) || slices.Contains(names, n) {
			return nil, api.Errorf(api.CodeAlreadyExists, "vm %q already exists: pick another --name or remove it (banger vm rm %s)", n, n)
		}
		names = append(names, n)
	}
	return names, nil
}

// checkForkable refuses what cannot restore the snapshot: another VMM or
// kernel, a driver without snapshots, a kernel gone.
func (m *Manager) checkForkable(ctx context.Context, sn model.Snapshot, req ForkRequest) (vmm.Driver, model.Kernel, error) {
	var k model.Kernel
	if req.VMM != "" && req.VMM != model.VMMAuto && req.VMM != sn.VMM {
		return nil, k, api.Errorf(api.CodeFailedPrecondition, "snapshot %q was taken under %s: it cannot be restored by %s (drop --vmm, or boot cold with --cold)", sn.Name, sn.VMM, req.VMM)
	}
	if req.Kernel != "" && req.Kernel != sn.Kernel {
		return nil, k, api.Errorf(api.CodeFailedPrecondition, "snapshot %q was taken with kernel %s: its memory cannot run under kernel %s (drop --kernel, or boot cold with --cold)", sn.Name, sn.Kernel, req.Kernel)
	}
	drv, ok := m.d.Drivers[sn.VMM]
	if !ok {
		return nil, k, api.Errorf(api.CodeFailedPrecondition, "snapshot %q needs vmm %q, which this daemon does not have", sn.Name, sn.VMM)
	}
	if _, ok := drv.(vmm.Snapshotter); !ok || !drv.Capabilities().SupportsSnapshots {
		return nil, k, api.Errorf(api.CodeUnimplemented, "fork snapshot %q: not supported by the %s driver yet", sn.Name, drv.Name())
	}
	if _, ok := drv.(pausedRestorer); !ok {
		return nil, k, api.Errorf(api.CodeUnimplemented, "fork snapshot %q: the %s driver cannot restore paused", sn.Name, drv.Name())
	}
	k, err := m.d.Store.GetKernel(ctx, sn.Kernel)
	if err != nil {
		return nil, k, api.Errorf(api.CodeFailedPrecondition, "snapshot %q: kernel %q is gone: pull it again (banger kernel pull %s)", sn.Name, sn.Kernel, sn.Kernel)
	}
	if err := drv.Available(ctx); err != nil {
		return nil, k, err
	}
	return drv, k, nil
}

// verifySnapshot checks every byte of the snapshot's state (and memory
// file) against its record, and that its disk is there, before anything
// is made from it. A file unchanged since it last matched (same inode,
// size, mtime and ctime) is not hashed again: see verifiedHash.
func (m *Manager) verifySnapshot(sn model.Snapshot) error {
	refuse := func(format string, a ...any) error {
		return api.Errorf(api.CodeFailedPrecondition, "snapshot %q: %s: it cannot be forked; remove it (banger snapshot rm %s) and take a new one",
			sn.Name, fmt.Sprintf(format, a...), sn.Name)
	}
	files := []struct {
		what, path string
		size       int64
		sha        string
	}{{"state file", snapshotStateFile(sn), sn.StateBytes, sn.StateSHA}}
	if sn.MemoryBytes > 0 {
		files = append(files, struct {
			what, path string
			size       int64
			sha        string
		}{"memory file", snapshotMemoryFile(sn), sn.MemoryBytes, sn.MemorySHA})
	}
	for _, f := range files {
		size, sum, err := m.verifiedHash(f.path, f.size, f.sha)
		switch {
		case err != nil:
			return refuse("%s unreadable: %v", f.what, err)
		case size != f.size:
			return refuse("%s %s is truncated or grown: %d bytes, %d were saved", f.what, f.path, size, f.size)
		case sum != f.sha:
			return refuse("%s %s is corrupt: sha256 %s, %s was saved", f.what, f.path, sum, f.sha)
		}
	}
	st, err := os.Stat(snapshotDisk(sn))
	if err != nil {
		return refuse("root disk unreadable: %v", err)
	}
	if st.Size() != sn.DiskBytes {
		return refuse("root disk %s is %d bytes, %d were saved", snapshotDisk(sn), st.Size(), sn.DiskBytes)
	}
	return nil
}

// forkState flows through one clone's chain.
type forkState struct {
	sn      model.Snapshot
	boot    *bootState
	newBoot string // the clone's own id, handed over by reidentify
	console string // the console's tail, kept by the undo for the error
}

// forkOne makes one clone; on failure nothing of it is left.
func (m *Manager) forkOne(ctx context.Context, sn model.Snapshot, drv vmm.Driver, k model.Kernel, name, origin string, report progress.Func) (model.VM, error) {
	id, err := model.NewVMID()
	if err != nil {
		return model.VM{}, err
	}
	now := m.d.Now()
	vm := model.VM{
		ID: id, Name: name, State: model.StateCreating, Image: sn.Image, Kernel: sn.Kernel, VMM: sn.VMM,
		CPUs: sn.CPUs, MemoryMiB: sn.MemoryMiB, DiskBytes: sn.DiskBytes, InitMode: sn.InitMode, Network: sn.Network,
		Origin: origin, Policy: sn.Policy, Dir: m.d.Paths.VMDir(id), CreatedAt: now, UpdatedAt: now,
	}
	ctx = opid.WithVM(ctx, name)
	unlock := m.lock(id)
	defer unlock()
	// Journalled before the first side effect: a daemon killed mid-fork
	// leaves the row, and Recover rolls this clone back whole.
	ctx, j, done, err := m.journalFor(ctx, store.OpFork, vm)
	if err != nil {
		return model.VM{}, apiError(fmt.Errorf("fork vm %q from snapshot %q: %w", name, sn.Name, err))
	}
	defer done()
	fs := &forkState{sn: sn, boot: &bootState{vm: vm, kernel: k, driver: drv, report: report}}
	chain := journaled(j, vmm.Steps[*forkState]{
		{Name: "record", Fn: m.forkRecord},
		{Name: "disk", Fn: func(ctx context.Context, fs *forkState, _ *vmm.Undo) error {
			fs.boot.report.Stage("disk", "copying the snapshot's disk for "+name)
			_, err := vmdisk.Clone(snapshotDisk(fs.sn), rootDisk(fs.boot.vm))
			return err
		}},
		{Name: "network", Fn: m.forkNetwork},
		{Name: "config", Fn: func(ctx context.Context, fs *forkState, undo *vmm.Undo) error {
			// The guest config serves a later cold boot; the running clone
			// gets its identity from reidentify.
			if err := m.stepConfig(ctx, fs.boot, undo); err != nil {
				return err
			}
			fs.newBoot = fs.boot.vm.BootID
			return nil
		}},
		{Name: "starting", Fn: func(ctx context.Context, fs *forkState, undo *vmm.Undo) error {
			return m.stepStarting(ctx, fs.boot, undo)
		}},
		{Name: "initramfs", Fn: func(ctx context.Context, fs *forkState, undo *vmm.Undo) error {
			return m.stepInitramfs(ctx, fs.boot, undo)
		}},
		{Name: "restore", Fn: m.forkRestore},
		{Name: "ready", Fn: func(ctx context.Context, fs *forkState, undo *vmm.Undo) error {
			// Until reidentified the clone answers with its source's id.
			fs.boot.vm.BootID = fs.sn.BootID
			return m.stepReady(ctx, fs.boot, undo)
		}},
		{Name: "identity", Fn: m.forkIdentity},
		{Name: "clock", Fn: func(ctx context.Context, fs *forkState, undo *vmm.Undo) error { return m.stepClock(ctx, fs.boot, undo) }},
		{Name: "running", Fn: func(ctx context.Context, fs *forkState, undo *vmm.Undo) error {
			return m.stepRunning(ctx, fs.boot, undo)
		}},
	}, forkMade)
	var undo vmm.Undo
	begin := time.Now()
	if err := chain.Run(ctx, m.d.Log, fs, &undo); err != nil {
		msg := fmt.Sprintf("fork vm %q from snapshot %q: %v", name, sn.Name, err)
		if fs.console != "" {
			msg += "\nlast console lines:\n" + fs.console
		}
		var ae *api.Error
		if errors.As(err, &ae) {
			return model.VM{}, api.Errorf(ae.Code, "%s", msg)
		}
		return model.VM{}, errors.New(msg)
	}
	undo.Discard()
	m.d.Log.InfoContext(ctx, "vm forked", "snapshot", sn.Name, "took", time.Since(begin).Round(time.Millisecond))
	return fs.boot.vm, nil
}

func (m *Manager) forkRecord(ctx context.Context, fs *forkState, undo *vmm.Undo) error {
	cs := &createState{vm: fs.boot.vm}
	if err := m.stepRecord(ctx, cs, undo); err != nil {
		return err
	}
	fs.boot.vm = cs.vm
	return m.d.Store.RecordFork(ctx, fs.boot.vm.ID, fs.sn.ID)
}

// forkNetwork gives the clone its own tap, MAC and lease; a snapshot of a
// VM without a network makes clones without one (the restored devices
// must be the saved ones).
func (m *Manager) forkNetwork(ctx context.Context, fs *forkState, undo *vmm.Undo) error {
	if fs.sn.MAC == "" {
		return nil
	}
	if m.d.Network == nil {
		return api.Errorf(api.CodeFailedPrecondition, "snapshot %q has a network interface but banger's network is unavailable (see banger doctor)", fs.sn.Name)
	}
	cs := &createState{vm: fs.boot.vm, report: fs.boot.report}
	if err := m.stepNetwork(ctx, cs, undo); err != nil {
		return err
	}
	fs.boot.vm = cs.vm
	return nil
}

// forkRestore starts the VMM from the snapshot's state, paused, then
// continues it (verifySnapshot checked the state before any clone).
func (m *Manager) forkRestore(ctx context.Context, fs *forkState, undo *vmm.Undo) error {
	s := fs.boot
	s.report.Stage("restore", "restoring "+s.vm.Name+" from snapshot "+fs.sn.Name)
	pr := s.driver.(pausedRestorer)
	if fs.sn.MemoryBytes > 0 {
		// Mapped copy-on-write: the clone never changes the file.
		s.spec.Memory = &vmm.MemoryFile{Path: snapshotMemoryFile(fs.sn)}
	}
	if err := m.launch(ctx, s, undo, func(ctx context.Context, spec vmm.Spec) (vmm.Instance, error) {
		return pr.RestorePaused(ctx, spec, snapshotStateFile(fs.sn))
	}); err != nil {
		return err
	}
	// Runs before the VMM's undo removes the console log.
	undo.Push(func(context.Context) error { fs.console = m.consoleTail(s, 15); return nil })
	if err := pr.Resume(ctx, s.inst); err != nil {
		return fmt.Errorf("continue the restored vm: %w", err)
	}
	return nil
}

// forkIdentity hands the clone its own identity and checks it took it.
func (m *Manager) forkIdentity(ctx context.Context, fs *forkState, _ *vmm.Undo) error {
	s := fs.boot
	s.report.Stage("identity", "giving "+s.vm.Name+" its own identity")
	ri, ok := s.agent.(reidentifier)
	if !ok {
		return api.Errorf(api.CodeUnimplemented, "the guest agent cannot take a new identity")
	}
	id := agentproto.Identity{BootID: fs.newBoot, Hostname: s.vm.Name, Entropy: make([]byte, 64)}
	var mid [16]byte
	if _, err := rand.Read(mid[:]); err != nil {
		return err
	}
	if _, err := rand.Read(id.Entropy); err != nil {
		return err
	}
	id.MachineID = hex.EncodeToString(mid[:])
	if fs.sn.MAC != "" {
		att, err := m.d.Network.Attach(ctx, s.vm) // idempotent: its lease
		if err != nil {
			return err
		}
		if att.Guest == nil {
			return errors.New("the clone's network attachment has no guest address")
		}
		id.OldMAC, id.MAC, id.Address, id.Gateway = fs.sn.MAC, att.MAC, att.Guest.Address, att.Guest.Gateway
	}
	rctx, cancel := context.WithTimeout(ctx, 120*time.Second)
	out, err := ri.Reidentify(rctx, id)
	cancel()
	if err != nil {
		return fmt.Errorf("give the clone its identity: %w", err)
	}
	hctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	got, err := s.agent.Health(hctx)
	cancel()
	if err != nil {
		return fmt.Errorf("agent after reidentify: %w", err)
	}
	if got != fs.newBoot {
		if len(got) > 64 {
			got = got[:64] + "…"
		}
		return fmt.Errorf("agent answered with id %q after reidentify, expected %s", got, fs.newBoot)
	}
	s.vm.BootID = fs.newBoot
	// Pinned from the agent's answer over banger's own channel: no first
	// use over the network is trusted.
	if len(out.SSHHostKeys) > 8 {
		return fmt.Errorf("the clone sent %d ssh host keys", len(out.SSHHostKeys))
	}
	for _, key := range out.SSHHostKeys {
		pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(key))
		if err != nil || len(key) > 8<<10 {
			return fmt.Errorf("the clone sent a malformed ssh host key (%d bytes)", len(key))
		}
		if _, err := m.d.Store.PinHostKey(ctx, model.HostKey{VMID: s.vm.ID, Algorithm: pk.Type(), Key: sshkeys.AuthorizedForm(pk)}); err != nil {
			return fmt.Errorf("pin the clone's ssh host key: %w", err)
		}
	}
	return nil
}
