package job

import (
	"context"
	"math"
	"testing"
	"time"
)

func TestLimiterThrottleHalvesAndRecovers(t *testing.T) {
	l := NewLimiter(100, 1)
	t0 := time.Unix(1_000_000, 0)
	now := t0
	l.now = func() time.Time { return now }

	l.Throttle(2 * time.Second)
	steps := []struct {
		after time.Duration
		want  float64
	}{
		{0, 50},
		{2 * time.Second, 50},         // still paused, then a second before recovery starts
		{2500 * time.Millisecond, 50}, // recovery starts a second after the pause
		{3 * time.Second, 62.5},       // +25%
		{4 * time.Second, 78.125},     // +25%
		{5 * time.Second, 97.65625},   // +25%
		{6 * time.Second, 100},        // capped at the configured rate
		{time.Hour, 100},              // stays there
	}
	for _, s := range steps {
		now = t0.Add(s.after)
		if got := l.Rate(); math.Abs(got-s.want) > 1e-9 {
			t.Errorf("after %v: rate %v, want %v", s.after, got, s.want)
		}
	}
}

func TestLimiterThrottleFloor(t *testing.T) {
	l := NewLimiter(100, 1)
	now := time.Unix(1_000_000, 0)
	l.now = func() time.Time { return now }
	for range 20 {
		l.Throttle(time.Second)
	}
	if got := l.Rate(); got != 10 {
		t.Fatalf("rate after many 429s = %v, want the floor 10", got)
	}
}

func TestLimiterPauseBlocksEveryCaller(t *testing.T) {
	for _, rate := range []float64{0, 1000} {
		l := NewLimiter(rate, 1)
		l.Throttle(300 * time.Millisecond)
		start := time.Now()
		if err := l.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
		if waited := time.Since(start); waited < 250*time.Millisecond {
			t.Errorf("rate %v: Wait returned after %v, inside the Retry-After pause", rate, waited)
		}
		if rate == 0 && !math.IsInf(l.Rate(), 1) {
			t.Errorf("unlimited limiter became %v after a 429", l.Rate())
		}
	}
}

func TestLimiterWaitHonoursContext(t *testing.T) {
	l := NewLimiter(1, 1)
	l.Throttle(time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := l.Wait(ctx); err == nil {
		t.Fatal("Wait returned nil during a one-hour pause with a cancelled context")
	}
}

func TestLimiterHugeRateNeedsNoHugeWindow(t *testing.T) {
	for _, tc := range []struct {
		rate  float64
		burst int
	}{{1e9, 1}, {10, 1 << 30}} {
		l := NewLimiter(tc.rate, tc.burst)
		if len(l.released) > maxWindow {
			t.Errorf("rate %v burst %d: window of %d entries", tc.rate, tc.burst, len(l.released))
		}
		if err := l.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}
