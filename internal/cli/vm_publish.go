package cli

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/events"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/termsafe"
)

// publishFlags are create/run's --publish-all and -p.
type publishFlags struct {
	all   bool
	ports []string
}

// addPublish registers the create/run flags kept out of vm.go's shared
// block: publishing, and name completion for --image and --kernel.
func (f *createFlags) addPublish(a *app, cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.BoolVar(&f.pub.all, "publish-all", false, "forward every TCP port the guest listens on to 127.0.0.1 on the host while the VM runs (same port, or the next free one)")
	fl.StringArrayVarP(&f.pub.ports, "publish", "p", nil, "forward guest port GUEST to 127.0.0.1:HOST while the VM runs: HOST:GUEST or GUEST (repeatable)")
	_ = cmd.RegisterFlagCompletionFunc("image", a.completeNames("image"))
	_ = cmd.RegisterFlagCompletionFunc("kernel", a.completeNames("kernel"))
}

func (f publishFlags) parse() (model.VMPublish, error) {
	out := model.VMPublish{All: f.all}
	for _, s := range f.ports {
		m, err := parsePublish(s)
		if err != nil {
			return out, &UsageError{Err: err}
		}
		out.Ports = append(out.Ports, m)
	}
	if err := out.Validate(); err != nil {
		return out, &UsageError{Err: fmt.Errorf("--publish: %w", err)}
	}
	return out, nil
}

// parsePublish reads HOST:GUEST or GUEST (host port = guest port).
func parsePublish(s string) (model.PortMap, error) {
	bad := fmt.Errorf("--publish %q: want HOST:GUEST or GUEST ports, e.g. -p 8080:80 or -p 3000 (the host side is always 127.0.0.1)", s)
	parts := strings.Split(s, ":")
	if len(parts) > 2 {
		return model.PortMap{}, bad
	}
	nums := make([]int, len(parts))
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return model.PortMap{}, bad
		}
		nums[i] = n
	}
	if len(nums) == 1 {
		return model.PortMap{Host: nums[0], Guest: nums[0]}, nil
	}
	return model.PortMap{Host: nums[0], Guest: nums[1]}, nil
}

// announcePublished prints the VM's published ports on stderr as they come
// and go (publish-all follows the guest's listeners), until stop is called.
func (a *app) announcePublished(ctx context.Context, name string) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		seen := map[string]bool{}
		say := func(s string) {
			if !seen[s] {
				seen[s] = true
				fmt.Fprintf(a.env.Stderr, "banger: %s\n", termsafe.Line(s))
			}
		}
		_ = a.watchEvents(ctx, api.EventsWatch{VM: name}, func() error {
			vm, err := call(ctx, a, api.MethodVMGet, api.VMRef{Name: name})
			if err != nil {
				return nil // the announcement is a courtesy; the run goes on
			}
			for _, f := range vm.Forwards {
				s := fmt.Sprintf("published %s → guest port %d", f.Host, f.GuestPort)
				if f.Note != "" {
					s += " (" + f.Note + ")"
				}
				say(s)
			}
			return nil
		}, func(ev api.Event) error {
			switch ev.Kind {
			case events.KindPortPublished:
				say("published " + ev.Reason)
			case events.KindPortUnpublished:
				delete(seen, "published "+ev.Reason)
				fmt.Fprintf(a.env.Stderr, "banger: unpublished %s\n", termsafe.Line(ev.Reason))
			case events.KindPortError:
				fmt.Fprintf(a.env.Stderr, "banger: cannot publish %s\n", termsafe.Line(ev.Reason))
			}
			return nil
		})
	}()
	return func() { cancel(); wg.Wait() }
}

// printPublished adds vm inspect's publish lines: what the VM publishes and
// the live forwards.
func printPublished(w io.Writer, vm model.VM) {
	var want []string
	if vm.Publish.All {
		want = append(want, "all guest TCP listeners")
	}
	for _, m := range vm.Publish.Ports {
		want = append(want, fmt.Sprintf("127.0.0.1:%d → %d", m.Host, m.Guest))
	}
	if len(want) > 0 {
		fmt.Fprintf(w, "%-9s %s\n", "publish:", strings.Join(want, ", "))
	}
	for _, f := range vm.Forwards {
		line := fmt.Sprintf("%s → guest port %d", f.Host, f.GuestPort)
		if f.Note != "" {
			line += " (" + f.Note + ")"
		}
		fmt.Fprintf(w, "%-9s %s\n", "forward:", line)
	}
}
