package rotate

import (
	"context"
	"log/slog"
	"math"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// TestLimiterPauseHoldsQueuedCallers: callers already queued in the token
// bucket when a 429 comes back do not go before its Retry-After has passed,
// and a 429 without a Retry-After pauses for a second, unlimited rate
// included (issue 9 point 4).
func TestLimiterPauseHoldsQueuedCallers(t *testing.T) {
	for _, tc := range []struct {
		name      string
		rate      float64
		throttle  time.Duration // Throttle's argument, at 500 ms
		wantFirst time.Duration // no call may go before this after the 429
	}{
		{"rate 4, Retry-After 3s", 4, 3 * time.Second, 3 * time.Second},
		{"rate 4, no Retry-After", 4, 0, time.Second},
		{"rate 0, Retry-After 2s", 0, 2 * time.Second, 2 * time.Second},
		{"rate 0, no Retry-After", 0, 0, time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				l := NewLimiter(tc.rate, 1)
				start := time.Now()
				if err := l.Wait(context.Background()); err != nil { // takes the burst
					t.Fatal(err)
				}
				const callers = 8
				went := make(chan time.Duration, callers)
				for range callers {
					go func() {
						if err := l.Wait(context.Background()); err != nil {
							t.Error(err)
						}
						went <- time.Since(start)
					}()
				}
				time.Sleep(500 * time.Millisecond)
				synctest.Wait()
				early := len(went) // went before the 429 (all of them with --rate 0)
				for range early {
					<-went
				}
				l.Throttle(tc.throttle)
				resume := 500*time.Millisecond + tc.wantFirst
				for range callers - early {
					if at := <-went; at < resume {
						t.Errorf("a queued caller went %v after the start, inside the pause (ends at %v)", at, resume)
					}
				}
				// After the pause, a new caller waits for the pause too.
				if tc.rate == 0 {
					l.Throttle(tc.throttle)
					t0 := time.Now()
					if err := l.Wait(context.Background()); err != nil {
						t.Fatal(err)
					}
					if waited := time.Since(t0); waited < tc.wantFirst {
						t.Errorf("unlimited: Wait returned after %v, inside the pause of %v", waited, tc.wantFirst)
					}
				}
			})
		})
	}
}

// fakeCycle drives l with a fake clock: a first call at t0, then n
// confirmed answers spread evenly over d, then a 429 with Retry-After ra.
func fakeCycle(t *testing.T, l *Limiter, now *time.Time, n int, d, ra time.Duration) {
	t.Helper()
	t0 := *now
	if err := l.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		*now = t0.Add(time.Duration(i) * d / time.Duration(n))
		l.Confirm()
	}
	*now = t0.Add(d)
	l.Throttle(ra)
}

// TestLimiterSettlesBelowAndProbesBack: after a 429 the rate resumes just
// under the rate the server accepted over the cycle (its burst, refilled
// before the cycle, credited), stays near it for a few seconds, then probes
// upwards, never above --rate, and is back at --rate in the end.
func TestLimiterSettlesBelowAndProbesBack(t *testing.T) {
	l := NewLimiter(400, 1)
	t0 := time.Unix(1_000_000, 0)
	now := t0
	l.now = func() time.Time { return now }
	var logs strings.Builder
	l.SetLogger(slog.New(slog.NewTextHandler(&logs, nil)))
	// 3 s at 400/s: the server (300/s and one second of burst) accepted
	// 1200 calls, then throttled for a second.
	fakeCycle(t, l, &now, 1200, 3*time.Second, time.Second)
	steps := []struct {
		after    time.Duration // since t0
		min, max float64
	}{
		{4 * time.Second, 285, 285},  // resumes at 0.95 × 1200/(3+1)
		{5 * time.Second, 290, 300},  // flattens towards the estimate...
		{7 * time.Second, 300, 300},  // ...reaches it 3 s after the pause
		{8 * time.Second, 300, 301},  // then probes up, slowly...
		{11 * time.Second, 330, 340}, // +10% 4 s later
		{13 * time.Second, 400, 400}, // ...and faster, capped at --rate
		{time.Hour, 400, 400},        // and stays there
	}
	for _, s := range steps {
		now = t0.Add(s.after)
		if got := l.Rate(); got < s.min-1e-6 || got > s.max+1e-6 {
			t.Errorf("%v after the start: rate %.2f, want [%v, %v]", s.after, got, s.min, s.max)
		}
	}
	if est := l.Estimate(); est != 300 {
		t.Errorf("estimate %v, want 300", est)
	}
	if got := logs.String(); strings.Count(got, "rate adapted") != 1 || !strings.Contains(got, "estimate=300.0/s resumedAt=285.0/s pause=1s") {
		t.Errorf("log %q, want one line with the estimate, the resumed rate and the pause", got)
	}
}

// TestLimiterEstimateEdges: the estimate never exceeds the rate in force at
// the 429 nor --rate, a measure over a few answers in a fraction of a second
// falls back to a multiplicative decrease, and 429s during the pause belong
// to the same episode.
func TestLimiterEstimateEdges(t *testing.T) {
	t.Run("capped by the rate sent", func(t *testing.T) {
		l := NewLimiter(100, 1)
		now := time.Unix(1_000_000, 0)
		l.now = func() time.Time { return now }
		fakeCycle(t, l, &now, 5000, 2*time.Second, time.Second) // more than possible
		now = now.Add(time.Second)
		if est := l.Estimate(); est != 100 {
			t.Errorf("estimate %v, want the --rate 100", est)
		}
	})
	t.Run("never above a rate under one a second", func(t *testing.T) {
		l := NewLimiter(0.5, 1)
		now := time.Unix(1_000_000, 0)
		l.now = func() time.Time { return now }
		fakeCycle(t, l, &now, 0, 10*time.Second, time.Second)
		now = now.Add(time.Second)
		if got := l.Rate(); got > 0.5 {
			t.Errorf("rate %v after a 429, over --rate 0.5", got)
		}
	})
	t.Run("untrusted short measure", func(t *testing.T) {
		l := NewLimiter(1000, 1)
		now := time.Unix(1_000_000, 0)
		l.now = func() time.Time { return now }
		fakeCycle(t, l, &now, 3, 10*time.Millisecond, time.Second)
		now = now.Add(time.Second)
		if est := l.Estimate(); est != 700 {
			t.Errorf("estimate %v, want 0.7 × 1000", est)
		}
	})
	t.Run("one episode per pause", func(t *testing.T) {
		l := NewLimiter(1000, 1)
		now := time.Unix(1_000_000, 0)
		l.now = func() time.Time { return now }
		fakeCycle(t, l, &now, 600, time.Second, time.Second)
		for range 20 { // the other 429s of requests in flight
			now = now.Add(10 * time.Millisecond)
			l.Throttle(time.Second)
		}
		now = now.Add(time.Second)
		if est := l.Estimate(); est != 300 {
			t.Errorf("estimate %v, want 600/(1+1) = 300: one estimate for the whole episode", est)
		}
	})
	t.Run("unlimited adapts from the first 429", func(t *testing.T) {
		l := NewLimiter(0, 1)
		now := time.Unix(1_000_000, 0)
		l.now = func() time.Time { return now }
		if !math.IsInf(l.Rate(), 1) {
			t.Fatalf("rate %v before any 429, want unlimited", l.Rate())
		}
		fakeCycle(t, l, &now, 900, 2*time.Second, time.Second)
		now = now.Add(time.Second)
		if got := l.Rate(); got != 285 {
			t.Errorf("rate %v after the pause, want 0.95 × 900/(2+1)", got)
		}
	})
}

func TestLimiterWaitHonoursContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := NewLimiter(1, 1)
		l.Throttle(time.Hour)
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		if err := l.Wait(ctx); err == nil {
			t.Fatal("Wait returned nil during a one-hour pause with a cancelled context")
		}
	})
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
