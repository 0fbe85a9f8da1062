// Package gcpace paces Go's garbage collector for a run.
//
// A run holds its plan (one small record and one password per user) for
// its whole life, and makes a few kilobytes of short-lived garbage per
// request. Go's default pacing (GOGC=100: collect when the heap doubles)
// collects very often while the live heap is small: at 20,000 users a
// collection every few hundred requests, each scanning every goroutine's
// stack. Start instead lets the heap grow to a soft memory limit, MinLimit
// or 1.5 times the live heap, whichever is larger, and keeps that limit in
// step with the live heap while the run goes on: few collections for a
// small run, and for a large one the memory of GOGC=50 (the setting before
// gcpace).
package gcpace

import (
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"time"
)

// MinLimit is the smallest soft memory limit Start sets: the heap a small
// run may grow to before the collector runs. It keeps a 200,000-user run
// under 64 MiB of resident memory (docs/performance.md).
const MinLimit = 44 << 20

// Every is how often Start checks the live heap against its limit.
const Every = 100 * time.Millisecond

const liveMetric = "/gc/heap/live:bytes"

// LimitFor returns the soft memory limit for a live heap of live bytes:
// MinLimit, or 1.5 times live when that is larger, so that a heap that
// grows past MinLimit is paced as GOGC=50 would pace it and never collected
// without pause.
func LimitFor(live uint64) int64 {
	const maxLimit = 1 << 62
	if live > maxLimit/3*2 {
		return maxLimit
	}
	return max(MinLimit, int64(live+live/2))
}

// Start paces the collector with a soft memory limit (see the package
// comment), unless the environment sets GOGC or GOMEMLIMIT: then Go's own
// pacing, as the operator set it, is left alone and Start does nothing.
// Until stop is called, a goroutine raises the limit every Every when the
// live heap has grown. stop restores the settings found.
func Start(getenv func(string) string) (stop func()) {
	if getenv("GOGC") != "" || getenv("GOMEMLIMIT") != "" {
		return func() {}
	}
	sample := []metrics.Sample{{Name: liveMetric}}
	live := func() uint64 {
		metrics.Read(sample)
		if sample[0].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return sample[0].Value.Uint64()
	}
	oldLimit := debug.SetMemoryLimit(LimitFor(live()))
	oldPercent := debug.SetGCPercent(-1)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(Every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				debug.SetMemoryLimit(LimitFor(live()))
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(done)
			wg.Wait()
			debug.SetGCPercent(oldPercent)
			debug.SetMemoryLimit(oldLimit)
		})
	}
}
