package cli

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/bangerdev/banger/internal/progress"
)

// progressRenderer shows a call's progress events: a bar per item on a
// terminal (bytes with rate and ETA), plain lines otherwise (logs, CI).
type progressRenderer struct {
	w       io.Writer
	tty     bool
	bar     *progressbar.ProgressBar
	barKey  string
	lastMsg string
	lastLog time.Time
}

func newProgressRenderer(w io.Writer) *progressRenderer {
	tty := false
	if f, ok := w.(*os.File); ok {
		tty = term.IsTerminal(int(f.Fd()))
	}
	return &progressRenderer{w: w, tty: tty}
}

// Handle renders one event.
func (r *progressRenderer) Handle(ev progress.Event) {
	key := ev.Stage + " " + ev.Item
	if ev.Total == 0 && ev.Done == 0 {
		r.finishBar()
		msg := ev.Message
		if msg == "" {
			msg = key
		}
		if msg != r.lastMsg {
			fmt.Fprintf(r.w, "%s: %s\n", ev.Stage, msg)
			r.lastMsg = msg
		}
		return
	}
	if !r.tty {
		// Plain lines: at most one a second per item, and the final one.
		if key != r.barKey || time.Since(r.lastLog) >= time.Second || (ev.Total > 0 && ev.Done >= ev.Total) {
			fmt.Fprintf(r.w, "%s %s: %s\n", ev.Stage, ev.Item, counter(ev))
			r.lastLog = time.Now()
			r.barKey = key
		}
		return
	}
	if key != r.barKey || r.bar == nil {
		r.finishBar()
		total := ev.Total
		if total <= 0 {
			total = -1 // spinner
		}
		opts := []progressbar.Option{
			progressbar.OptionSetWriter(r.w),
			progressbar.OptionSetDescription(key),
			progressbar.OptionSetWidth(30),
			progressbar.OptionThrottle(100 * time.Millisecond),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionShowCount(),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(r.w) }),
		}
		if ev.Unit == "" || ev.Unit == "bytes" {
			opts = append(opts, progressbar.OptionShowBytes(true))
		} else {
			opts = append(opts, progressbar.OptionSetItsString(ev.Unit))
		}
		r.bar = progressbar.NewOptions64(total, opts...)
		r.barKey = key
	}
	_ = r.bar.Set64(ev.Done)
}

func (r *progressRenderer) finishBar() {
	if r.bar != nil {
		_ = r.bar.Finish()
		r.bar = nil
	}
}

// Close finishes any bar still drawn.
func (r *progressRenderer) Close() { r.finishBar() }

func counter(ev progress.Event) string {
	unit := ev.Unit
	if unit == "" || unit == "bytes" {
		if ev.Total > 0 {
			return fmt.Sprintf("%s / %s (%d%%)", bytesHuman(ev.Done), bytesHuman(ev.Total), ev.Done*100/ev.Total)
		}
		return bytesHuman(ev.Done)
	}
	if ev.Total > 0 {
		return fmt.Sprintf("%d/%d %s", ev.Done, ev.Total, unit)
	}
	return fmt.Sprintf("%d %s", ev.Done, unit)
}

func bytesHuman(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
