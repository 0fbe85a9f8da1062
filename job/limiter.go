package job

import (
	"context"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// releaseWindow is the span in which at most rate+burst calls are let go:
// one second and 10 ms of margin for the way to the server. It costs at most
// 1% of the rate.
const releaseWindow = time.Second + 10*time.Millisecond

// maxWindow is the most calls the release window tracks.
const maxWindow = 1 << 16

// Limiter paces every API call of a run: one token bucket shared by all
// workers. A 429 (Throttle) pauses every caller for the Retry-After time and
// halves the rate; the rate then recovers by a quarter each second until it
// is back at the configured one. It implements rotate.Pacer.
type Limiter struct {
	bucket *rate.Limiter
	target rate.Limit // configured rate; rate.Inf when unlimited

	mu          sync.Mutex
	pausedUntil time.Time
	lastChange  time.Time
	now         func() time.Time

	// released rings the times of the last len(released) calls let go: no
	// call goes while that many went within the last window (a second
	// and a margin). The bucket alone bounds when calls are scheduled; a
	// timer that fires late on a busy machine can still bunch them, and
	// the window bounds what is actually released; the margin absorbs the
	// jitter between release here and arrival at the server, where the
	// limit is counted. Empty when unlimited.
	released  []time.Time
	next      int
	onRelease func(time.Time) // tests only
}

// NewLimiter returns a Limiter for perSecond calls a second (0: unlimited)
// with the given burst (at least 1).
func NewLimiter(perSecond float64, burst int) *Limiter {
	if burst < 1 {
		burst = 1
	}
	target := rate.Limit(perSecond)
	if perSecond <= 0 {
		target = rate.Inf
	}
	l := &Limiter{bucket: rate.NewLimiter(target, burst), target: target, now: time.Now}
	// The window is kept for any rate an API would grant; past maxWindow
	// calls a second the bucket alone paces (and the ring would be huge).
	if n := math.Ceil(perSecond) + float64(burst); target != rate.Inf && n <= maxWindow {
		l.released = make([]time.Time, int(n))
	}
	return l
}

// Wait blocks until the next call may start, or ctx is done.
func (l *Limiter) Wait(ctx context.Context) error {
	for {
		l.mu.Lock()
		now := l.now()
		l.recoverLocked(now)
		pause := l.pausedUntil.Sub(now)
		l.mu.Unlock()
		if pause <= 0 {
			break
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
	if err := l.bucket.Wait(ctx); err != nil {
		return err
	}
	return l.release(ctx)
}

// release lets one call go once fewer than len(l.released) calls went in
// the last second.
func (l *Limiter) release(ctx context.Context) error {
	if l.released == nil {
		return nil
	}
	for {
		l.mu.Lock()
		now := l.now()
		oldest := l.released[l.next]
		if wait := oldest.Add(releaseWindow).Sub(now); !oldest.IsZero() && wait > 0 {
			l.mu.Unlock()
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
			continue
		}
		l.released[l.next] = now
		l.next = (l.next + 1) % len(l.released)
		if l.onRelease != nil {
			l.onRelease(now)
		}
		l.mu.Unlock()
		return nil
	}
}

// Throttle records a 429: every caller waits at least retryAfter, and a
// finite rate is halved (down to a tenth of the configured rate at most).
func (l *Limiter) Throttle(retryAfter time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if until := now.Add(retryAfter); until.After(l.pausedUntil) {
		l.pausedUntil = until
	}
	if l.target == rate.Inf {
		return
	}
	floor := l.target / 10
	cur := l.bucket.Limit() / 2
	if cur < floor {
		cur = floor
	}
	l.bucket.SetLimitAt(now, cur)
	l.lastChange = l.pausedUntil // recovery starts a second after the pause
}

// Rate returns the rate in force now, in calls a second (+Inf: unlimited).
func (l *Limiter) Rate() float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recoverLocked(l.now())
	if l.bucket.Limit() == rate.Inf {
		return math.Inf(1)
	}
	return float64(l.bucket.Limit())
}

// recoverLocked raises a throttled rate by a quarter (at least one call a
// second) for every second since the last change, up to the target.
func (l *Limiter) recoverLocked(now time.Time) {
	cur := l.bucket.Limit()
	if cur >= l.target || now.Before(l.pausedUntil) {
		return
	}
	for now.Sub(l.lastChange) >= time.Second && cur < l.target {
		cur = min(l.target, max(cur*1.25, cur+1))
		l.lastChange = l.lastChange.Add(time.Second)
	}
	l.bucket.SetLimitAt(now, cur)
}
