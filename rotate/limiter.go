package rotate

import (
	"context"
	"log/slog"
	"math"
	"strconv"
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

// Adaptation to a server's unpublished limit (see docs/DESIGN.md, "Rate
// limit and 429s").
const (
	// minPause is how long a 429 without a Retry-After pauses every caller.
	minPause = time.Second
	// slotLen and numSlots make the ring of confirmed answers: the accepted
	// rate is measured over at most the last estimateWindow.
	slotLen        = 250 * time.Millisecond
	numSlots       = 81
	estimateWindow = (numSlots - 1) * slotLen
	// burstCredit is the server burst assumed: a throttling server is
	// taken to hold at most one second of its rate in reserve (and to
	// refill it during a pause of a second).
	burstCredit = time.Second
	// resumeFactor: after a pause the rate resumes at this share of the
	// estimated server rate ...
	resumeFactor = 0.95
	// ... and probes back up along a cubic that is flat (back at the
	// estimate) probePlateau after the pause, then grows ever faster.
	probePlateau = 3 * time.Second
	// decreaseFactor is the plain multiplicative decrease used when the
	// measurement is too short to trust (few answers in under a second).
	decreaseFactor = 0.7
	// trustAnswers and trustSpan: an estimate over at least this many
	// answers, or this long, is trusted.
	trustAnswers = 50
	trustSpan    = time.Second
	// minRate is the lowest rate adaptation goes to, in calls a second.
	minRate = 1
)

// probeCoef is the cubic's coefficient: rate(t) = est·(1 + probeCoef·(t−K)³)
// with K = probePlateau, so that rate(0) = resumeFactor·est.
var probeCoef = (1 - resumeFactor) / math.Pow(probePlateau.Seconds(), 3)

// Limiter paces every API call of a run: one token bucket
// (golang.org/x/time/rate) shared by all workers, never above the configured
// rate, and never more than rate+burst calls in any one second.
//
// A 429 (Throttle) pauses every caller, those already waiting included, for
// the Retry-After (at least a second). The Limiter then adapts to the
// server's limit, which ECGrid does not publish: it estimates the rate the
// server accepted before the throttle from the answers it confirmed
// (Confirm), resumes slightly below that estimate, and probes back up along
// a cubic curve (as TCP CUBIC and the AWS SDKs' adaptive retry mode do). It
// implements rotate.Pacer and rotate.Confirmer.
type Limiter struct {
	bucket *rate.Limiter
	target rate.Limit // configured rate; rate.Inf when unlimited

	mu          sync.Mutex
	now         func() time.Time
	pausedUntil time.Time

	// Adaptation. Before the first 429, adapted is false and the bucket
	// runs at target. A 429 opens an episode (tripAt, rateAtTrip); every
	// 429 until the pause ends joins it. When the pause ends, the episode
	// is closed: est is measured, the bucket resumes at resumeFactor·est
	// and a new measurement cycle begins at cycleStart.
	adapted    bool
	inEpisode  bool
	tripAt     time.Time
	rateAtTrip float64
	est        float64   // estimated server rate, calls a second
	resumedAt  time.Time // end of the last pause: the probe's t = 0
	cycleStart time.Time // end of the last pause (zero before)

	// slots ring the confirmed answers per slotLen: slotID[i] is the slot
	// number (time since epoch / slotLen) whose count is in slotN[i].
	slotID [numSlots]int64
	slotN  [numSlots]int
	// relID and relFirst ring the first call let go in each slot:
	// relFirst[i] is when slot relID[i]'s first call went. A span that
	// begins in a slot begins there, not at the slot's boundary: the run
	// (or the cycle after a pause) starts anywhere within a slot, and a
	// span counted from the boundary would hold time in which nothing
	// was sent, and estimate too low.
	relID    [numSlots]int64
	relFirst [numSlots]time.Time

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

	log  *slog.Logger // nil: no log
	note *adaptNote   // an episode closed, to be logged once the lock is released
}

// adaptNote is what the log says when an episode closes.
type adaptNote struct {
	estimate, resume float64
	pause            time.Duration
}

// SetLogger makes l log, at Info, every adaptation to a 429: the estimated
// server rate and the rate resumed at.
func (l *Limiter) SetLogger(log *slog.Logger) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.log = log
}

// unlock releases l.mu and logs a pending note, outside the lock.
func (l *Limiter) unlock() {
	note, log := l.note, l.log
	l.note = nil
	l.mu.Unlock()
	if note != nil && log != nil {
		log.Info("rate adapted to the server's limit after a 429",
			slog.String("estimate", strconv.FormatFloat(note.estimate, 'f', 1, 64)+"/s"),
			slog.String("resumedAt", strconv.FormatFloat(note.resume, 'f', 1, 64)+"/s"),
			slog.Duration("pause", note.pause))
	}
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

// Wait blocks until the next call may start, or ctx is done. The pause of
// a 429 is checked again after every wait: a caller that was waiting for
// its turn when the 429 came back waits for the pause too.
func (l *Limiter) Wait(ctx context.Context) error {
	var res *rate.Reservation
	for {
		l.mu.Lock()
		now := l.now()
		l.adaptLocked(now)
		var wait time.Duration
		switch pause := l.pausedUntil.Sub(now); {
		case pause > 0:
			// A turn reserved before the 429 is given back: after the
			// pause the caller queues again at the rate then in force.
			if res != nil {
				res.CancelAt(now)
				res = nil
			}
			wait = pause
		default:
			if res == nil {
				res = l.bucket.ReserveN(now, 1) // burst >= 1: always OK
			}
			if wait = res.DelayFrom(now); wait <= 0 {
				wait = l.releaseLocked(now)
			}
		}
		l.unlock()
		if wait <= 0 {
			return nil
		}
		if err := Sleep(ctx, wait); err != nil {
			if res != nil {
				l.mu.Lock()
				res.CancelAt(l.now())
				l.unlock()
			}
			return err
		}
	}
}

// releaseLocked lets one call go at now, unless len(l.released) calls went
// in the last window: then it returns how long to wait.
func (l *Limiter) releaseLocked(now time.Time) time.Duration {
	if l.released != nil {
		oldest := l.released[l.next]
		if wait := oldest.Add(releaseWindow).Sub(now); !oldest.IsZero() && wait > 0 {
			return wait
		}
		l.released[l.next] = now
		l.next = (l.next + 1) % len(l.released)
	}
	if id := now.UnixNano() / int64(slotLen); l.relID[id%numSlots] != id {
		l.relID[id%numSlots], l.relFirst[id%numSlots] = id, now
	}
	if l.onRelease != nil {
		l.onRelease(now)
	}
	return 0
}

// Throttle records a 429 (or a retryable answer with a Retry-After): every
// caller waits retryAfter, at least a second. The first 429 after a pause
// opens an episode that the pause's end closes with a new estimate of the
// server's rate.
func (l *Limiter) Throttle(retryAfter time.Duration) {
	retryAfter = max(retryAfter, minPause)
	l.mu.Lock()
	defer l.unlock()
	now := l.now()
	l.adaptLocked(now) // closes an episode whose pause is over
	if until := now.Add(retryAfter); until.After(l.pausedUntil) {
		l.pausedUntil = until
	}
	if !l.inEpisode {
		l.inEpisode = true
		l.tripAt = now
		l.rateAtTrip = float64(l.bucket.Limit())
		if l.bucket.Limit() == rate.Inf {
			l.rateAtTrip = math.Inf(1)
		}
	}
}

// Confirm records an answer the server did not throttle: the measure of
// the rate it accepts.
func (l *Limiter) Confirm() {
	l.mu.Lock()
	defer l.mu.Unlock()
	id := l.now().UnixNano() / int64(slotLen)
	i := int(id % numSlots)
	if l.slotID[i] != id {
		l.slotID[i], l.slotN[i] = id, 0
	}
	l.slotN[i]++
}

// Rate returns the rate in force now, in calls a second (+Inf: unlimited).
func (l *Limiter) Rate() float64 {
	l.mu.Lock()
	defer l.unlock()
	l.adaptLocked(l.now())
	if l.bucket.Limit() == rate.Inf {
		return math.Inf(1)
	}
	return float64(l.bucket.Limit())
}

// Estimate returns the estimated server rate (0 before the first 429).
func (l *Limiter) Estimate() float64 {
	l.mu.Lock()
	defer l.unlock()
	l.adaptLocked(l.now())
	return l.est
}

// adaptLocked closes an episode whose pause is over and sets the bucket to
// the rate the probe has reached at now.
func (l *Limiter) adaptLocked(now time.Time) {
	if l.inEpisode && !now.Before(l.pausedUntil) {
		l.closeEpisodeLocked()
	}
	if !l.adapted || now.Before(l.pausedUntil) {
		return
	}
	t := now.Sub(l.resumedAt).Seconds() - probePlateau.Seconds()
	r := l.est * (1 + probeCoef*t*t*t)
	r = max(r, minRate)
	if r >= float64(l.target) {
		l.adapted = false // back at the configured rate: nothing to adapt
		l.bucket.SetLimitAt(now, l.target)
		return
	}
	if cur := float64(l.bucket.Limit()); math.Abs(cur-r) > 1e-3*r {
		l.bucket.SetLimitAt(now, rate.Limit(r))
	}
}

// closeEpisodeLocked measures the server's rate over the cycle that the
// episode ended and starts the next cycle at the end of the pause.
//
// A token bucket of rate r and burst b accepts at most r·d + b calls in any
// span d, and exactly that when it was full at the span's start and kept
// empty since. With b assumed at most one second of r (burstCredit), the
// estimate is the most, over the spans that end at the 429 and begin at a
// slot boundary of the cycle (at most estimateWindow back), of
// confirmed / (d + burstCredit). Answers that came back during the pause
// count: they were sent before it.
func (l *Limiter) closeEpisodeLocked() {
	l.inEpisode = false
	last := l.pausedUntil.UnixNano() / int64(slotLen)
	first := max(last-numSlots+1, l.tripAt.Add(-estimateWindow).UnixNano()/int64(slotLen))
	if !l.cycleStart.IsZero() {
		first = max(first, l.cycleStart.UnixNano()/int64(slotLen))
	}
	est, bestN, bestSpan := 0.0, 0, time.Duration(0)
	n := 0
	for id := last; id >= first; id-- {
		if i := int(id % numSlots); l.slotID[i] == id {
			n += l.slotN[i]
		}
		start := time.Unix(0, id*int64(slotLen))
		if j := int(id % numSlots); l.relID[j] == id && l.relFirst[j].After(start) {
			start = l.relFirst[j]
		}
		span := l.tripAt.Sub(start)
		if span < 0 {
			span = 0
		}
		if e := float64(n) / (span + burstCredit).Seconds(); e > est {
			est, bestN, bestSpan = e, n, span
		}
	}
	// A measure over a handful of answers in a fraction of a second (429s
	// from requests sent before the last pause, say) is not trusted: the
	// rate then falls by decreaseFactor, like any multiplicative decrease.
	if bestN < trustAnswers && bestSpan < trustSpan && !math.IsInf(l.rateAtTrip, 1) {
		est = max(est, decreaseFactor*l.rateAtTrip)
	}
	// The server cannot have accepted more than was sent.
	est = min(max(est, minRate), l.rateAtTrip, float64(l.target))
	l.est = est
	l.adapted = true
	l.resumedAt = l.pausedUntil
	l.cycleStart = l.pausedUntil
	l.bucket.SetLimitAt(l.pausedUntil, rate.Limit(resumeFactor*est))
	l.note = &adaptNote{estimate: est, resume: resumeFactor * est, pause: l.pausedUntil.Sub(l.tripAt)}
}

// SetReleaseHook makes l call f, under its lock, with the time it lets each
// call go: the exact moments its one-second window counts (tests and
// benchmarks observe the pacing with it).
func (l *Limiter) SetReleaseHook(f func(time.Time)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.onRelease = f
}
