package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/rpc"
	"github.com/bangerdev/banger/internal/termsafe"
)

func newEventsCommand(a *app) *cobra.Command {
	var asJSON bool
	var vm string
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Stream VM lifecycle events as they happen",
		Long: `Print lifecycle events until Ctrl-C: created, started (a boot began),
ready (the guest agent answered), stopping, stopped, error (with the reason),
suspended, resumed, removed, and snapshot events. Each carries the op_id of
the request that caused it (banger ops ls, the daemon log). With --json, one
JSON object per line.

A watcher that falls far behind is dropped (the daemon never waits for it)
and banger exits with an error saying so; run it again.`,
		Example: `  banger events
  banger events --vm dev
  banger events --json | jq -c 'select(.kind == "error")'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			w := cmd.OutOrStdout()
			subscribed := func() error {
				fmt.Fprintln(a.env.Stderr, "banger: watching lifecycle events (Ctrl-C stops)")
				if !asJSON {
					fmt.Fprintf(w, "%-12s  %-16s  %-20s  %s\n", "TIME", "EVENT", "VM", "DETAIL")
				}
				return nil
			}
			return a.watchEvents(cmd.Context(), api.EventsWatch{VM: vm}, subscribed, func(ev api.Event) error {
				if asJSON {
					b, err := json.Marshal(ev)
					if err != nil {
						return fmt.Errorf("encode event: %w", err)
					}
					_, err = fmt.Fprintf(w, "%s\n", termsafe.JSON(b))
					return err
				}
				return printEvent(w, ev)
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object per event")
	cmd.Flags().StringVar(&vm, "vm", "", "only this VM's events")
	_ = cmd.RegisterFlagCompletionFunc("vm", a.completeVMNames)
	return cmd
}

func printEvent(w io.Writer, ev api.Event) error {
	detail := ev.Reason
	if ev.Snapshot != "" {
		detail = "snapshot " + ev.Snapshot + " " + detail
	}
	_, err := fmt.Fprintf(w, "%-12s  %-16s  %-20s  %s\n", ev.Time.Local().Format("15:04:05.000"),
		ev.Kind, termsafe.Line(ev.VM), termsafe.Line(detail))
	return err
}

// watchEvents streams events to fn until ctx ends (nil: Ctrl-C is a normal
// end) or fn fails. subscribed, when set, runs once the daemon holds the
// subscription, so a caller reading state then misses no later change.
func (a *app) watchEvents(ctx context.Context, req api.EventsWatch, subscribed func() error, fn func(api.Event) error) error {
	return watchStream(ctx, a, api.MethodEventsWatch, req, func(f rpc.Frame) error {
		if f.Kind == api.KindSubscribed && subscribed != nil {
			return subscribed()
		}
		if f.Kind != api.KindEvent {
			return nil
		}
		var ev api.Event
		if err := json.Unmarshal(f.Payload, &ev); err != nil {
			return fmt.Errorf("decode event: %w", err)
		}
		return fn(ev)
	})
}

// since renders how long ago t was, "-" for never.
func since(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return ago(now, t)
}
