package job

import (
	"context"
	"errors"
	"fmt"
	"pwrotate/report"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"pwrotate/report/deliver"
)

// syncEvery is the batch of recorded outcomes after which results are
// fsynced, besides the syncer's once a second, but not sooner than
// syncGap after the last such fsync: an fsync stalls the appends behind it
// (on ext4 an append's modification time waits for the fsync's journal
// commit), and at thousands of outcomes a second one every 256 cost 3-8%
// of a run's rate (docs/performance.md).
const (
	syncEvery = 256
	syncGap   = 100 * time.Millisecond
)

// pool sends the pending changes through the worker pool. It returns a
// fatal error (401/403, results not writable); an interruption shows as
// ctx being done.
func (r *Runner) pool(ctx context.Context, p *plan, gen int, res *report.ResultsFile, counts *runCounts) (recorded int, held heldUsers, err error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	syncDone := r.syncer(ctx, res, cancel)
	r.beat()
	w := &poolRun{r: r, p: p, gen: gen, res: res, counts: counts, cancel: cancel}
	var g errgroup.Group
	g.SetLimit(r.cfg.Workers)
	r.keys.start(res, cancel)
	r.keys.dispatchOwed(ctx, &g)
	// cfg.Workers goroutines take the users in plan order: one goroutine
	// per worker, not per user (a new goroutine's stack grows anew on
	// every call, which the profile showed as 3% of a run's CPU).
	var next atomic.Int64
	for range min(r.cfg.Workers, len(p.todo)) {
		g.Go(func() error {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= len(p.todo) {
					return nil
				}
				w.send(ctx, i)
			}
			return nil
		})
	}
	_ = g.Wait()
	r.keys.finish()
	cancel(nil)
	<-syncDone
	recorded = int(w.recorded.Load())
	held = heldUsers{n: int(w.held.Load()), err: w.heldErr}
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return recorded, held, err
	}
	return recorded, held, nil
}

// heldUsers are the users with --deliver targets a pool left unchanged
// because the Kubernetes API was down too long, and why.
type heldUsers struct {
	n   int
	err error
}

// syncer makes results durable at least every second, and touches run.json
// (the heartbeat a later --resume reads) as often, until ctx is done; the
// channel closes when it has stopped.
func (r *Runner) syncer(ctx context.Context, res *report.ResultsFile, cancel context.CancelCauseFunc) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(heartbeatEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if err := res.Sync(); err != nil {
					cancel(fmt.Errorf("recording results: %w", err))
					return
				}
				r.beat()
			}
		}
	}()
	return done
}

// poolRun is one pool's sending: what every worker shares.
type poolRun struct {
	r      *Runner
	p      *plan
	gen    int
	res    *report.ResultsFile
	counts *runCounts
	cancel context.CancelCauseFunc

	answered, changed, recorded atomic.Int64
	lastBatchSync               atomic.Int64 // when the last fsync for syncEvery began (Unix ns)
	delivered                   atomic.Int64 // deliveries ended (hookDelivered)
	// held counts the users with targets not changed because the
	// Kubernetes API was down longer than its outage limit; heldErr says why.
	held    atomic.Int64
	heldMu  sync.Mutex
	heldErr error
}

// send changes the password of p.todo[i] and records the outcome: with
// resets, the change first (saying the reset is owed), then the reset;
// then the user's API key, with --rotate-api-keys.
func (w *poolRun) send(ctx context.Context, i int) {
	cfg := w.r.cfg
	line, userID := int(w.p.todo[i].line), int(w.p.todo[i].userID)
	deliverTo := w.r.hasTargets(userID)
	if deliverTo {
		// A change whose delivery cannot land would break one more
		// consumer: while the Kubernetes API is down, wait; past its
		// outage limit, leave the user for a --resume.
		if err := cfg.Deliver.WaitReady(ctx); err != nil {
			if ctx.Err() == nil {
				w.hold(err)
			}
			return
		}
	}
	o := cfg.Client.ChangePassword(ctx, userID, w.p.pw.at(i))
	cfg.Hook("answered", int(w.answered.Add(1)))
	if o.Interrupted {
		return
	}
	if o.Fatal {
		w.cancel(fmt.Errorf("%w: %v (no further requests sent)", errFatalAPI, o.Err))
		return
	}
	row := report.Row{
		Line: line, UserID: userID, Generation: w.gen,
		Attempts: o.Attempts, HTTPStatus: o.HTTPStatus, ErrorCode: o.ErrorCode,
		PasswordSource: "generated", SealedFor: w.p.groupNames[w.p.group(i)],
	}
	if w.p.source[i] {
		row.PasswordSource = "input"
	}
	if o.OK {
		row.Status = report.Updated
		if w.r.resets || deliverTo {
			// The change, its delivery and its reset are one unit: the
			// change is recorded first, saying what is owed (a kill now
			// leaves that for --resume), and the rest runs even if the
			// run is being stopped.
			if w.r.resets {
				row.SessionsReset, row.Error = "false", resetOwedText
			}
			if deliverTo {
				row.Delivered, row.Error = "false", joinText(row.Error, deliverOwedText)
			}
			row.FinishedAt = cfg.Now().UTC()
			w.r.keys.owe(&row)
			if !w.append(row) {
				return
			}
			cfg.Hook("changed", int(w.changed.Add(1)))
			uctx, ucancel := unitContext(ctx, cfg.Client.Timeout())
			row.Error = ""
			var dres deliver.Result
			if deliverTo {
				dres = cfg.Deliver.Deliver(uctx, userID, w.p.pw.at(i))
				cfg.Hook(hookDelivered, int(w.delivered.Add(1)))
			}
			if w.r.resets {
				w.r.resetSessions(uctx, &row, w.cancel)
			}
			if deliverTo {
				setDelivered(&row, dres)
			}
			ucancel()
		}
	} else {
		row.Status = report.Failed
		row.Error = errText(o.Err)
		if o.Unknown && !strings.Contains(row.Error, "outcome unknown") {
			row.Error = "outcome unknown: " + row.Error
		}
		w.r.log.Warn("record failed", "line", line, "user", userID, "attempts", o.Attempts, "reason", row.Error)
	}
	row.FinishedAt = cfg.Now().UTC()
	w.r.keys.owe(&row)
	if !w.append(row) {
		return
	}
	w.counts.add(row)
	if cfg.Progress != nil {
		cfg.Progress.Done(row.Status != report.Updated)
	}
	n := w.recorded.Add(1)
	if n%syncEvery == 0 && !w.batchSync(n) {
		return
	}
	cfg.Hook("recorded", int(n))
	w.r.keys.rotate(ctx, row)
}

// hold notes a user with targets left unchanged: the Kubernetes API has
// been down longer than its outage limit.
func (w *poolRun) hold(err error) {
	if w.held.Add(1) == 1 {
		w.r.log.Error("kubernetes API down too long: no further password changes for users with --deliver targets; run again with --resume once it answers", "err", err)
	}
	w.heldMu.Lock()
	w.heldErr = err
	w.heldMu.Unlock()
}

// append records row; false (the run stopped) when it could not.
func (w *poolRun) append(row report.Row) bool {
	if err := w.res.Append(row); err != nil {
		w.r.cfg.Hook("record-failed", int(w.answered.Load()))
		w.cancel(fmt.Errorf("recording results: %w", err))
		return false
	}
	return true
}

// batchSync fsyncs the results after the n-th outcome, unless another
// batch fsync began less than syncGap ago; false (the run stopped) when
// the fsync failed.
func (w *poolRun) batchSync(n int64) bool {
	now, last := time.Now().UnixNano(), w.lastBatchSync.Load()
	if now-last < int64(syncGap) || !w.lastBatchSync.CompareAndSwap(last, now) {
		return true
	}
	w.r.cfg.Hook("batch-fsync", int(n))
	if err := w.res.Sync(); err != nil {
		w.cancel(fmt.Errorf("recording results: %w", err))
		return false
	}
	return true
}

// heartbeatEvery is how often a run's pool marks run.json (its mtime) as
// a sign of life while it sends changes.
const heartbeatEvery = time.Second

// unitContext returns the context for the rest of a unit of work whose
// change succeeded (its session reset, its API key): it is not cancelled
// with ctx (a signal, or another worker's 401), but ends grace (one
// --timeout) after ctx does, so that a stopping run still ends in bounded
// time. Call cancel when done.
func unitContext(ctx context.Context, grace time.Duration) (context.Context, context.CancelFunc) {
	uctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	go func() {
		select {
		case <-uctx.Done():
			return
		case <-ctx.Done():
		}
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-uctx.Done():
		case <-t.C:
			cancel()
		}
	}()
	return uctx, cancel
}

// resetSessions resets the sessions of row's user and says so in row
// (SessionsReset, Error, FinishedAt). A 401/403 stops the run through
// stop.
func (r *Runner) resetSessions(ctx context.Context, row *report.Row, stop context.CancelCauseFunc) {
	ro := r.cfg.Client.ResetSessions(ctx, row.UserID)
	row.SessionsReset = strconv.FormatBool(ro.OK)
	row.Error = ""
	if !ro.OK {
		row.Error = "password changed; session reset failed: " + errText(ro.Err)
		r.log.Warn("session reset failed", "line", row.Line, "user", row.UserID, "reason", errText(ro.Err))
		if ro.Fatal {
			stop(fmt.Errorf("%w: %v (no further requests sent)", errFatalAPI, ro.Err))
		}
	}
	row.FinishedAt = r.cfg.Now().UTC()
}
