// Command banger-vsock-agent is the one static binary banger puts in every
// guest. As PID 1 (/init in the initramfs) it boots the guest
// (internal/guest/guestinit); otherwise it is the agent server, started by that
// init (fast mode) or by systemd (image mode):
//
//	banger-vsock-agent serve --boot-id ID --transport virtio-serial --port-name banger.agent
//	banger-vsock-agent serve --boot-id ID --transport vsock --vsock-port 1024
//
// It must be built with CGO_ENABLED=0: the initramfs has no libc.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/buildinfo"
	"github.com/bangerdev/banger/internal/guest/guestagent/agentproto"
	"github.com/bangerdev/banger/internal/guest/guestagent/agentserver"
	"github.com/bangerdev/banger/internal/guest/guestinit"
	"github.com/bangerdev/banger/internal/model"
)

func main() {
	if os.Getpid() == 1 {
		guestinit.Run(guestinit.Options{Version: buildinfo.Version})
		return // not reached: PID 1 ends by powering off
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && (args[0] == "--version" || args[0] == "version") {
		fmt.Fprintln(stdout, buildinfo.Get())
		return 0
	}
	if len(args) == 0 || args[0] != "serve" {
		fmt.Fprintln(stderr, "usage: banger-vsock-agent serve --boot-id ID --transport virtio-serial|vsock [--port-name NAME | --vsock-port PORT] [--init-mode fast|image]")
		return 2
	}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		bootID    = fs.String("boot-id", "", "this boot's id, reported by health")
		transport = fs.String("transport", string(model.TransportVirtioSerial), "agent channel: virtio-serial or vsock")
		portName  = fs.String("port-name", "", "virtio-serial port name")
		vsockPort = fs.Uint("vsock-port", agentproto.DefaultVsockPort, "vsock port")
		initMode  = fs.String("init-mode", string(model.InitFast), "who is PID 1: fast (banger-init) or image (the image's init)")
		debug     = fs.Bool("debug", false, "log debug detail")
	)
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if !model.InitMode(*initMode).Valid() {
		fmt.Fprintf(stderr, "banger-vsock-agent: --init-mode %q: want %s or %s\n", *initMode, model.InitFast, model.InitImage)
		return 2
	}
	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})).With("component", "agent")

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	ident := &guestinit.Identity{Log: log, InitMode: model.InitMode(*initMode)}
	srv := agentserver.NewServer(agentserver.ServerOptions{
		Logger:    log,
		BootID:    *bootID,
		Version:   buildinfo.Version,
		StartTime: bootTime(),
		Poweroff:  poweroff(model.InitMode(*initMode)),
		SetClock:  setClock,
		// Snapshots and clones (agentproto/identity.go, agentserver/identity.go).
		Freeze:     ident.Freeze,
		Thaw:       ident.Thaw,
		Reidentify: ident.Reidentify,
	})
	var err error
	switch model.AgentTransport(*transport) {
	case model.TransportVirtioSerial:
		if *portName == "" {
			err = errors.New("--port-name is required with --transport virtio-serial")
			break
		}
		err = srv.ServePort(ctx, guestinit.VirtioPortOpener(*portName))
	case model.TransportVsock:
		ln, lerr := agentserver.ListenVsock(uint32(*vsockPort))
		if lerr != nil {
			err = lerr
			break
		}
		err = srv.Serve(ctx, ln) // closes ln
	default:
		err = fmt.Errorf("unknown --transport %q: want %s or %s", *transport, model.TransportVirtioSerial, model.TransportVsock)
	}
	if err != nil {
		fmt.Fprintf(stderr, "banger-vsock-agent: %v\n", err)
		return 1
	}
	return 0
}

// poweroff asks PID 1 for an orderly power-off: banger-init shuts down on
// SIGTERM, systemd on SIGRTMIN+4.
func poweroff(mode model.InitMode) func(context.Context) error {
	sig := unix.SIGTERM
	if mode == model.InitImage {
		sig = syscall.Signal(34 + 4) // SIGRTMIN+4: systemd's poweroff
	}
	return func(context.Context) error { return unix.Kill(1, sig) }
}

// setClock steps CLOCK_REALTIME (the agent runs as root in the guest).
func setClock(t time.Time) error {
	ts := unix.NsecToTimespec(t.UnixNano())
	return unix.ClockSettime(unix.CLOCK_REALTIME, &ts)
}

// bootTime is when the guest kernel started, so health reports the VM's
// uptime rather than this process's.
func bootTime() time.Time {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return time.Now()
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return time.Now()
	}
	secs, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return time.Now()
	}
	return time.Now().Add(-time.Duration(secs * float64(time.Second)))
}
