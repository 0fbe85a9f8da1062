package main

import (
	"context"
	"os"
	"os/signal"
	"pwrotate/report"
	"sync"
	"syscall"
)

// interrupt is what a subcommand does on SIGINT and SIGTERM. One watcher
// (watchSignals) serves every subcommand.
//
// Until changing reports true, nothing that changes anything is in flight
// (reading the key or the input, the preflight, the listing, sealing): the
// first signal calls early, which says that nothing was changed, and exits 3
// at once, abandoning read-only calls and blocked reads (a FIFO with no
// writer). From then on the first signal calls first and cancels the
// context, so that the changes in flight finish; a second signal calls
// second and exits 3 at once.
type interrupt struct {
	// changing reports whether changes may be in flight; nil: never.
	changing func() bool
	// early says that the command stopped before changing anything.
	early func(os.Signal)
	// first says that the command finishes what is in flight.
	first func(os.Signal)
	// second says that the command exits at once; it runs just before.
	second func()
}

// exit ends the process; tests replace it.
var exit = os.Exit

// watchSignals returns a context that the first signal on sigs cancels,
// and a function that stops watching. A nil sigs (Main run in-process by
// tests) gets a channel of its own.
func watchSignals(sigs chan os.Signal, h interrupt) (context.Context, func()) {
	unnotify := func() {}
	if sigs == nil {
		sigs = make(chan os.Signal, 2)
		signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
		unnotify = func() { signal.Stop(sigs) }
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var s os.Signal
		select {
		case s = <-sigs:
		case <-done:
			return
		}
		if h.changing == nil || !h.changing() {
			h.early(s)
			exit(report.ExitInterrupted)
			return
		}
		h.first(s)
		cancel()
		select {
		case <-sigs:
		case <-done:
			return
		}
		h.second()
		exit(report.ExitInterrupted)
	}()
	return ctx, func() {
		close(done)
		wg.Wait()
		cancel()
		unnotify()
	}
}
