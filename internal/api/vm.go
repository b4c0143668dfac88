package api

import (
	"encoding/json"

	"github.com/bangerdev/banger/internal/model"
)

// VM, kernel and image methods of the owner daemon.
var (
	MethodVMCreate  = Method[VMCreate, model.VM]{Name: "vm.create", Tracked: true}
	MethodVMStart   = Method[VMRef, model.VM]{Name: "vm.start", Tracked: true}
	MethodVMStop    = Method[VMStop, model.VM]{Name: "vm.stop", Tracked: true}
	MethodVMRestart = Method[VMStop, model.VM]{Name: "vm.restart", Tracked: true}
	MethodVMRemove  = Method[VMRemove, Empty]{Name: "vm.rm", Tracked: true}
	MethodVMList    = Method[Empty, VMList]{Name: "vm.list"}
	MethodVMGet     = Method[VMRef, model.VM]{Name: "vm.get"}
	MethodVMLogs    = Method[VMLogs, Empty]{Name: "vm.logs"}                       // KindLog frames
	MethodVMExec    = Method[VMExec, VMExecResult]{Name: "vm.exec", Tracked: true} // data frames (kinds below)
	MethodVMSuspend = Method[VMRef, model.VM]{Name: "vm.suspend", Tracked: true}   // the VM, suspended
	MethodVMResume  = Method[VMRef, model.VM]{Name: "vm.resume", Tracked: true}    // the VM, running

	MethodKernelPull   = Method[KernelPull, model.Kernel]{Name: "kernel.pull", Tracked: true}
	MethodKernelImport = Method[KernelImport, model.Kernel]{Name: "kernel.import", Tracked: true}
	MethodKernelList   = Method[Empty, KernelList]{Name: "kernel.list"}
	MethodKernelGet    = Method[ArtifactRef, model.Kernel]{Name: "kernel.get"}
	MethodKernelRemove = Method[ArtifactRef, Empty]{Name: "kernel.rm", Tracked: true}

	MethodImageBuild  = Method[ImageBuild, model.Image]{Name: "image.build", Tracked: true}
	MethodImagePull   = Method[ImagePull, model.Image]{Name: "image.pull", Tracked: true}
	MethodImageImport = Method[ImageImport, model.Image]{Name: "image.import", Tracked: true}
	MethodImageList   = Method[Empty, ImageList]{Name: "image.list"}
	MethodImageGet    = Method[ArtifactRef, model.Image]{Name: "image.get"}
	MethodImageRemove = Method[ArtifactRef, Empty]{Name: "image.rm", Tracked: true}
)

// VMCreate is vm.create's params. Zero values take defaults.
type VMCreate struct {
	Name      string         `json:"name,omitempty"`
	Image     string         `json:"image,omitempty"`
	Kernel    string         `json:"kernel,omitempty"`
	VMM       model.VMMKind  `json:"vmm,omitempty"` // auto, qemu, firecracker
	CPUs      int            `json:"cpus,omitempty"`
	MemoryMiB int            `json:"memory_mib,omitempty"`
	DiskBytes int64          `json:"disk_bytes,omitempty"`
	InitMode  model.InitMode `json:"init_mode,omitempty"` // fast (default) or image
	Network   string         `json:"network,omitempty"`   // isolated (default) or shared
	Start     bool           `json:"start,omitempty"`     // boot and wait until ready
	// Origin "mcp" puts the request under config.toml's [mcp] limits,
	// which the daemon enforces.
	Origin string `json:"origin,omitempty"`
	// Policy adds to config.toml's [policy] defaults (never removes).
	Policy model.VMPolicy `json:"policy,omitzero"`
	// Publish forwards guest ports to 127.0.0.1 while the VM runs.
	Publish model.VMPublish `json:"publish,omitzero"`
	// Mounts share host directories (absolute paths; QEMU only); Workdir
	// is where vm exec and vm run start commands without -w (--workspace).
	Mounts  []model.Mount `json:"mounts,omitempty"`
	Workdir string        `json:"workdir,omitempty"`
}

// VMRef names one VM (by name or id).
type VMRef struct {
	Name string `json:"name"`
}

// VMStop is vm.stop's and vm.restart's params.
type VMStop struct {
	Name           string `json:"name"`
	Force          bool   `json:"force,omitempty"`
	TimeoutSeconds int    `json:"timeout_seconds,omitempty"`
}

// VMRemove is vm.rm's params.
type VMRemove struct {
	Name  string `json:"name"`
	Force bool   `json:"force,omitempty"`
}

// VMList is vm.list's result.
type VMList struct {
	VMs []model.VM `json:"vms"`
}

// VMLogs is vm.logs's params: the serial console, optionally followed.
type VMLogs struct {
	Name   string `json:"name"`
	Follow bool   `json:"follow,omitempty"`
	Lines  int    `json:"lines,omitempty"` // 0: all that is kept
}

// VMExec is vm.exec's params; stdin, stdout, stderr, signals and window
// sizes travel as data frames (kinds below), the exit code in the result.
type VMExec struct {
	Name  string   `json:"name"`
	Argv  []string `json:"argv"`
	Env   []string `json:"env,omitempty"`
	Dir   string   `json:"dir,omitempty"`
	TTY   bool     `json:"tty,omitempty"`
	Stdin bool     `json:"stdin,omitempty"` // the client streams stdin
	Rows  uint16   `json:"rows,omitempty"`
	Cols  uint16   `json:"cols,omitempty"`
	// TimeoutSeconds ends the command (and the call) after that long; 0
	// means none, except for Origin "mcp", where [mcp] default_timeout
	// applies and caps it.
	TimeoutSeconds int    `json:"timeout_seconds,omitempty"`
	Origin         string `json:"origin,omitempty"`
	// Detach starts a session the guest agent keeps running: the result
	// is SessionStarted at once (see vm.attach).
	Detach bool `json:"detach,omitempty"`
}

// Data frame kinds of streaming methods.
const (
	KindStdin = "stdin" // client → daemon: []byte
	// KindStdinEOF ends stdin; the stream stays open for signals and resizes
	// (the rpc-level end of input would close it for them too).
	KindStdinEOF = "stdin_eof"
	KindStdout   = "stdout" // daemon → client: []byte
	KindStderr   = "stderr" // daemon → client: []byte
	KindSignal   = "signal" // client → daemon: signal number
	KindResize   = "resize" // client → daemon: WinSize
	KindLog      = "log"    // daemon → client: []byte of console output
)

// WinSize is a terminal size.
type WinSize struct {
	Rows uint16 `json:"rows"`
	Cols uint16 `json:"cols"`
}

// ExecResult is vm.exec's result (without Detach) and vm.attach's.
type ExecResult struct {
	ExitCode int `json:"exit_code"`
}

// VMExecResult is vm.exec's result: the exit code, or with Detach the
// session started (then Session is set). On the wire it is ExecResult or
// SessionStarted, as before the two were one type.
type VMExecResult struct {
	ExitCode int
	Session  *SessionStarted
}

// MarshalJSON writes the form the request asked for.
func (r VMExecResult) MarshalJSON() ([]byte, error) {
	if r.Session != nil {
		return json.Marshal(*r.Session)
	}
	return json.Marshal(ExecResult{ExitCode: r.ExitCode})
}

// UnmarshalJSON reads either form: a session id means a detached start.
func (r *VMExecResult) UnmarshalJSON(b []byte) error {
	var w struct {
		ExecResult
		SessionStarted
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*r = VMExecResult{ExitCode: w.ExitCode}
	if w.ID != "" {
		s := w.SessionStarted
		r.Session = &s
	}
	return nil
}

// KernelPull is kernel.pull's params.
type KernelPull struct {
	Name string `json:"name,omitempty"` // catalog entry; default debian-cloud
}

// KernelImport is kernel.import's params.
type KernelImport struct {
	Name    string `json:"name"`
	Path    string `json:"path"`
	Modules string `json:"modules,omitempty"`
}

// KernelList is kernel.list's result.
type KernelList struct {
	Kernels []model.Kernel `json:"kernels"`
}

// ArtifactRef names a kernel or an image.
type ArtifactRef struct {
	Name  string `json:"name"`
	Force bool   `json:"force,omitempty"`
}

// ImageBuild is image.build's params: a catalog entry built locally.
type ImageBuild struct {
	Name string `json:"name"`
}

// ImagePull is image.pull's params.
type ImagePull struct {
	Ref      string `json:"ref"`
	Name     string `json:"name,omitempty"`
	Platform string `json:"platform,omitempty"`
	Insecure bool   `json:"insecure,omitempty"` // plain HTTP registry (127.0.0.1 tests)
}

// ImageImport is image.import's params.
type ImageImport struct {
	Name string `json:"name"`
	Path string `json:"path"` // rootfs directory, tar, or ext4 file
}

// ImageList is image.list's result.
type ImageList struct {
	Images []model.Image `json:"images"`
}
