package job

import (
	"context"
	"errors"
	"fmt"
	"os"
	"pwrotate/report"
	"slices"
	"sort"
	"sync"
	"time"
)

// runCounts tallies outcomes as they are recorded.
type runCounts struct {
	mu          sync.Mutex
	byStatus    map[report.Status]int
	resetFailed int

	delivered, notDelivered int // updated rows with delivered true, false
}

// count adds row's outcome to the counts with sign +1 or -1.
func (c *runCounts) count(row report.Row, sign int) {
	c.byStatus[row.Status] += sign
	if row.SessionsReset == "false" {
		c.resetFailed += sign
	}
	if row.Status == report.Updated {
		switch row.Delivered {
		case "true":
			c.delivered += sign
		case "false":
			c.notDelivered += sign
		}
	}
}

// replace counts row instead of old, a row of the same line.
func (c *runCounts) replace(old, row report.Row) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.count(old, -1)
	c.count(row, +1)
}

func (c *runCounts) add(row report.Row) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.count(row, +1)
}

// errFatalAPI stops a run: the API refused the key (401/403), or its
// certificate failed verification.
var errFatalAPI = errors.New("stopping the run")

// apply carries out the plan in out, phase by phase: what earlier runs
// recorded (resume), the new generation generated and sealed before
// anything is sent, the records known without a call, the sending (pool),
// and the outcome (summary.json, the exit code).
func (r *Runner) apply(ctx context.Context, p *plan, out *report.Folder, sum *report.Summary) (err error) {
	// When an earlier run last showed signs of life, read before this run
	// touches a file (opening the results may repair their tail).
	lastActivity, err := lastActivityIn(out)
	if err != nil {
		return fatal("output folder %s: %w", out.Path, err)
	}
	r.outDir = out.Path
	res, existing, err := r.files.OpenResults(out.ResultsPath())
	if err != nil {
		return fatal("results: %w", err)
	}
	r.mu.Lock()
	r.results = res
	r.mu.Unlock()
	defer func() {
		if cerr := res.Close(); cerr != nil && err == nil {
			err = fatal("results: %w", cerr)
		}
	}()
	if err := r.openKeys(out, p); err != nil {
		return err
	}
	defer r.closeKeys()

	counts := &runCounts{byStatus: map[report.Status]int{}}
	owed, err := r.recall(p, out, existing, counts)
	if err != nil {
		return err
	}
	existing = nil
	settled := r.settle(p)
	byPrivilege(p)
	o := outcome{total: len(p.records)}
	if o.gens, err = report.SealedGenerations(out.Path); err != nil {
		return fatal("sealed files: %w", err)
	}
	if len(o.gens) == 0 || len(p.pending) == 0 {
		// No earlier run sent a change whose outcome is unknown.
		lastActivity = time.Time{}
	}
	o.gen, o.pending = 1, len(p.pending)
	if len(o.gens) > 0 {
		o.gen = o.gens[len(o.gens)-1] + 1
	}
	if o.pending > 0 {
		sum.Generation = o.gen
	}
	r.beat = func() {
		t := r.cfg.Now()
		_ = os.Chtimes(out.ManifestPath(), t, t)
	}
	r.printPlan(p, fmt.Sprintf("applying, generation %d, %d still to do", o.gen, len(p.pending)))
	r.log.Info("plan", "records", len(p.records), "valid", p.valid, "invalid", len(p.records)-p.valid,
		"skipped", len(p.skip), "pending", len(p.pending), "generation", o.gen)
	p.todo = make([]todo, len(p.pending))
	for i, idx := range p.pending {
		p.todo[i] = todo{line: int32(p.records[idx].Line), userID: int32(p.records[idx].UserID)}
	}
	r.groupPending(p)
	for _, ok := range p.recorded {
		if ok {
			o.done++
		}
	}
	if err := r.recordManifest(out, p, sum); err != nil {
		return err
	}
	defer p.pw.wipe()
	if err := r.sealPending(out, p, o.gen); err != nil {
		return err
	}
	if err := r.recordSettled(res, settled, counts); err != nil {
		return err
	}
	// From here on the pool needs p.todo, p.pw, p.source and p.groups only.
	p.in, p.records, p.recorded, p.skip, p.orig = nil, nil, nil, nil, nil
	r.send(ctx, p, o.gen, owed, lastActivity, res, counts, &o)
	return r.finish(ctx, out, res, counts, sum, o)
}

// outcome is what apply knows of the run when the sending ends.
type outcome struct {
	gens         []int // generations sealed before this run
	gen, pending int   // this run's generation, and how many it sends
	total, done  int   // records, and those with an outcome
	poolErr      error // a fatal error of the sending
	syncErr      error // the last fsync of the results
	took         time.Duration
	calls        int64 // API calls while sending

	held heldUsers // users with targets left unchanged: the Kubernetes API was down
}

// recall takes in what earlier runs recorded in results.csv (existing):
// the records it settles, and the session resets still owed. Records are
// in input order, so their lines ascend: a recorded row's record is found
// by binary search (no map: a plan can be millions long). A later row of a
// line supersedes an earlier one (a session reset or an API key rotation
// recorded after its change): they are walked from the last.
func (r *Runner) recall(p *plan, out *report.Folder, existing []report.Row, counts *runCounts) ([]owedReset, error) {
	p.recorded = make([]bool, len(p.records))
	var owed []owedReset
	for k := len(existing) - 1; k >= 0; k-- {
		row := existing[k]
		i := sort.Search(len(p.records), func(i int) bool { return p.records[i].Line >= row.Line })
		if i == len(p.records) || p.records[i].Line != row.Line {
			continue
		}
		if rec := &p.records[i]; row.UserID != rec.UserID {
			// What is owed (a reset, a key) acts on the row's user: it must
			// be the record's.
			return nil, fatal("--resume: %s: the row of input line %d is of user %d, but line %d of %s is user %d: refusing to act on results that are not of this input",
				out.ResultsPath(), row.Line, row.UserID, row.Line, p.in.Name, rec.UserID)
		}
		if p.recorded[i] {
			continue
		}
		p.recorded[i] = true
		counts.add(row)
		if _, skipped := p.skip[int32(i)]; skipped || p.records[i].Invalid != "" {
			continue // never a reset or a key for a record left alone
		}
		r.keys.noteRecorded(row)
		u := owedReset{row: row, reset: r.resets && resetOwed(row), deliver: r.cfg.Deliver != nil && deliveryOwed(row)}
		if u.reset || u.deliver {
			owed = append(owed, u)
		}
	}
	slices.SortFunc(owed, func(a, b owedReset) int { return a.row.Line - b.row.Line })
	if len(existing) > 0 {
		resets, deliveries := 0, 0
		for _, u := range owed {
			if u.reset {
				resets++
			}
			if u.deliver {
				deliveries++
			}
		}
		r.log.Info("resuming", "out", out.Path, "recorded", len(existing), "sessionResetsOwed", resets, "deliveriesOwed", deliveries)
	}
	return owed, nil
}

// settle returns the rows of the records known before any call (invalid
// and skipped) that no earlier run recorded, and lists the others as
// pending.
func (r *Runner) settle(p *plan) []report.Row {
	var settled []report.Row
	for i := range p.records {
		if p.recorded[i] {
			continue
		}
		if skip := p.skip[int32(i)]; p.records[i].Invalid != "" || skip != "" {
			settled = append(settled, r.baseRow(p.records[i], report.Invalid, skip))
			p.recorded[i] = true
		} else {
			p.pending = append(p.pending, int32(i))
		}
	}
	return settled
}

// recordSettled records the rows known before any call.
func (r *Runner) recordSettled(res *report.ResultsFile, settled []report.Row, counts *runCounts) error {
	if len(settled) == 0 {
		return nil
	}
	for _, row := range settled {
		if row.Status == report.Skipped {
			// Deliberate and listed in the plan and results.csv: one
			// line each only at debug (a glob may match thousands).
			r.log.Debug("skipped record", "line", row.Line, "user", row.UserID, "reason", row.Error)
		} else {
			r.log.Warn("invalid record", "line", row.Line, "reason", row.Error)
		}
		counts.add(row)
	}
	if err := res.Append(settled...); err != nil {
		return fatal("results: %w", err)
	}
	if err := res.Sync(); err != nil {
		return fatal("results: %w", err)
	}
	r.cfg.Hook("invalid-recorded", 1)
	return nil
}

// send is the sending phase: the session resets still owed, the wait for
// a late change of a stopped run, then the pool. Its results go into o.
func (r *Runner) send(ctx context.Context, p *plan, gen int, owed []owedReset, lastActivity time.Time,
	res *report.ResultsFile, counts *runCounts, o *outcome) {
	cfg := r.cfg
	if cfg.Progress != nil {
		cfg.Progress.SetTotal(len(p.pending))
	}
	start := cfg.Now()
	calls0 := int64(0)
	if cfg.Counter != nil {
		calls0 = cfg.Counter.Calls()
	}
	r.sending.Store(true)
	o.poolErr = r.resetOwedSessions(ctx, owed, res, counts)
	recorded := 0
	if o.poolErr == nil && ctx.Err() == nil && len(p.todo) > 0 && !lastActivity.IsZero() {
		r.waitOutLateChanges(ctx, lastActivity, len(p.todo), gen)
	}
	if o.poolErr == nil && ctx.Err() == nil {
		recorded, o.held, o.poolErr = r.pool(ctx, p, gen, res, counts)
	}
	o.took = cfg.Now().Sub(start)
	if cfg.Counter != nil {
		o.calls = cfg.Counter.Calls() - calls0
	}
	o.syncErr = res.Sync()
	o.done += recorded
}

// finish turns the outcome into the summary and the run's error (its exit
// code): a complete run's results are rewritten in input order, and
// summary.json is written in every case.
func (r *Runner) finish(ctx context.Context, out *report.Folder, res *report.ResultsFile, counts *runCounts, sum *report.Summary, o outcome) error {
	cfg := r.cfg
	counts.mu.Lock()
	for st, n := range counts.byStatus {
		sum.Counts[string(st)] = n
	}
	resetFailed := counts.resetFailed
	notDelivered := counts.notDelivered
	if r.dlv != nil {
		sum.Delivery = &report.DeliveryStats{Targets: r.dlv.targets, Ignored: r.dlv.ignored,
			Delivered: counts.delivered, NotDelivered: counts.notDelivered, NotDue: r.dlv.notDue}
	}
	counts.mu.Unlock()
	sum.Counts["pending"] = o.total - o.done
	if cfg.Counter != nil {
		sum.APICalls = int(cfg.Counter.Calls())
		sum.Retries = int(cfg.Counter.Retries())
		if o.took > 0 {
			sum.AchievedRate = float64(o.calls) / o.took.Seconds()
		}
	}
	sum.Outputs = []string{out.ResultsPath(), out.SummaryPath()}
	sealed, err := report.SealedFiles(out.Path)
	if err != nil {
		r.log.Warn("listing the sealed files for the summary", "err", err)
	}
	for _, name := range sealed {
		sum.Outputs = append(sum.Outputs, out.File(name))
	}
	sum.Outputs = append(sum.Outputs, r.keys.outputs()...)
	sum.APIKeys = r.keys.stats()

	var runErr error
	switch {
	case o.syncErr != nil:
		runErr = fatal("recording results: %w", o.syncErr)
	case ctx.Err() != nil:
		sum.Interrupted = true
		runErr = &ExitError{Code: report.ExitInterrupted, Err: errors.New("interrupted: run again with --resume to finish")}
	case o.poolErr != nil:
		runErr = &ExitError{Code: report.ExitFatal, Err: o.poolErr}
	case o.held.n > 0:
		// Not a fatal error: the run stopped changing passwords that it
		// could not deliver; a resume finishes it.
		runErr = &ExitError{Code: report.ExitIncomplete, Err: fmt.Errorf("%s with --deliver targets not changed, %d not delivered: %w; run again with --resume once the Kubernetes API answers",
			plural(o.held.n, "user"), notDelivered, o.held.err)}
	case o.done != o.total:
		runErr = fatal("run incomplete: %d records have no outcome; run again with --resume", o.total-o.done)
	default:
		sum.Complete = true
		cfg.Hook("complete", 1)
		if err := res.Close(); err != nil {
			return fatal("results: %w", err)
		}
		if err := r.files.RewriteSorted(out.ResultsPath()); err != nil {
			return fatal("results: %w", err)
		}
		// Skips are deliberate: they do not make the run incomplete.
		failed := o.total - sum.Counts[string(report.Updated)] - sum.Counts[string(report.Skipped)]
		keysFailed := 0
		if sum.APIKeys != nil {
			keysFailed = sum.APIKeys.NotRotated
		}
		if failed > 0 || resetFailed > 0 || keysFailed > 0 || notDelivered > 0 {
			msg := fmt.Sprintf("%d records not updated, %d session resets failed, %d API keys not rotated", failed, resetFailed, keysFailed)
			if r.dlv != nil {
				msg += fmt.Sprintf(", %d changes not delivered", notDelivered)
				if notDelivered > 0 {
					msg += " (run again with --resume to deliver them, with no second change)"
				}
			}
			runErr = &ExitError{Code: report.ExitIncomplete, Err: errors.New(msg)}
		}
		if r.dlv != nil && notDelivered == 0 {
			r.removeEscrow(out)
		}
	}
	if runErr != nil {
		var ee *ExitError
		errors.As(runErr, &ee)
		sum.ExitCode = ee.Code
	}
	sum.FinishedAt = cfg.Now().UTC()
	if err := r.files.WriteSummary(out.SummaryPath(), *sum); err != nil && runErr == nil {
		runErr = fatal("summary: %w", err)
	}
	return runErr
}
