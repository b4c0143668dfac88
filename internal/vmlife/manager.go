package vmlife

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/namegen"
	"github.com/bangerdev/banger/internal/opid"
	"github.com/bangerdev/banger/internal/policy"
	"github.com/bangerdev/banger/internal/progress"
	"github.com/bangerdev/banger/internal/store"
	"github.com/bangerdev/banger/internal/system"
	"github.com/bangerdev/banger/internal/vmm"
)

// Defaults for a VM created without explicit sizes.
const (
	DefaultKernel    = "debian-cloud"
	DefaultImage     = "debian-bookworm"
	DefaultCPUs      = 2
	DefaultMemoryMiB = 1024
	AgentPortName    = "banger.agent"
	AgentVsockPort   = 1024
	// AgentVsockCID is the guest's vsock context id (3: the first one not
	// reserved); each VM has its own vsock device, so all share it.
	AgentVsockCID = 3
)

// Manager runs VM lifecycles. It is safe for concurrent use; operations on
// one VM are serialised.
type Manager struct {
	d Deps
	// life is the daemon's lifetime: watchers and agents live under it, never
	// under a request's context.
	life context.Context

	mu    sync.Mutex
	locks map[string]*sync.Mutex // per VM id
	// snapLocks: forks hold a snapshot's read lock while they restore from
	// it; snapshot rm takes the write lock, or is refused (per snapshot id).
	snapLocks map[string]*sync.RWMutex
	// verified caches snapshot files whose hash matched, by path.
	verified map[string]fileStamp
	running  map[string]*runningVM // per VM id
}

// runningVM is what the daemon holds for a VM whose VMM runs.
type runningVM struct {
	inst     vmm.Instance
	driver   vmm.Driver
	agent    Agent
	stopping bool // a stop was asked for: the exit is expected
	cancel   context.CancelFunc
}

// New returns a manager; life bounds its watchers (the daemon's lifetime).
func New(life context.Context, d Deps) *Manager {
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.ReadyTimeout == 0 {
		d.ReadyTimeout = 3 * time.Minute
	}
	return &Manager{d: d, life: life, locks: map[string]*sync.Mutex{}, snapLocks: map[string]*sync.RWMutex{}, verified: map[string]fileStamp{}, running: map[string]*runningVM{}}
}

func (m *Manager) lock(id string) func() {
	m.mu.Lock()
	l := m.locks[id]
	if l == nil {
		l = &sync.Mutex{}
		m.locks[id] = l
	}
	m.mu.Unlock()
	l.Lock()
	return l.Unlock
}

// snapLock returns snapshot id's lock.
func (m *Manager) snapLock(id string) *sync.RWMutex {
	m.mu.Lock()
	defer m.mu.Unlock()
	l := m.snapLocks[id]
	if l == nil {
		l = &sync.RWMutex{}
		m.snapLocks[id] = l
	}
	return l
}

// CreateRequest is vm.create's input.
type CreateRequest struct {
	Name      string         `json:"name,omitempty"`
	Image     string         `json:"image,omitempty"`
	Kernel    string         `json:"kernel,omitempty"`
	VMM       model.VMMKind  `json:"vmm,omitempty"` // auto, qemu, firecracker
	CPUs      int            `json:"cpus,omitempty"`
	MemoryMiB int            `json:"memory_mib,omitempty"`
	DiskBytes int64          `json:"disk_bytes,omitempty"`
	InitMode  model.InitMode `json:"init_mode,omitempty"`
	Network   string         `json:"network,omitempty"`
	Start     bool           `json:"start,omitempty"`
	Origin    string         `json:"origin,omitempty"` // model.OriginMCP or ""
	// Policy is the VM's policy overrides, the caller's defaults merged in.
	Policy model.VMPolicy `json:"policy,omitzero"`
	// Publish forwards guest ports to 127.0.0.1 while the VM runs.
	Publish model.VMPublish `json:"publish,omitzero"`
	// Mounts are host directories to share (absolute, the client resolves
	// them); Workdir is where exec and run start commands by default.
	Mounts  []model.Mount `json:"mounts,omitempty"`
	Workdir string        `json:"workdir,omitempty"`
}

// createState flows through the create chain.
type createState struct {
	req    CreateRequest
	vm     model.VM
	image  model.Image
	kernel model.Kernel
	driver vmm.Driver
	report progress.Func
}

// Get returns a VM by name or id.
func (m *Manager) Get(ctx context.Context, ref string) (model.VM, error) {
	vm, err := m.d.Store.GetVM(ctx, ref)
	if errors.Is(err, store.ErrNotFound) {
		return vm, api.Errorf(api.CodeNotFound, "vm %q not found (banger vm ls lists them)", ref)
	}
	return vm, err
}

// List returns every VM.
func (m *Manager) List(ctx context.Context) ([]model.VM, error) { return m.d.Store.ListVMs(ctx) }

// Create validates the request, makes the VM's disk, network and record,
// and (with Start) boots it. Nothing is left behind on failure.
func (m *Manager) Create(ctx context.Context, req CreateRequest, report progress.Func) (model.VM, error) {
	s := &createState{req: req, report: report}
	if err := m.validateCreate(ctx, s); err != nil {
		return model.VM{}, err
	}
	ctx = opid.WithVM(ctx, s.vm.Name)
	unlock := m.lock(s.vm.ID)
	defer unlock()
	// Journalled before the first side effect; `vm run`'s start writes to
	// the same row, so a crash anywhere before it is ready removes it whole.
	ctx, j, done, err := m.journalFor(ctx, store.OpCreate, s.vm)
	if err != nil {
		return model.VM{}, apiError(fmt.Errorf("create vm %q: %w", s.vm.Name, err))
	}
	defer done()
	var undo vmm.Undo
	chain := journaled(j, vmm.Steps[*createState]{
		{Name: "record", Fn: m.stepRecord},
		{Name: "disk", Fn: m.stepDisk},
		{Name: "network", Fn: m.stepNetwork},
		{Name: "parked", Fn: m.stepParked},
	}, createMade)
	if err := chain.Run(ctx, m.d.Log, s, &undo); err != nil {
		return model.VM{}, apiError(fmt.Errorf("create vm %q: %w", s.vm.Name, err))
	}
	undo.Discard()
	if !req.Start {
		return s.vm, nil
	}
	vm, err := m.startLocked(ctx, s.vm, report)
	if err != nil {
		// vm run semantics: a VM that never became ready is removed whole.
		if rerr := m.removeLocked(context.WithoutCancel(ctx), vm, true); rerr != nil {
			err = errors.Join(err, fmt.Errorf("clean up vm %q: %w", s.vm.Name, rerr))
		}
		return model.VM{}, err
	}
	return vm, nil
}

// validateCreate checks everything before any resource is made.
func (m *Manager) validateCreate(ctx context.Context, s *createState) error {
	r := &s.req
	if r.Name == "" {
		r.Name = namegen.New(func(n string) bool { _, err := m.d.Store.GetVM(ctx, n); return err == nil })
	}
	if err := model.ValidateVMName(r.Name); err != nil {
		return api.Errorf(api.CodeInvalidArgument, "%v", err)
	}
	if _, err := m.d.Store.GetVM(ctx, r.Name); err == nil {
		return api.Errorf(api.CodeAlreadyExists, "vm %q already exists: pick another --name or remove it (banger vm rm %s)", r.Name, r.Name)
	}
	if r.Image == "" {
		r.Image = DefaultImage
	}
	if r.Kernel == "" {
		r.Kernel = DefaultKernel
	}
	if r.InitMode == "" {
		r.InitMode = model.InitFast
	}
	if !r.InitMode.Valid() {
		return api.Errorf(api.CodeInvalidArgument, "init mode %q is unknown: use fast or image", r.InitMode)
	}
	if r.Network == "" {
		r.Network = model.NetworkIsolated
	}
	if r.Network != model.NetworkIsolated && r.Network != model.NetworkShared {
		return api.Errorf(api.CodeInvalidArgument, "network mode %q is unknown: use isolated (reaches only the host) or shared (also reaches other shared VMs)", r.Network)
	}
	pol, err := policy.Normalize(r.Policy)
	if err != nil {
		return api.Errorf(api.CodeInvalidArgument, "vm policy: %v", err)
	}
	if err := checkPublish(r.Name, pol, r.Publish); err != nil {
		return err
	}
	img, err := m.d.Store.GetImage(ctx, r.Image)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return api.Errorf(api.CodeNotFound, "image %q not found: build or pull it first (banger image build debian-bookworm, banger image pull REF; banger image ls lists images)", r.Image)
		}
		return fmt.Errorf("look up image %q: %w", r.Image, err)
	}
	k, err := m.d.Store.GetKernel(ctx, r.Kernel)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return api.Errorf(api.CodeNotFound, "kernel %q not found: pull it first (banger kernel pull %s; banger kernel ls lists kernels)", r.Kernel, r.Kernel)
		}
		return fmt.Errorf("look up kernel %q: %w", r.Kernel, err)
	}
	drv, err := m.d.Select(ctx, r.VMM)
	if err != nil {
		return api.Errorf(api.CodeFailedPrecondition, "choose vmm %q: %v", r.VMM, err)
	}
	if !slices.Contains(k.VMMs, drv.Name()) {
		return api.Errorf(api.CodeFailedPrecondition, "kernel %q cannot be booted by %s (it boots under %v): pick another --kernel or --vmm", k.Name, drv.Name(), k.VMMs)
	}
	mounts, err := checkMounts(r, drv)
	if err != nil {
		return err
	}
	if r.CPUs == 0 {
		r.CPUs = min(DefaultCPUs, max(m.d.HostCPUs, 1))
	}
	if r.CPUs < 1 || (m.d.HostCPUs > 0 && r.CPUs > m.d.HostCPUs) {
		return api.Errorf(api.CodeInvalidArgument, "--cpus %d is outside 1..%d (the host's CPUs)", r.CPUs, m.d.HostCPUs)
	}
	if r.MemoryMiB == 0 {
		r.MemoryMiB = DefaultMemoryMiB
	}
	if r.MemoryMiB < 128 || (m.d.HostMemoryMiB > 0 && r.MemoryMiB > m.d.HostMemoryMiB) {
		return api.Errorf(api.CodeInvalidArgument, "--memory %d MiB is outside 128..%d MiB (the host's memory)", r.MemoryMiB, m.d.HostMemoryMiB)
	}
	if r.DiskBytes == 0 {
		r.DiskBytes = max(img.SizeBytes, 2<<30)
	}
	if r.DiskBytes < img.SizeBytes {
		return api.Errorf(api.CodeInvalidArgument, "--disk-size %d bytes is smaller than image %q (%d bytes): ask for at least the image's size", r.DiskBytes, img.Name, img.SizeBytes)
	}
	id, err := model.NewVMID()
	if err != nil {
		return err
	}
	now := m.d.Now()
	s.image, s.kernel, s.driver = img, k, drv
	s.vm = model.VM{
		ID: id, Name: r.Name, State: model.StateCreating, Image: img.Name, Kernel: k.Name,
		VMM: drv.Name(), CPUs: r.CPUs, MemoryMiB: r.MemoryMiB, DiskBytes: r.DiskBytes,
		InitMode: r.InitMode, Network: r.Network, Origin: r.Origin, Policy: pol, Publish: r.Publish, Dir: m.d.Paths.VMDir(id), CreatedAt: now, UpdatedAt: now,
		Mounts: mounts, Workdir: r.Workdir,
	}
	return nil
}

func (m *Manager) stepRecord(ctx context.Context, s *createState, undo *vmm.Undo) error {
	vm, err := m.d.Store.CreateVM(ctx, s.vm)
	if err != nil {
		if errors.Is(err, store.ErrExists) {
			return api.Errorf(api.CodeAlreadyExists, "vm %q already exists", s.vm.Name)
		}
		return fmt.Errorf("record vm: %w", err)
	}
	s.vm = vm
	undo.Push(func(ctx context.Context) error { return m.d.Store.DeleteVM(ctx, s.vm.ID) })
	if err := os.MkdirAll(s.vm.Dir, 0o700); err != nil {
		return fmt.Errorf("create vm directory: %w", err)
	}
	undo.Push(func(context.Context) error { return os.RemoveAll(s.vm.Dir) })
	return nil
}

func (m *Manager) stepDisk(ctx context.Context, s *createState, undo *vmm.Undo) error {
	s.report.Stage("disk", fmt.Sprintf("cloning image %s", s.image.Name))
	return makeRootDisk(ctx, s.image.Path, rootDisk(s.vm), s.vm.DiskBytes)
}

func (m *Manager) stepNetwork(ctx context.Context, s *createState, undo *vmm.Undo) error {
	if m.d.Network == nil {
		return nil
	}
	s.report.Stage("network", "attaching to the bridge")
	att, err := m.d.Network.Attach(ctx, s.vm)
	if err != nil {
		return err
	}
	undo.Push(func(ctx context.Context) error { return m.d.Network.Detach(ctx, s.vm) })
	s.vm.Tap, s.vm.MAC = att.Tap, att.MAC
	if att.Guest != nil {
		s.vm.IP = att.Guest.Address.Addr().String()
	}
	return m.save(ctx, &s.vm)
}

func (m *Manager) stepParked(ctx context.Context, s *createState, undo *vmm.Undo) error {
	vm, err := m.d.Store.SetVMState(ctx, s.vm.ID, model.StateStopped, "created")
	if err != nil {
		return err
	}
	s.vm = vm
	return nil
}

func (m *Manager) save(ctx context.Context, vm *model.VM) error {
	vm.UpdatedAt = m.d.Now()
	out, err := m.d.Store.UpdateVM(ctx, *vm)
	if err != nil {
		return fmt.Errorf("save vm %q: %w", vm.Name, err)
	}
	*vm = out
	return nil
}

// ConsoleLog is where a VM's serial console is kept.
func ConsoleLog(vm model.VM) string { return filepath.Join(vm.Dir, "console.log") }

func rootDisk(vm model.VM) string     { return filepath.Join(vm.Dir, "root.ext4") }
func configDisk(vm model.VM) string   { return filepath.Join(vm.Dir, "config.img") }
func instanceFile(vm model.VM) string { return filepath.Join(vm.Dir, "instance.json") }

func writeInstance(vm model.VM, inst vmm.Instance) error {
	b, err := json.MarshalIndent(inst, "", "  ")
	if err != nil {
		return err
	}
	if err := system.WriteFileAtomic(instanceFile(vm), b, 0o600); err != nil {
		return fmt.Errorf("record vmm instance: %w", err)
	}
	return nil
}

func readInstance(vm model.VM) (vmm.Instance, error) {
	var inst vmm.Instance
	b, err := os.ReadFile(instanceFile(vm))
	if err != nil {
		return inst, err
	}
	return inst, json.Unmarshal(b, &inst)
}

// newBootID is a random (version 4) UUID, as the guest's boot_id.
func newBootID() string { return uuid.NewString() }
