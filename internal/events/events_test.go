package events

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/opid"
)

func TestFanOutInOrderWithOpID(t *testing.T) {
	b := New(nil, 8)
	s1, s2 := b.Subscribe(), b.Subscribe()
	defer s1.Cancel()
	defer s2.Cancel()
	ctx := opid.With(context.Background(), "op-1")
	for i := range 3 {
		b.Publish(ctx, Event{Kind: KindStarted, VM: fmt.Sprint("vm", i)})
	}
	for _, s := range []*Subscription{s1, s2} {
		for i := range 3 {
			ev := <-s.C()
			if ev.VM != fmt.Sprint("vm", i) || ev.OpID != "op-1" || ev.Time.IsZero() {
				t.Fatalf("event %d: %+v", i, ev)
			}
		}
	}
}

// A subscriber that never reads is dropped once its buffer is full; the
// publisher never waits for it and other subscribers get everything.
func TestSlowSubscriberDroppedPublisherNeverBlocks(t *testing.T) {
	b := New(nil, 4)
	slow, fast := b.Subscribe(), b.Subscribe()
	defer fast.Cancel()
	// The fast reader acknowledges each event, so it never falls behind;
	// the slow one never reads.
	ack := make(chan struct{})
	got := 0
	go func() {
		for range fast.C() {
			got++
			ack <- struct{}{}
		}
	}()
	for i := range 100 {
		start := time.Now()
		b.Publish(context.Background(), Event{Kind: KindReady, VM: fmt.Sprint(i)})
		if d := time.Since(start); d > time.Second {
			t.Fatalf("publish %d took %s", i, d)
		}
		select {
		case <-ack:
		case <-time.After(5 * time.Second):
			t.Fatalf("fast subscriber stuck at %d of 100 events", got)
		}
	}
	n := 0
	for range slow.C() { // closed after the 4 buffered events
		n++
	}
	if n != 4 || !slow.Dropped() {
		t.Fatalf("slow subscriber: %d events, dropped=%v; want 4 and dropped", n, slow.Dropped())
	}
	if fast.Dropped() {
		t.Fatal("fast subscriber marked dropped")
	}
	if b.Subscribers() != 1 {
		t.Fatalf("%d subscribers left, want 1", b.Subscribers())
	}
}

func TestCancelStopsDeliveryAndIsIdempotent(t *testing.T) {
	b := New(nil, 4)
	s := b.Subscribe()
	s.Cancel()
	s.Cancel()
	b.Publish(context.Background(), Event{Kind: KindRemoved, VM: "x"})
	if _, ok := <-s.C(); ok {
		t.Fatal("cancelled subscription received an event")
	}
	if s.Dropped() || b.Subscribers() != 0 {
		t.Fatalf("dropped=%v subscribers=%d after cancel", s.Dropped(), b.Subscribers())
	}
	var nilBus *Bus
	nilBus.Publish(context.Background(), Event{Kind: KindRemoved}) // must not panic
}

// Many subscribers coming and going while events are published concurrently
// leave no goroutine and no subscription behind.
func TestNoLeakUnderChurn(t *testing.T) {
	before := runtime.NumGoroutine()
	b := New(nil, 2)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
				b.Publish(context.Background(), Event{Kind: KindReady, VM: fmt.Sprint(i)})
			}
		}
	}()
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := b.Subscribe()
			deadline := time.After(20 * time.Millisecond)
			for {
				select {
				case _, ok := <-s.C():
					if !ok {
						return // dropped
					}
				case <-deadline:
					s.Cancel()
					return
				}
			}
		}()
	}
	time.Sleep(50 * time.Millisecond)
	close(stop)
	wg.Wait()
	if n := b.Subscribers(); n != 0 {
		t.Fatalf("%d subscriptions left", n)
	}
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Fatalf("%d goroutines after, %d before", n, before)
	}
}

func TestFromTransition(t *testing.T) {
	for _, c := range []struct {
		from, to model.VMState
		want     string
	}{
		{model.StateCreating, model.StateStopped, KindCreated},
		{model.StateStopped, model.StateStarting, KindStarted},
		{model.StateStarting, model.StateRunning, KindReady},
		{model.StateSuspended, model.StateRunning, KindResumed},
		{model.StateRunning, model.StateStopping, KindStopping},
		{model.StateStopping, model.StateStopped, KindStopped},
		{model.StateRunning, model.StateSuspended, KindSuspended},
		{model.StateStarting, model.StateError, KindError},
		{model.StateRunning, model.StateRunning, KindReady},
		{"", model.StateCreating, ""},
	} {
		if got := FromTransition(c.from, c.to, ""); got != c.want {
			t.Errorf("%s→%s: %q, want %q", c.from, c.to, got, c.want)
		}
	}
}
