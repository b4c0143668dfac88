package cli

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/policy"
	"github.com/bangerdev/banger/internal/rpc"
	"github.com/bangerdev/banger/internal/vmforward"
)

func newVMForwardCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "forward NAME GUEST_PORT[:HOST_PORT]",
		Short: "Forward a port on 127.0.0.1 to a TCP port in a VM",
		Long: `Listen on 127.0.0.1:HOST_PORT (default: the guest port; 0 picks a free one)
and carry every connection to GUEST_PORT on the guest's loopback through the
guest agent, so it works without a routable bridge. Prints the local address,
then runs until Ctrl-C. A port the VM was created with --forward-deny for
(or config.toml's [policy] forward_deny) is refused.`,
		Example: `  banger vm forward dev 8080
  banger vm forward dev 8080:18080
  banger vm forward dev 5432:0`,
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: a.completeVMNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			guest, host, err := parsePortPair(args[1])
			if err != nil {
				return &UsageError{Err: err}
			}
			return a.forward(cmd.Context(), args[0], guest, host)
		},
	}
	return cmd
}

// parsePortPair reads GUEST_PORT[:HOST_PORT]; the host port defaults to
// the guest's.
func parsePortPair(s string) (guest, host int, err error) {
	g, h, pair := strings.Cut(s, ":")
	guest, err = strconv.Atoi(g)
	if err != nil || guest < 1 || guest > 65535 {
		return 0, 0, fmt.Errorf("guest port %q is not within 1..65535", g)
	}
	host = guest
	if pair {
		host, err = strconv.Atoi(h)
		if err != nil || host < 0 || host > 65535 {
			return 0, 0, fmt.Errorf("host port %q is not within 0..65535", h)
		}
	}
	return guest, host, nil
}

func (a *app) forward(ctx context.Context, name string, guestPort, hostPort int) error {
	c, err := a.client(ctx)
	if err != nil {
		return err
	}
	vm, err := rpc.Invoke(ctx, c, api.MethodVMGet, api.VMRef{Name: name})
	if err != nil {
		return err
	}
	if vm.State != model.StateRunning {
		return fmt.Errorf("vm %q is %s, not running: start it with banger vm start %s", vm.Name, vm.State, vm.Name)
	}
	// Refuse before listening: the daemon checks the same policy on every
	// connection, but a refusal should not wait for the first one.
	pol, err := policy.FromModel(vm)
	if err != nil {
		return err
	}
	if err := pol.Forwardable(netip.AddrFrom4([4]byte{127, 0, 0, 1}), guestPort); err != nil {
		return fmt.Errorf("vm forward: %w", err)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(hostPort)))
	if err != nil {
		return fmt.Errorf("listen for forwarding: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	defer ln.Close()
	fmt.Fprintf(a.env.Stdout, "forwarding %s -> %s:%d (Ctrl-C to stop)\n", ln.Addr(), vm.Name, guestPort)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("accept forwarded connection: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := vmforward.Conn(ctx, c, conn, api.VMForward{Name: vm.Name, Port: guestPort}); err != nil && ctx.Err() == nil {
				fmt.Fprintf(a.env.Stderr, "banger: forward %s: %v\n", conn.RemoteAddr(), err)
			}
		}()
	}
}
