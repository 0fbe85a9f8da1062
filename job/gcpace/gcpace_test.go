package gcpace

import (
	"math"
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

func TestLimitFor(t *testing.T) {
	for _, tc := range []struct {
		name string
		live uint64
		want int64
	}{
		{"empty heap", 0, MinLimit},
		{"small heap", 5 << 20, MinLimit},
		{"two thirds of the minimum", MinLimit / 3 * 2, MinLimit},
		{"past two thirds of the minimum", 40 << 20, 60 << 20},
		{"large heap", 1 << 30, 3 << 29},
		{"absurd heap", math.MaxUint64, 1 << 62},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := LimitFor(tc.live); got != tc.want {
				t.Errorf("LimitFor(%d) = %d, want %d", tc.live, got, tc.want)
			}
		})
	}
}

// settings returns the current GOGC percent and memory limit without
// changing them.
func settings() (percent int, limit int64) {
	percent = debug.SetGCPercent(100)
	debug.SetGCPercent(percent)
	return percent, debug.SetMemoryLimit(-1)
}

func TestStartLeavesOperatorSettings(t *testing.T) {
	for _, env := range []string{"GOGC", "GOMEMLIMIT"} {
		t.Run(env, func(t *testing.T) {
			p0, l0 := settings()
			stop := Start(func(k string) string {
				if k == env {
					return "200"
				}
				return ""
			})
			defer stop()
			if p, l := settings(); p != p0 || l != l0 {
				t.Errorf("with %s set: GOGC %d, limit %d; want %d, %d (unchanged)", env, p, l, p0, l0)
			}
		})
	}
}

func TestStartPacesByLimitAndRestores(t *testing.T) {
	p0, l0 := settings()
	stop := Start(func(string) string { return "" })
	if p, l := settings(); p != -1 || l < MinLimit {
		stop()
		t.Fatalf("after Start: GOGC %d, limit %d; want -1 (off) and at least %d", p, l, MinLimit)
	}
	// A live heap past two thirds of the minimum: the limit follows it to
	// 1.5 times its size, so the collector is not left running without
	// pause.
	big := make([][]byte, 40)
	for i := range big {
		big[i] = make([]byte, 1<<20)
		big[i][0] = 1
	}
	runtime.GC()
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, l := settings()
		if l >= 60<<20 {
			break
		}
		if time.Now().After(deadline) {
			stop()
			t.Fatalf("limit %d MiB after 5 s with 40 MiB live; want at least 60 MiB", l>>20)
		}
		time.Sleep(Every / 2)
	}
	runtime.KeepAlive(big)
	stop()
	stop() // a second stop is harmless
	if p, l := settings(); p != p0 || l != l0 {
		t.Errorf("after stop: GOGC %d, limit %d; want %d, %d (restored)", p, l, p0, l0)
	}
}
