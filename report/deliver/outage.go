package deliver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// ErrOutage means the API server has answered no request, or refused every
// one with 429 or 5xx, for longer than Options.OutageLimit.
var ErrOutage = errors.New("kubernetes API unreachable or refusing")

// health is the outage detector: the time since which no request has
// succeeded, while the last ones failed for want of an answer (transport
// errors, timeouts) or were refused as a whole (429, 5xx).
type health struct {
	mu    sync.Mutex
	since time.Time // zero: no outage
	cause string
	now   func() time.Time
}

// fail notes a request that got no usable answer.
func (h *health) fail(log *slog.Logger, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.since.IsZero() {
		h.since = h.now()
		h.cause = reason(err)
		log.Warn("kubernetes API unreachable or refusing: no further password changes until it answers", "cause", h.cause)
	}
}

// ok notes a request that got an answer.
func (h *health) ok(log *slog.Logger) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.since.IsZero() {
		log.Info("kubernetes API answering again", "after", h.now().Sub(h.since).Round(time.Millisecond).String())
		h.since = time.Time{}
		h.cause = ""
	}
}

// downFor is how long the current outage has lasted; 0 when there is none.
func (h *health) downFor() time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.since.IsZero() {
		return 0
	}
	return max(h.now().Sub(h.since), time.Nanosecond)
}

func (h *health) state() (time.Duration, string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.since.IsZero() {
		return 0, ""
	}
	return max(h.now().Sub(h.since), time.Nanosecond), h.cause
}

// Down reports whether the API server is in an outage: the last requests
// got no answer, or 429 or 5xx, and none has succeeded since.
func (c *Client) Down() bool { return c.health.downFor() > 0 }

// probeEvery is how often WaitReady asks the API server during an outage.
var probeEvery = 500 * time.Millisecond

// WaitReady returns at once while the API server answers. During an outage
// it waits, asking the API server (a dry-run patch of a Secret that passed
// the preflight) until it answers, and returns nil then; once the outage
// has lasted Options.OutageLimit it returns an error wrapping ErrOutage.
// Call it before each password change: a change made while its delivery
// cannot land would break one more consumer.
func (c *Client) WaitReady(ctx context.Context) error {
	for {
		down, cause := c.health.state()
		if down == 0 {
			return nil
		}
		if down >= c.opts.OutageLimit {
			return fmt.Errorf("%w for %s (%s)", ErrOutage, down.Round(time.Second), cause)
		}
		if c.probing.TryLock() {
			c.probeOnce(ctx)
			c.probing.Unlock()
			if c.health.downFor() == 0 {
				return nil
			}
		}
		t := time.NewTimer(probeEvery)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// probeOnce sends one request to learn whether the API server answers.
func (c *Client) probeOnce(ctx context.Context) {
	if err := c.lim.Wait(ctx); err != nil {
		return
	}
	c.probeMu.Lock()
	ref := c.probe
	c.probeMu.Unlock()
	var err error
	if ref != (secretRef{}) {
		err = c.patch(ctx, ref, []byte(`{}`), true)
	} else {
		_, err = raw(c.rest.Get().AbsPath("/version").MaxRetries(0).Do(ctx))
	}
	if ctx.Err() != nil {
		return
	}
	if err == nil {
		c.health.ok(c.log)
		return
	}
	// The probe's Secret passed the preflight: a 401 or 403 now is the
	// API server refusing (see call).
	switch kind, _ := classify(err); kind {
	case kindBusy, kindDown, kindAuth, kindForbidden:
		c.health.fail(c.log, err)
	default:
		c.health.ok(c.log)
	}
}
