package cli

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/term"

	"github.com/bangerdev/banger/internal/progress"
	"github.com/bangerdev/banger/internal/termsafe"
)

// progressRenderer shows a call's progress events. On a terminal every item
// (each layer, each download, the overall pull) gets its own bar with rate
// and ETA, and stage messages print above them; otherwise (logs, CI) plain
// lines, at most one a second per item.
type progressRenderer struct {
	w       io.Writer
	p       *mpb.Progress // nil when not a terminal
	bars    map[string]*mpb.Bar
	lastMsg string
	lastLog map[string]time.Time
	// msgs is each bar's current message (e.g. the package debootstrap is
	// on), read by the bar's decorator on mpb's goroutine.
	msgMu sync.Mutex
	msgs  map[string]string
}

func newProgressRenderer(w io.Writer) *progressRenderer {
	r := &progressRenderer{w: w, bars: map[string]*mpb.Bar{}, lastLog: map[string]time.Time{}, msgs: map[string]string{}}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		r.p = mpb.New(mpb.WithOutput(w), mpb.WithWidth(30), mpb.WithRefreshRate(120*time.Millisecond))
	}
	return r
}

// Handle renders one event.
func (r *progressRenderer) Handle(ev progress.Event) {
	if ev.Total == 0 && ev.Done == 0 {
		msg := ev.Message
		if msg == "" {
			msg = ev.Item
		}
		// Messages may quote a guest or a registry: shown inert.
		line := termsafe.Line(ev.Stage + ": " + msg)
		if line == r.lastMsg {
			return
		}
		r.lastMsg = line
		if r.p != nil {
			fmt.Fprintln(r.p, line)
		} else {
			fmt.Fprintln(r.w, line)
		}
		return
	}
	key := termsafe.Line(strings.TrimSpace(ev.Stage + " " + ev.Item))
	if r.p == nil {
		done := ev.Total > 0 && ev.Done >= ev.Total
		if done || time.Since(r.lastLog[key]) >= time.Second {
			if ev.Message != "" {
				fmt.Fprintf(r.w, "%s: %s %s\n", key, counter(ev), termsafe.Line(ev.Message))
			} else {
				fmt.Fprintf(r.w, "%s: %s\n", key, counter(ev))
			}
			r.lastLog[key] = time.Now()
		}
		return
	}
	bar := r.bars[key]
	if bar == nil {
		bytes := ev.Unit == "" || ev.Unit == "bytes"
		counters := decor.CountersNoUnit("%d / %d")
		speed := decor.Name("")
		if bytes {
			counters = decor.Counters(decor.SizeB1024(0), "% .1f / % .1f")
			speed = decor.AverageSpeed(decor.SizeB1024(0), "% .1f")
		}
		eta := decor.OnComplete(decor.AverageETA(decor.ET_STYLE_GO), "done")
		if ev.Total == 0 && ev.Message != "" {
			counters = decor.CurrentNoUnit("%d " + ev.Unit)
			// A counting item of unknown size (a tool's steps): the current
			// step's message instead of an ETA.
			eta = decor.Any(func(decor.Statistics) string {
				r.msgMu.Lock()
				defer r.msgMu.Unlock()
				return r.msgs[key]
			})
		}
		bar = r.p.AddBar(max(ev.Total, 0),
			mpb.PrependDecorators(decor.Name(key, decor.WCSyncSpaceR)),
			mpb.AppendDecorators(counters, decor.Name(" "), speed, decor.Name(" "), eta))
		r.bars[key] = bar
	}
	if ev.Message != "" {
		r.msgMu.Lock()
		r.msgs[key] = termsafe.Line(ev.Message)
		r.msgMu.Unlock()
	}
	if ev.Total > 0 {
		bar.SetTotal(ev.Total, false)
	}
	bar.SetCurrent(ev.Done)
	if ev.Total > 0 && ev.Done >= ev.Total {
		bar.SetTotal(ev.Total, true)
	}
}

// Close completes every bar and stops drawing.
func (r *progressRenderer) Close() {
	if r.p == nil {
		return
	}
	for _, b := range r.bars {
		if !b.Completed() {
			b.Abort(false)
		}
	}
	r.p.Wait()
}

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
