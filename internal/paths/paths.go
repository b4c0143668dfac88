// Package paths resolves every location banger reads or writes: the per-user
// state (socket, store, logs, images, kernels, VMs) and the system-install
// layout. Nothing else in banger builds a path from scratch.
package paths

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// EnvHome moves all per-user state under one directory, so users and tests can
// run isolated instances side by side.
const EnvHome = "BANGER_HOME"

// EnvSystemRoot prefixes every system-install path. It exists for tests, which
// install and update banger under a scratch directory instead of /.
const EnvSystemRoot = "BANGER_SYSTEM_ROOT"

// User is the per-user layout used by the owner daemon and the CLI.
type User struct {
	State   string // store, locks, VM dirs
	Data    string // images and kernels
	Cache   string // layer blobs, initramfs cache, downloads in flight
	Config  string // config.toml, ssh key, ssh_config include
	Runtime string // sockets and pid files
	// Helper is the root helper's socket when it lives outside Runtime:
	// a system install's helper listens in the root-owned System.RunDir,
	// never in a directory the owner can write. "" means Runtime's.
	Helper string
}

// Getenv is os.Getenv's shape, injected so resolution is testable.
type Getenv func(string) string

// ResolveUser resolves the per-user layout from BANGER_HOME, else from the XDG
// base directories under the user's home.
func ResolveUser(getenv Getenv) (User, error) {
	if h := getenv(EnvHome); h != "" {
		abs, err := filepath.Abs(h)
		if err != nil {
			return User{}, fmt.Errorf("resolve %s=%q: %w", EnvHome, h, err)
		}
		u := User{
			State:   filepath.Join(abs, "state"),
			Data:    filepath.Join(abs, "data"),
			Cache:   filepath.Join(abs, "cache"),
			Config:  filepath.Join(abs, "config"),
			Runtime: filepath.Join(abs, "run"),
		}
		// The system install's owner daemon (and a CLI pointed at its
		// home) talks to the helper in the root-owned run directory.
		if sys := SystemFromEnv(getenv); abs == filepath.Clean(sys.Home()) {
			u.Helper = sys.HelperSocket()
		}
		return u, nil
	}
	home := getenv("HOME")
	if home == "" {
		return User{}, errors.New("resolve banger directories: neither BANGER_HOME nor HOME is set")
	}
	xdg := func(key, def string) string {
		if v := getenv(key); v != "" && filepath.IsAbs(v) {
			return filepath.Join(v, "banger")
		}
		return filepath.Join(home, def, "banger")
	}
	u := User{
		State:  xdg("XDG_STATE_HOME", ".local/state"),
		Data:   xdg("XDG_DATA_HOME", ".local/share"),
		Cache:  xdg("XDG_CACHE_HOME", ".cache"),
		Config: xdg("XDG_CONFIG_HOME", ".config"),
	}
	if rt := getenv("XDG_RUNTIME_DIR"); rt != "" && filepath.IsAbs(rt) {
		u.Runtime = filepath.Join(rt, "banger")
	} else {
		u.Runtime = filepath.Join(u.State, "run")
	}
	return u, nil
}

// FromEnv resolves the per-user layout from the process environment.
func FromEnv() (User, error) { return ResolveUser(os.Getenv) }

// Ensure creates every directory of the layout with mode 0700.
func (u User) Ensure() error {
	for _, d := range []string{u.State, u.Data, u.Cache, u.Config, u.Runtime, u.LogDir(), u.VMsDir(), u.ImagesDir(), u.KernelsDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("create state directory %s: %w", d, err)
		}
	}
	return nil
}

func (u User) Socket() string { return filepath.Join(u.Runtime, "bangerd.sock") }
func (u User) HelperSocket() string {
	if u.Helper != "" {
		return u.Helper
	}
	return filepath.Join(u.Runtime, "root-helper.sock")
}
func (u User) PidFile() string { return filepath.Join(u.Runtime, "bangerd.pid") }
func (u User) HelperPidFile() string {
	return filepath.Join(u.Runtime, "root-helper.pid")
}
func (u User) LockFile() string       { return filepath.Join(u.State, "bangerd.lock") }
func (u User) StoreFile() string      { return filepath.Join(u.State, "banger.db") }
func (u User) LogDir() string         { return filepath.Join(u.State, "logs") }
func (u User) DaemonLog() string      { return filepath.Join(u.LogDir(), "bangerd.log") }
func (u User) HelperLog() string      { return filepath.Join(u.LogDir(), "root-helper.log") }
func (u User) VMsDir() string         { return filepath.Join(u.State, "vms") }
func (u User) VMDir(id string) string { return filepath.Join(u.VMsDir(), id) }
func (u User) ImagesDir() string      { return filepath.Join(u.Data, "images") }
func (u User) KernelsDir() string     { return filepath.Join(u.Data, "kernels") }
func (u User) SnapshotsDir() string   { return filepath.Join(u.Data, "snapshots") }
func (u User) LayersDir() string      { return filepath.Join(u.Cache, "layers") }
func (u User) InitramfsDir() string   { return filepath.Join(u.Cache, "initramfs") }
func (u User) DownloadsDir() string   { return filepath.Join(u.Cache, "downloads") }
func (u User) ConfigFile() string     { return filepath.Join(u.Config, "config.toml") }
func (u User) SSHDir() string         { return filepath.Join(u.Config, "ssh") }

// System is the system-install layout from the seeds. Root is "/" in
// production and a scratch directory in tests (BANGER_SYSTEM_ROOT).
type System struct{ Root string }

// SystemFromEnv honours BANGER_SYSTEM_ROOT, defaulting to "/".
func SystemFromEnv(getenv Getenv) System {
	if r := getenv(EnvSystemRoot); r != "" {
		return System{Root: r}
	}
	return System{Root: "/"}
}

func (s System) join(p string) string { return filepath.Join(s.Root, p) }

func (s System) BangerBin() string  { return s.join("/usr/local/bin/banger") }
func (s System) BangerdBin() string { return s.join("/usr/local/bin/bangerd") }
func (s System) AgentBin() string   { return s.join("/usr/local/lib/banger/banger-vsock-agent") }

// HelperBin is the root helper: not a command users run, so it lives with
// the agent rather than on PATH.
func (s System) HelperBin() string   { return s.join("/usr/local/lib/banger/banger-helper") }
func (s System) InstallMeta() string { return s.join("/etc/banger/install.toml") }
func (s System) UnitDir() string     { return s.join("/etc/systemd/system") }
func (s System) StagingDir() string  { return s.join("/var/lib/banger/update-staging") }

// RunDir and LogDir hold what the privileged side creates: the helper's
// socket, the supervisor's pid files, the ip_forward value found before
// banger changed it (RunDir, cleared at boot like /run), the helper's log
// (LogDir). Both are root-owned, so the owner cannot plant links or swap
// directories in them.
func (s System) RunDir() string       { return s.join("/run/banger") }
func (s System) LogDir() string       { return s.join("/var/log/banger") }
func (s System) HelperSocket() string { return filepath.Join(s.RunDir(), "root-helper.sock") }
func (s System) HelperLog() string    { return filepath.Join(s.LogDir(), "root-helper.log") }

// Home is BANGER_HOME for the system-installed owner daemon: its state lives
// in /var/lib/banger/home, owned by the owner user.
func (s System) Home() string { return s.join("/var/lib/banger/home") }

// User is the per-user layout of the system-installed owner daemon.
func (s System) User() User {
	u, _ := ResolveUser(func(k string) string {
		switch k {
		case EnvHome:
			return s.Home()
		case EnvSystemRoot:
			return s.Root
		}
		return ""
	})
	return u
}
