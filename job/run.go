// Package job is the rotation itself: it reads and validates the input,
// makes the plan, seals the passwords, runs the rate-limited worker pool and
// keeps the run's state in the output folder so that an interrupted or
// killed run can be resumed without losing a password.
package job

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"filippo.io/age"
	"golang.org/x/sync/errgroup"

	"pwrotate/report"
	"pwrotate/rotate"
	"pwrotate/secret"
)

// Exit codes, as the contract gives them.
const (
	ExitOK          = 0 // every record updated (dry run: no invalid record)
	ExitFatal       = 1 // could not start, or a fatal error
	ExitIncomplete  = 2 // finished, but some records failed or were invalid, or a reset failed
	ExitInterrupted = 3 // interrupted by a signal: run again with --resume
	ExitBusy        = 4 // the output folder is held by another run: try again later
)

// Progress is told about every finished record (console.Progress).
type Progress interface {
	SetTotal(n int)
	Done(failed bool)
}

// Counter reports the API calls made so far (metrics.Run).
type Counter interface {
	Calls() int64
	Retries() int64
}

// Config is everything a run needs; main builds it from the flags.
type Config struct {
	InputPath string    // "-" for Stdin
	Stdin     io.Reader // read when InputPath is "-"
	InputData []byte    // read instead of InputPath when non-nil (--demo)
	InputName string    // the name InputData goes by
	// Select, when set, takes the users from ECGrid instead of an input
	// (run --select): listed through Client, snapshotted to
	// OUT/SnapshotName before the plan; a resume reads the snapshot.
	Select *rotate.UserFilter
	// ListProgress, when set, is told after each page of a --select
	// listing: the page number, its users, the users listed so far.
	ListProgress  func(pageNo, pageUsers, total int)
	Apply         bool
	Out           string // output folder; optional in a dry run
	Resume        bool
	Recipients    []age.Recipient
	Client        *rotate.Client // nil: no API key (dry run only)
	Endpoint      string         // base URL, for the plan
	Generator     *rotate.Generator
	Workers       int
	ResetSessions bool
	RotateAPIKeys bool // after a change (and reset), rotate the user's API key (apikeys.go)
	IncludeSelf   bool
	Protect       *Protect // accounts never to rotate (--protect); nil: none
	Reason        string   // --reason: recorded in run.json and summary.json
	MaxUsers      int
	Shard, Shards int // process shard Shard of Shards (Shards <= 1: everything)
	Version       string
	Logger        *slog.Logger
	Stdout        io.Writer // where the plan is printed; nil: nowhere
	Progress      Progress  // optional
	Counter       Counter   // optional
	// Hook, when set, is called at named points of the run (tests use it
	// to kill the process at an exact step). n counts occurrences.
	Hook func(point string, n int)
	// Now is the clock (default time.Now); Sleep waits for d or until ctx
	// is done (default a timer). Tests replace both to see the waits of a
	// resume without waiting.
	Now   func() time.Time
	Sleep func(ctx context.Context, d time.Duration) error
}

// ExitError is a run's failure with the exit code it maps to.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string { return e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }

func fatal(format string, args ...any) error {
	return &ExitError{Code: ExitFatal, Err: fmt.Errorf(format, args...)}
}

// Runner runs one rotation. Abort may be called from another goroutine
// (a second signal) to make what is recorded durable before exiting.
type Runner struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	results *report.ResultsFile

	keys *keyRotator // nil without --rotate-api-keys
	// files writes the output folder's files, calling cfg.Hook inside
	// every atomic write ("atomic-NAME", n counting writes of NAME).
	files report.Files
	// resets is set when the run resets sessions after each change:
	// --reset-sessions, or a manifest that says the run was started so.
	resets bool
	// beat marks the run as active (heartbeat: run.json's mtime).
	beat func()
	sel  *Selection // what --select listed
}

// New returns a Runner for cfg.
func New(cfg Config) *Runner {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Workers < 1 {
		cfg.Workers = 1
	}
	if cfg.Hook == nil {
		cfg.Hook = func(string, int) {}
	}
	if cfg.Sleep == nil {
		cfg.Sleep = sleep
	}
	r := &Runner{cfg: cfg, log: cfg.Logger}
	var hookMu sync.Mutex
	seen := map[string]int{}
	r.files.Hook = func(point string) {
		hookMu.Lock()
		seen[point]++
		n := seen[point]
		hookMu.Unlock()
		cfg.Hook(point, n)
	}
	return r
}

// SetProgress sets the display told about each finished record.
func (r *Runner) SetProgress(p Progress) { r.cfg.Progress = p }

// Abort syncs the results recorded so far. Call it before exiting at once.
func (r *Runner) Abort() {
	r.mu.Lock()
	res := r.results
	r.mu.Unlock()
	if res != nil {
		_ = res.Sync()
	}
}

// plan is the run's state in memory: the records of this shard, which of
// them already have an outcome, and the passwords of those still to do.
type plan struct {
	in       *Input
	records  []Record // this shard's records, in input order
	orig     []int32  // when sharded: the index in in.Records of each of records
	caller   *rotate.Caller
	valid    int              // records not invalid (skipped ones included)
	skip     map[int32]string // by index into records: why a valid record is skipped
	recorded []bool           // by index into records
	pending  []int32
	pw       pwArena // parallel to pending
	source   []bool  // parallel to pending: true if from input
	todo     []todo  // parallel to pending: what the pool needs of each record
}

// todo is what the pool needs of a pending record: the full records are
// dropped before the updates start (a plan can be millions long).
type todo struct {
	line, userID int32
}

// Run carries out the run. The Summary is filled in even when the error is
// not nil; its ExitCode is the process's exit code.
func (r *Runner) Run(ctx context.Context) (report.Summary, error) {
	cfg := r.cfg
	sum := report.Summary{
		Version:   cfg.Version,
		StartedAt: cfg.Now().UTC(),
		DryRun:    !cfg.Apply,
		Counts:    map[string]int{},
		Reason:    cfg.Reason,
	}
	if cfg.Shards > 1 {
		sum.Shard = fmt.Sprintf("%d/%d", cfg.Shard, cfg.Shards)
	}
	err := r.run(ctx, &sum)
	if sum.FinishedAt.IsZero() {
		// Not recorded in summary.json by the run (which sets it when it
		// writes one, and keeps the folder's when it was already complete).
		sum.FinishedAt = cfg.Now().UTC()
	}
	if err != nil {
		var ee *ExitError
		if errors.As(err, &ee) {
			sum.ExitCode = ee.Code
		} else {
			sum.ExitCode = ExitFatal
		}
	}
	return sum, err
}

func (r *Runner) run(ctx context.Context, sum *report.Summary) error {
	cfg := r.cfg
	var out *OutDir
	if cfg.Apply || cfg.Out != "" {
		if cfg.Apply && len(cfg.Recipients) == 0 {
			return fatal("--recipient: at least one recipient is needed with --apply")
		}
		if err := CheckLayout(cfg.Out, cfg.Shard, cfg.Shards); err != nil {
			return &ExitError{Code: ExitFatal, Err: err}
		}
		var err error
		if out, err = OpenOut(cfg.Out, cfg.Resume); err != nil {
			if errors.Is(err, ErrBusy) {
				return &ExitError{Code: ExitBusy, Err: err}
			}
			return &ExitError{Code: ExitFatal, Err: err}
		}
		defer out.Close()
		out.Files = r.files
		cfg.Hook("locked", 1)
	}

	in, err := r.input(ctx, out)
	if err != nil {
		return err
	}
	sum.Input, sum.InputSHA256 = in.Name, in.SHA256
	if sel := r.Selection(); sel != nil {
		sum.Selection = &report.Selection{Filter: sel.Spec, Listed: sel.Listed, Dropped: sel.Dropped}
	}
	if where, pattern, ok := cfg.Protect.FirstGlob(); ok && !in.HasLogin {
		return fatal("--protect %s: login pattern %q needs a login column in the input, and %s has none (%s)",
			where, pattern, in.Name, describeColumns(in.Columns))
	}

	r.resets = cfg.ResetSessions
	if out != nil {
		m, ok, err := out.ReadManifest()
		if err != nil {
			return &ExitError{Code: ExitFatal, Err: err}
		}
		if ok && m.ResetSessions && !r.resets {
			r.log.Info("the run was started with --reset-sessions: resetting sessions as it promised", "out", out.Path)
			r.resets = true
		}
		if ok && m.Shard != sum.Shard {
			return fatal("output folder %s holds %s (run.json); this run is %s: a folder is bound to the shard layout of its first run",
				out.Path, layoutName(m.Shard), layoutName(sum.Shard))
		}
		if ok && m.InputSHA256 != in.SHA256 {
			return fatal("--resume: %s holds a run of %s (sha256 %.12s…), not of this input %s (sha256 %.12s…): refusing to mix them",
				out.Path, m.Input, m.InputSHA256, in.Name, in.SHA256)
		}
		if ok && sum.Reason == "" {
			sum.Reason = m.Reason // a resume without --reason continues the same change
		}
		prev, perr := report.ReadSummary(out.File(SummaryName))
		if perr == nil && prev.DryRun {
			return fatal("output folder %s holds a dry run's plan, not a run: choose another --out", out.Path)
		}
		if ok {
			owed := false
			if perr == nil && prev.Complete && r.resets && prev.ExitCode == ExitIncomplete {
				if owed, err = resetsOwed(out.File(ResultsName)); err != nil {
					return fatal("results: %w", err)
				}
			}
			if perr == nil && prev.Complete && !owed && !r.keysOwedIn(out) {
				r.log.Info("run already complete: nothing to do", "out", out.Path, "exitCode", prev.ExitCode)
				*sum = prev
				// The rotation happened when the folder says, not now: a
				// re-run must not look like a fresh success to the alerts.
				if prev.ExitCode != ExitOK {
					return &ExitError{Code: prev.ExitCode, Err: fmt.Errorf("run in %s already complete with exit code %d", out.Path, prev.ExitCode)}
				}
				return nil
			}
			if m.ProtectSHA256 != cfg.Protect.Fingerprint() {
				return fatal("--resume: the run in %s was started with %s, this one has %s: refusing to change the protected accounts mid-run "+
					"(a user protected now may already have been sent a password); resume with the same --protect files",
					out.Path, describeProtect(m.ProtectEntries, m.ProtectSHA256), describeProtect(cfg.Protect.Len(), cfg.Protect.Fingerprint()))
			}
		}
	}

	p := &plan{in: in}
	p.records, p.orig = r.shardRecords(in.Records)
	sum.Records = len(p.records)
	if err := r.preflight(ctx, p); err != nil {
		return err
	}
	for i := range p.records {
		if p.records[i].Invalid != "" {
			continue
		}
		p.valid++
		if why := r.skipReason(&p.records[i], in.Login(p.src(i)), p.caller); why != "" {
			if p.skip == nil {
				p.skip = map[int32]string{}
			}
			p.skip[int32(i)] = why
		}
	}
	if cfg.MaxUsers > 0 {
		// The cap is on the whole plan, every shard's users together.
		total := 0
		for i := range in.Records {
			if in.Records[i].Invalid == "" && r.skipReason(&in.Records[i], in.Login(i), p.caller) == "" {
				total++
			}
		}
		if total > cfg.MaxUsers {
			return fatal("--max-users %d: the plan would change %d users; refusing", cfg.MaxUsers, total)
		}
		if cfg.RotateAPIKeys {
			if keys := r.keysPlanned(p, validUsers(p)); keys > cfg.MaxUsers {
				return fatal("--max-users %d: the plan would rotate %d API keys; refusing", cfg.MaxUsers, keys)
			}
		}
	}
	if !cfg.Apply {
		return r.dryRun(p, out, sum)
	}
	return r.apply(ctx, p, out, sum)
}

// readInputCtx reads the input, giving up when ctx is done: a FIFO with no
// writer or a stdin that never ends must not make a signal wait. (The
// reading goroutine is left blocked; the process is about to exit.)
func (r *Runner) readInputCtx(ctx context.Context) (*Input, error) {
	type result struct {
		in  *Input
		err error
	}
	ch := make(chan result, 1)
	go func() {
		in, err := r.readInput()
		ch <- result{in, err}
	}()
	select {
	case res := <-ch:
		if res.err != nil {
			return nil, &ExitError{Code: ExitFatal, Err: res.err}
		}
		return res.in, nil
	case <-ctx.Done():
		return nil, &ExitError{Code: ExitInterrupted, Err: errors.New("interrupted while reading the input")}
	}
}

// keepLogins reports whether the input's logins must be kept: only login
// globs need them.
func (r *Runner) keepLogins() bool {
	_, _, ok := r.cfg.Protect.FirstGlob()
	return ok
}

func (r *Runner) readInput() (*Input, error) {
	keep := r.keepLogins()
	if r.cfg.InputData != nil {
		name := r.cfg.InputName
		if name == "" {
			name = "input"
		}
		return readInputWith(bytes.NewReader(r.cfg.InputData), name, defaultInputLimits, keep)
	}
	if r.cfg.InputPath == "" {
		return nil, errors.New("--input: a users CSV is required")
	}
	stdin := r.cfg.Stdin
	if stdin == nil {
		stdin = os.Stdin
	}
	return readInputFile(r.cfg.InputPath, stdin, keep)
}

// ShardOf returns the shard (0..shards-1) that userID belongs to.
func ShardOf(userID, shards int) int {
	h := fnv.New32a()
	var b [8]byte
	h.Write(strconv.AppendInt(b[:0], int64(userID), 10))
	return int(h.Sum32() % uint32(shards))
}

// shardRecords keeps the records of this shard, and when sharded the
// index of each in all. Records without a usable userId belong to shard 0,
// so that each is reported exactly once.
func (r *Runner) shardRecords(all []Record) (kept []Record, orig []int32) {
	if r.cfg.Shards <= 1 {
		return all, nil
	}
	for i, rec := range all {
		s := 0
		if rec.UserID != 0 {
			s = ShardOf(rec.UserID, r.cfg.Shards)
		}
		if s == r.cfg.Shard {
			kept = append(kept, rec)
			orig = append(orig, int32(i))
		}
	}
	return kept, orig
}

// src returns the index in p.in.Records of record i of the plan.
func (p *plan) src(i int) int {
	if p.orig == nil {
		return i
	}
	return int(p.orig[i])
}

// preflight asks who the key belongs to and checks its AuthLevel.
func (r *Runner) preflight(ctx context.Context, p *plan) error {
	cfg := r.cfg
	if cfg.Client == nil {
		if cfg.Apply {
			return fatal("no API key: set ECGRID_API_KEY or pass --api-key-file")
		}
		return nil
	}
	caller, o := cfg.Client.Me(ctx)
	if !o.OK {
		if o.Interrupted {
			return &ExitError{Code: ExitInterrupted, Err: fmt.Errorf("preflight: %w", o.Err)}
		}
		return fatal("preflight GET /v2/users/me: %w", o.Err)
	}
	r.log.Info("preflight", "caller", caller.UserID, "authLevel", caller.LevelName)
	if caller.Level < rotate.LevelNetworkAdmin {
		return fatal("preflight: the API key belongs to user %d with AuthLevel %q; changing passwords needs NetworkAdmin or higher",
			caller.UserID, caller.LevelName)
	}
	p.caller = &caller
	return nil
}

// selfReason is why the caller's own record is skipped.
const selfReason = "the caller's own account (pass --include-self to rotate it)"

// skipReason returns why a valid record is deliberately left alone, or "":
// it is protected by --protect, or it is the caller's own account (unless
// --include-self).
func (r *Runner) skipReason(rec *Record, login string, caller *rotate.Caller) string {
	if why := r.cfg.Protect.Match(rec.UserID, login); why != "" {
		return why
	}
	if caller != nil && !r.cfg.IncludeSelf && rec.UserID == caller.UserID {
		return selfReason
	}
	return ""
}

// byPrivilege orders the pending users most privileged first (Root first,
// unknown levels last), input order within a level. Only an input with an
// authLevel column is reordered.
func byPrivilege(p *plan) {
	if !p.in.HasAuthLevel {
		return
	}
	slices.SortStableFunc(p.pending, func(a, b int32) int {
		return cmp.Compare(p.in.Level(p.src(int(b))), p.in.Level(p.src(int(a))))
	})
}

// describeColumns lists header cells (already display-safe) for a message.
func describeColumns(cols []string) string {
	if len(cols) > inputMaxColumnsSeen {
		return fmt.Sprintf("columns seen: %s and %d more", strings.Join(cols[:inputMaxColumnsSeen], ", "), len(cols)-inputMaxColumnsSeen)
	}
	return "columns seen: " + strings.Join(cols, ", ")
}

// describeProtect names a protect list by its size and fingerprint.
func describeProtect(n int, sha string) string {
	if sha == "" {
		return "no --protect entry"
	}
	return fmt.Sprintf("%s (sha256 %.12s…)", plural(n, "--protect entry"), sha)
}

// passwords calls use with the password of each pending user, in order:
// the input's password, else a new one; fromInput says which.
func (r *Runner) passwords(p *plan, use func(i int, pw secret.Password, fromInput bool) error) error {
	// Generated a chunk at a time, on every CPU (rotate.Generator.Fill):
	// the plan's passwords are ready sooner, and only a chunk's strings are
	// held beside the arena.
	const chunk = 4096
	gen := make([]secret.Password, 0, min(chunk, len(p.pending)))
	defer clear(gen[:cap(gen)])
	for start := 0; start < len(p.pending); start += chunk {
		end := min(start+chunk, len(p.pending))
		gen = gen[:0]
		for _, idx := range p.pending[start:end] {
			if p.records[idx].Password.Empty() {
				gen = append(gen, "")
			}
		}
		if err := r.cfg.Generator.Fill(gen); err != nil {
			return fatal("generating a password: %w", err)
		}
		k := 0
		for i := start; i < end; i++ {
			rec := &p.records[p.pending[i]]
			var err error
			if rec.Password.Empty() {
				err = use(i, gen[k], false)
				k++
			} else {
				err = use(i, rec.Password, true)
			}
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// pwArena holds a plan's passwords in one buffer, in pending order: one
// allocation instead of one per user (a plan can be millions long). wipe
// zeroes that buffer when the run ends. That is hygiene, not a guarantee:
// it does not reach the copies made on the way, which stay in freed memory
// until it is reused: the generator's and the input's strings, the
// secret.Password that at returns (a conversion copies), the request body's
// copies in net/http's and crypto/tls's buffers, age's plaintext chunks,
// goroutine stacks copied as they grow, and pages the kernel swapped out.
// What keeps them off disk on a crash is secret.DisableCoreDumps.
type pwArena struct {
	buf []byte
	end []uint32 // end[i] is where password i ends in buf
}

func (a *pwArena) add(pw secret.Password) error {
	if len(a.buf)+len(pw.Reveal()) > math.MaxUint32 {
		return fatal("the plan's passwords exceed 4 GiB: split the input")
	}
	a.buf = append(a.buf, pw.Reveal()...)
	a.end = append(a.end, uint32(len(a.buf)))
	return nil
}

func (a *pwArena) at(i int) secret.Password {
	start := uint32(0)
	if i > 0 {
		start = a.end[i-1]
	}
	return secret.Password(a.buf[start:a.end[i]])
}

// wipe zeroes the arena's buffer; see pwArena for the copies it does not
// reach.
func (a *pwArena) wipe() { clear(a.buf) }

func (r *Runner) dryRun(p *plan, out *OutDir, sum *report.Summary) error {
	for i := range p.records {
		if _, skip := p.skip[int32(i)]; p.records[i].Invalid == "" && !skip {
			p.pending = append(p.pending, int32(i))
		}
	}
	byPrivilege(p)
	// Every password is made and checked, none kept.
	err := r.passwords(p, func(i int, pw secret.Password, _ bool) error {
		if err := rotate.CheckPolicy(pw.Reveal()); err != nil {
			rec := p.records[p.pending[i]]
			return fatal("line %d: the password for user %d breaks the rule: %w", rec.Line, rec.UserID, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	r.printPlan(p, "dry run: nothing will be changed (pass --apply to carry it out)")
	r.log.Info("plan", "dryRun", true, "records", len(p.records), "valid", p.valid, "invalid", len(p.records)-p.valid,
		"skipped", len(p.skip))
	invalid := len(p.records) - p.valid
	sum.Counts[string(report.Planned)] = p.valid - len(p.skip)
	sum.Counts[string(report.Invalid)] = invalid
	sum.Counts[string(report.Skipped)] = len(p.skip)
	if r.cfg.Counter != nil {
		sum.APICalls = int(r.cfg.Counter.Calls())
		sum.Retries = int(r.cfg.Counter.Retries())
	}
	code := ExitOK
	if invalid > 0 {
		code = ExitIncomplete
	}
	sum.ExitCode = code
	sum.Complete = true
	if out != nil {
		rows := make([]report.Row, 0, len(p.records))
		for i, rec := range p.records {
			rows = append(rows, r.baseRow(rec, report.Planned, p.skip[int32(i)]))
		}
		res, _, err := r.files.OpenResults(out.File(ResultsName))
		if err != nil {
			return fatal("results: %w", err)
		}
		if err := res.Append(rows...); err != nil {
			res.Close()
			return fatal("results: %w", err)
		}
		if err := res.Close(); err != nil {
			return fatal("results: %w", err)
		}
		sum.Outputs = []string{out.File(ResultsName), out.File(SummaryName)}
		sum.FinishedAt = r.cfg.Now().UTC()
		if err := r.files.WriteSummary(out.File(SummaryName), *sum); err != nil {
			return fatal("summary: %w", err)
		}
	}
	if code != ExitOK {
		return &ExitError{Code: code, Err: fmt.Errorf("%d invalid records", invalid)}
	}
	return nil
}

// baseRow is the results row of a record before any call: invalid,
// skipped (skip is the reason), or status st.
func (r *Runner) baseRow(rec Record, st report.Status, skip string) report.Row {
	row := report.Row{Line: rec.Line, UserID: rec.UserID, Status: st}
	if rec.UserID == 0 {
		row.RawUserID = rec.RawUserID
	}
	if rec.Invalid != "" || skip != "" {
		row.Status, row.Error = report.Invalid, rec.Invalid
		if rec.Invalid == "" {
			row.Status, row.Error = report.Skipped, skip
		}
		row.FinishedAt = r.cfg.Now().UTC()
		return row
	}
	row.PasswordSource = "generated"
	if !rec.Password.Empty() {
		row.PasswordSource = "input"
	}
	return row
}

func (r *Runner) printPlan(p *plan, mode string) {
	w := r.cfg.Stdout
	if w == nil {
		return
	}
	fromInput := 0
	for i := range p.records {
		if _, skip := p.skip[int32(i)]; p.records[i].Invalid == "" && !skip && !p.records[i].Password.Empty() {
			fromInput++
		}
	}
	invalid := len(p.records) - p.valid
	change := p.valid - len(p.skip)
	fmt.Fprintf(w, "pwrotate plan — %s\n", mode)
	if r.cfg.Reason != "" {
		fmt.Fprintf(w, "  reason:    %s\n", r.cfg.Reason)
	}
	fmt.Fprintf(w, "  input:     %s, %d records (sha256 %.16s…)\n", p.in.Name, len(p.records), p.in.SHA256)
	if sel := r.Selection(); sel != nil {
		where := "not kept (pass --out to keep it for review)"
		if sel.Snapshot != "" {
			where = "snapshot " + sel.Snapshot
		}
		dropped := ""
		if sel.Dropped > 0 {
			dropped = fmt.Sprintf(" (%s outside the filter dropped)", plural(sel.Dropped, "user"))
		}
		fmt.Fprintf(w, "  selection: %s from POST %s/v2/users/list, %s listed%s, %s\n", sel.Spec, r.cfg.Endpoint, plural(sel.Listed, "user"), dropped, where)
	}
	fmt.Fprintf(w, "  to change: %s (%d generated, %d from the input)\n", plural(change, "user"), change-fromInput, fromInput)
	if p.in.HasAuthLevel {
		fmt.Fprintf(w, "  order:     most privileged first (%s)\n", levelCounts(p))
	}
	if len(p.skip) > 0 || !r.cfg.Protect.Empty() {
		// With --protect, "skipped: 0" says that it matched nobody.
		fmt.Fprintf(w, "  skipped:   %d\n", len(p.skip))
	}
	if len(p.skip) > 0 {
		shown := 0
		for i, rec := range p.records {
			why, ok := p.skip[int32(i)]
			if !ok {
				continue
			}
			if shown == 10 {
				fmt.Fprintf(w, "    … and %d more (see results.csv)\n", len(p.skip)-shown)
				break
			}
			fmt.Fprintf(w, "    line %d: user %d: %s\n", rec.Line, rec.UserID, why)
			shown++
		}
	}
	fmt.Fprintf(w, "  invalid:   %d\n", invalid)
	shown := 0
	for _, rec := range p.records {
		if rec.Invalid == "" {
			continue
		}
		if shown == 10 {
			fmt.Fprintf(w, "    … and %d more (see results.csv)\n", invalid-shown)
			break
		}
		fmt.Fprintf(w, "    line %d: %s\n", rec.Line, rec.Invalid)
		shown++
	}
	fmt.Fprintf(w, "  endpoint:  POST %s/v2/users/password\n", r.cfg.Endpoint)
	if p.caller != nil {
		fmt.Fprintf(w, "  caller:    user %d, AuthLevel %s\n", p.caller.UserID, p.caller.LevelName)
	} else {
		fmt.Fprintf(w, "  caller:    not checked (no API key given)\n")
	}
	if r.cfg.ResetSessions {
		fmt.Fprintf(w, "  sessions:  reset after each change\n")
	}
	r.printKeyPlan(p)
}

// levelCounts says how many users to change there are at each AuthLevel,
// most privileged first: "Root 2, NetworkAdmin 5, unknown 1".
func levelCounts(p *plan) string {
	var n [rotate.LevelRoot + 1]int
	for i := range p.records {
		if _, skip := p.skip[int32(i)]; p.records[i].Invalid == "" && !skip {
			n[p.in.Level(p.src(i))]++
		}
	}
	var parts []string
	for l := rotate.LevelRoot; l >= rotate.LevelUnknown; l-- {
		if n[l] == 0 {
			continue
		}
		name := l.String()
		if l == rotate.LevelUnknown {
			name = "unknown"
		}
		parts = append(parts, name+" "+strconv.Itoa(n[l]))
	}
	if len(parts) == 0 {
		return "nobody"
	}
	return strings.Join(parts, ", ")
}

// runCounts tallies outcomes as they are recorded.
type runCounts struct {
	mu          sync.Mutex
	byStatus    map[report.Status]int
	resetFailed int
}

// replace counts row instead of old, a row of the same line.
func (c *runCounts) replace(old, row report.Row) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.byStatus[old.Status]--
	if old.SessionsReset == "false" {
		c.resetFailed--
	}
	c.byStatus[row.Status]++
	if row.SessionsReset == "false" {
		c.resetFailed++
	}
}

func (c *runCounts) add(row report.Row) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.byStatus[row.Status]++
	if row.SessionsReset == "false" {
		c.resetFailed++
	}
}

// errFatalAPI stops a run: the API refused the key (401/403), or its
// certificate failed verification.
var errFatalAPI = errors.New("stopping the run")

// syncEvery is the batch of recorded outcomes after which results are
// fsynced, besides the syncer's once a second, but not sooner than
// syncGap after the last such fsync: an fsync stalls the appends behind it
// (on ext4 an append's modification time waits for the fsync's journal
// commit), and at thousands of outcomes a second one every 256 cost 3-8%
// of a run's rate (README, Performance).
const (
	syncEvery = 256
	syncGap   = 100 * time.Millisecond
)

func (r *Runner) apply(ctx context.Context, p *plan, out *OutDir, sum *report.Summary) (err error) {
	cfg := r.cfg
	// When an earlier run last showed signs of life, read before this run
	// touches a file (opening the results may repair their tail).
	lastActivity, err := lastActivityIn(out)
	if err != nil {
		return fatal("output folder %s: %w", out.Path, err)
	}
	res, existing, err := r.files.OpenResults(out.File(ResultsName))
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

	counts := &runCounts{byStatus: map[report.Status]int{}}
	// Records are in input order, so their lines ascend: find a recorded
	// row's record by binary search (no map: a plan can be millions long).
	// A later row of a line supersedes an earlier one (a session reset or
	// an API key rotation recorded after its change): walk them from the
	// last.
	if err := r.openKeys(out, p); err != nil {
		return err
	}
	defer r.closeKeys()
	p.recorded = make([]bool, len(p.records))
	var owed []owedReset
	for k := len(existing) - 1; k >= 0; k-- {
		row := existing[k]
		i := sort.Search(len(p.records), func(i int) bool { return p.records[i].Line >= row.Line })
		if i < len(p.records) && p.records[i].Line == row.Line && !p.recorded[i] {
			p.recorded[i] = true
			counts.add(row)
			r.keys.noteRecorded(row)
			if r.resets && resetOwed(row) {
				owed = append(owed, owedReset{row: row})
			}
		}
	}
	slices.SortFunc(owed, func(a, b owedReset) int { return a.row.Line - b.row.Line })
	if len(existing) > 0 {
		r.log.Info("resuming", "out", out.Path, "recorded", len(existing), "sessionResetsOwed", len(owed))
	}
	existing = nil
	var settledRows []report.Row // invalid and skipped: known before any call
	for i := range p.records {
		if p.recorded[i] {
			continue
		}
		if skip := p.skip[int32(i)]; p.records[i].Invalid != "" || skip != "" {
			settledRows = append(settledRows, r.baseRow(p.records[i], report.Invalid, skip))
			p.recorded[i] = true
		} else {
			p.pending = append(p.pending, int32(i))
		}
	}
	byPrivilege(p)

	gens, err := report.SealedGenerations(out.Path)
	if err != nil {
		return fatal("sealed files: %w", err)
	}
	if len(gens) == 0 || len(p.pending) == 0 {
		// No earlier run sent a change whose outcome is unknown.
		lastActivity = time.Time{}
	}
	r.beat = func() {
		t := cfg.Now()
		_ = os.Chtimes(out.File(ManifestName), t, t)
	}
	gen := 1
	if len(gens) > 0 {
		gen = gens[len(gens)-1] + 1
	}
	if len(p.pending) > 0 {
		sum.Generation = gen
	}
	r.printPlan(p, fmt.Sprintf("applying, generation %d, %d still to do", gen, len(p.pending)))
	r.log.Info("plan", "records", len(p.records), "valid", p.valid, "invalid", len(p.records)-p.valid,
		"skipped", len(p.skip), "pending", len(p.pending), "generation", gen)
	p.todo = make([]todo, len(p.pending))
	for i, idx := range p.pending {
		p.todo[i] = todo{line: int32(p.records[idx].Line), userID: int32(p.records[idx].UserID)}
	}
	total, doneBefore := len(p.records), 0
	for _, ok := range p.recorded {
		if ok {
			doneBefore++
		}
	}

	if m, ok, err := out.ReadManifest(); err != nil {
		return &ExitError{Code: ExitFatal, Err: err}
	} else if !ok || (r.resets && !m.ResetSessions) {
		if !ok {
			m = Manifest{Version: cfg.Version, Input: p.in.Name, InputSHA256: p.in.SHA256, StartedAt: sum.StartedAt, Shard: sum.Shard,
				Selection: r.Selection(), Reason: cfg.Reason, ProtectEntries: cfg.Protect.Len(), ProtectSHA256: cfg.Protect.Fingerprint()}
		}
		m.ResetSessions = r.resets
		if err := out.WriteManifest(m); err != nil {
			return fatal("writing %s: %w", ManifestName, err)
		}
	}
	cfg.Hook("manifest", 1)

	if len(p.pending) > 0 {
		p.source = make([]bool, len(p.pending))
		p.pw.end = make([]uint32, 0, len(p.pending))
		p.pw.buf = make([]byte, 0, len(p.pending)*cfg.Generator.Shape().Length)
		defer p.pw.wipe()
		err := r.passwords(p, func(i int, pw secret.Password, fromInput bool) error {
			p.source[i] = fromInput
			return p.pw.add(pw)
		})
		if err != nil {
			return err
		}
		half := len(p.pending) / 2
		path, err := report.Seal(out.Path, gen, cfg.Recipients, func(yield func(int, secret.Password) bool) {
			for i := range p.pending {
				if i == half {
					cfg.Hook("sealing", 1)
				}
				if !yield(int(p.todo[i].userID), p.pw.at(i)) {
					return
				}
			}
		})
		if err != nil {
			return fatal("sealing generation %d: %w", gen, err)
		}
		r.log.Info("sealed", "file", path, "generation", gen, "passwords", len(p.pending))
		cfg.Hook("sealed", 1)
	}
	if len(settledRows) > 0 {
		for _, row := range settledRows {
			if row.Status == report.Skipped {
				// Deliberate and listed in the plan and results.csv: one
				// line each only at debug (a glob may match thousands).
				r.log.Debug("skipped record", "line", row.Line, "user", row.UserID, "reason", row.Error)
			} else {
				r.log.Warn("invalid record", "line", row.Line, "reason", row.Error)
			}
			counts.add(row)
		}
		if err := res.Append(settledRows...); err != nil {
			return fatal("results: %w", err)
		}
		if err := res.Sync(); err != nil {
			return fatal("results: %w", err)
		}
		cfg.Hook("invalid-recorded", 1)
	}

	// From here on the pool needs p.todo, p.pw and p.source only.
	p.in, p.records, p.recorded, p.skip, p.orig = nil, nil, nil, nil, nil

	if cfg.Progress != nil {
		cfg.Progress.SetTotal(len(p.pending))
	}
	applyStart := cfg.Now()
	calls0 := int64(0)
	if cfg.Counter != nil {
		calls0 = cfg.Counter.Calls()
	}
	poolErr := r.resetOwedSessions(ctx, owed, res, counts)
	owed = nil
	recordedNow := 0
	if poolErr == nil && ctx.Err() == nil && len(p.todo) > 0 && !lastActivity.IsZero() {
		r.waitOutLateChanges(ctx, lastActivity, len(p.todo), gen)
	}
	if poolErr == nil && ctx.Err() == nil {
		recordedNow, poolErr = r.pool(ctx, p, gen, res, counts)
	}
	applyDur := cfg.Now().Sub(applyStart)
	syncErr := res.Sync()

	// The outcome of the run.
	done := doneBefore + recordedNow
	complete := done == total && poolErr == nil && syncErr == nil
	counts.mu.Lock()
	for st, n := range counts.byStatus {
		sum.Counts[string(st)] = n
	}
	resetFailed := counts.resetFailed
	counts.mu.Unlock()
	sum.Counts["pending"] = total - done
	if cfg.Counter != nil {
		sum.APICalls = int(cfg.Counter.Calls())
		sum.Retries = int(cfg.Counter.Retries())
		if applyDur > 0 {
			sum.AchievedRate = float64(cfg.Counter.Calls()-calls0) / applyDur.Seconds()
		}
	}
	sum.Outputs = []string{out.File(ResultsName), out.File(SummaryName)}
	for _, g := range append(gens, gen) {
		if g == gen && len(p.pending) == 0 {
			continue
		}
		sum.Outputs = append(sum.Outputs, out.File(report.SealedName(g)))
	}
	sum.Outputs = append(sum.Outputs, r.keys.outputs()...)
	sum.APIKeys = r.keys.stats()

	var runErr error
	switch {
	case syncErr != nil:
		runErr = fatal("recording results: %w", syncErr)
	case ctx.Err() != nil:
		sum.Interrupted = true
		runErr = &ExitError{Code: ExitInterrupted, Err: errors.New("interrupted: run again with --resume to finish")}
	case poolErr != nil:
		runErr = &ExitError{Code: ExitFatal, Err: poolErr}
	case !complete:
		runErr = fatal("run incomplete: %d records have no outcome; run again with --resume", total-done)
	default:
		sum.Complete = true
		cfg.Hook("complete", 1)
		if err := res.Close(); err != nil {
			return fatal("results: %w", err)
		}
		if err := r.files.RewriteSorted(out.File(ResultsName)); err != nil {
			return fatal("results: %w", err)
		}
		// Skips are deliberate: they do not make the run incomplete.
		failed := total - sum.Counts[string(report.Updated)] - sum.Counts[string(report.Skipped)]
		keysFailed := 0
		if sum.APIKeys != nil {
			keysFailed = sum.APIKeys.NotRotated
		}
		if failed > 0 || resetFailed > 0 || keysFailed > 0 {
			runErr = &ExitError{Code: ExitIncomplete, Err: fmt.Errorf("%d records not updated, %d session resets failed, %d API keys not rotated", failed, resetFailed, keysFailed)}
		}
	}
	if runErr != nil {
		var ee *ExitError
		errors.As(runErr, &ee)
		sum.ExitCode = ee.Code
	}
	sum.FinishedAt = cfg.Now().UTC()
	if err := r.files.WriteSummary(out.File(SummaryName), *sum); err != nil && runErr == nil {
		runErr = fatal("summary: %w", err)
	}
	return runErr
}

// pool sends the pending changes through the worker pool. It returns a
// fatal error (401/403, results not writable); an interruption shows as
// ctx being done.
func (r *Runner) pool(ctx context.Context, p *plan, gen int, res *report.ResultsFile, counts *runCounts) (recorded int, err error) {
	cfg := r.cfg
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	// The syncer makes results durable at least every second, and touches
	// run.json (the heartbeat a later --resume reads) as often.
	syncDone := make(chan struct{})
	go func() {
		defer close(syncDone)
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

	r.beat()
	var answered, changed, recordedN atomic.Int64
	var lastBatchSync atomic.Int64 // when the last fsync for syncEvery began (Unix ns)
	var g errgroup.Group
	g.SetLimit(cfg.Workers)
	r.keys.start(res, cancel)
	r.keys.dispatchOwed(ctx, &g)
	// cfg.Workers goroutines take the users in plan order: one goroutine
	// per worker, not per user (a new goroutine's stack grows anew on
	// every call, which the profile showed as 3% of a run's CPU).
	var next atomic.Int64
	send := func(i int) {
		line, userID := int(p.todo[i].line), int(p.todo[i].userID)
		o := cfg.Client.ChangePassword(ctx, userID, p.pw.at(i))
		cfg.Hook("answered", int(answered.Add(1)))
		if o.Interrupted {
			return
		}
		if o.Fatal {
			cancel(fmt.Errorf("%w: %v (no further requests sent)", errFatalAPI, o.Err))
			return
		}
		row := report.Row{
			Line: line, UserID: userID, Generation: gen,
			Attempts: o.Attempts, HTTPStatus: o.HTTPStatus, ErrorCode: o.ErrorCode,
			PasswordSource: "generated",
		}
		if p.source[i] {
			row.PasswordSource = "input"
		}
		if o.OK {
			row.Status = report.Updated
			if r.resets {
				// The change and its reset are one unit: the change is
				// recorded first, saying the reset is owed (a kill now
				// leaves that for --resume), and the reset runs even
				// if the run is being stopped.
				row.SessionsReset, row.Error = "false", resetOwedText
				row.FinishedAt = cfg.Now().UTC()
				r.keys.owe(&row)
				if err := res.Append(row); err != nil {
					cfg.Hook("record-failed", int(answered.Load()))
					cancel(fmt.Errorf("recording results: %w", err))
					return
				}
				cfg.Hook("changed", int(changed.Add(1)))
				uctx, ucancel := unitContext(ctx, r.cfg.Client.Timeout())
				r.resetSessions(uctx, &row, cancel)
				ucancel()
			}
		} else {
			row.Status = report.Failed
			row.Error = errText(o.Err)
			if o.Unknown && !bytes.Contains([]byte(row.Error), []byte("outcome unknown")) {
				row.Error = "outcome unknown: " + row.Error
			}
			r.log.Warn("record failed", "line", line, "user", userID, "attempts", o.Attempts, "reason", row.Error)
		}
		row.FinishedAt = cfg.Now().UTC()
		r.keys.owe(&row)
		if err := res.Append(row); err != nil {
			cfg.Hook("record-failed", int(answered.Load()))
			cancel(fmt.Errorf("recording results: %w", err))
			return
		}
		counts.add(row)
		if cfg.Progress != nil {
			cfg.Progress.Done(row.Status != report.Updated)
		}
		n := recordedN.Add(1)
		if n%syncEvery == 0 {
			now, last := time.Now().UnixNano(), lastBatchSync.Load()
			if now-last >= int64(syncGap) && lastBatchSync.CompareAndSwap(last, now) {
				cfg.Hook("batch-fsync", int(n))
				if err := res.Sync(); err != nil {
					cancel(fmt.Errorf("recording results: %w", err))
					return
				}
			}
		}
		cfg.Hook("recorded", int(n))
		r.keys.rotate(ctx, row)
	}
	for range min(cfg.Workers, len(p.todo)) {
		g.Go(func() error {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= len(p.todo) {
					return nil
				}
				send(i)
			}
			return nil
		})
	}
	_ = g.Wait()
	r.keys.finish()
	cancel(nil)
	<-syncDone
	recorded = int(recordedN.Load())
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return recorded, err
	}
	return recorded, nil
}

// validUsers returns the indices of the valid records of p.
func validUsers(p *plan) []int32 {
	var v []int32
	for i := range p.records {
		if p.records[i].Invalid == "" {
			v = append(v, int32(i))
		}
	}
	return v
}

// heartbeatEvery is how often a run's pool marks run.json (its mtime) as
// a sign of life while it sends changes.
const heartbeatEvery = time.Second

// lastActivityIn returns when the run in out last showed signs of life:
// the latest mtime of run.json (the pool's heartbeat), results.csv,
// summary.json and the sealed files.
func lastActivityIn(out *OutDir) (time.Time, error) {
	var last time.Time
	entries, err := os.ReadDir(out.Path)
	if err != nil {
		return last, err
	}
	for _, e := range entries {
		name := e.Name()
		switch {
		case name == ManifestName, name == ResultsName, name == SummaryName:
		case strings.HasPrefix(name, "passwords-g") && strings.HasSuffix(name, ".age"):
		default:
			continue
		}
		fi, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return last, err
		}
		if fi.ModTime().After(last) {
			last = fi.ModTime()
		}
	}
	return last, nil
}

// waitOutLateChanges waits, before a resumed run sends generation gen to
// users whose outcome an earlier run did not record, until twice --timeout
// (plus one heartbeat) has passed since that run's last activity: a change
// it sent may still be applied by a slow server, and must not land after,
// and overwrite, the new generation. An interruption ends the wait (ctx).
func (r *Runner) waitOutLateChanges(ctx context.Context, lastActivity time.Time, users, gen int) {
	timeout := r.cfg.Client.Timeout()
	until := lastActivity.Add(2*timeout + heartbeatEvery)
	wait := until.Sub(r.cfg.Now())
	if wait <= 0 {
		return
	}
	r.log.Warn("waiting before sending a new generation: an earlier run may have sent these users a change that a slow server could still apply, after and over the new password",
		"users", users, "generation", gen, "wait", wait.Round(time.Millisecond).String(),
		"earlierRunLastActive", lastActivity.UTC().Format(time.RFC3339Nano), "rule", "2 x --timeout "+timeout.String()+" + 1s heartbeat since its last activity")
	if err := r.cfg.Sleep(ctx, wait); err != nil {
		r.log.Warn("wait interrupted", "err", err)
	}
}

// resetOwedText is the error of a row whose change is recorded and whose
// session reset has not been done yet.
const resetOwedText = "password changed; session reset not done yet"

// resetOwed reports whether row is a change whose session reset did not
// happen (failed, interrupted, or the process stopped before it).
func resetOwed(row report.Row) bool {
	return row.Status == report.Updated && row.UserID > 0 && row.SessionsReset != "true"
}

// resetsOwed reports whether the results file at path holds a row whose
// session reset is owed.
func resetsOwed(path string) (bool, error) {
	rows, err := report.ReadResults(path)
	if err != nil {
		return false, err
	}
	last := map[int]report.Row{}
	for _, row := range rows {
		last[row.Line] = row
	}
	for _, row := range last {
		if resetOwed(row) {
			return true, nil
		}
	}
	return false, nil
}

// owedReset is an updated row whose session reset a resumed run does.
type owedReset struct {
	row report.Row
}

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

// resetOwedSessions does the session resets that an earlier run owes
// (rows updated whose reset failed, was interrupted, or never ran), and
// records each as a new row of its line. A reset that is interrupted stays
// owed. It returns a fatal error (401/403, results not writable).
func (r *Runner) resetOwedSessions(ctx context.Context, owed []owedReset, res *report.ResultsFile, counts *runCounts) error {
	if len(owed) == 0 {
		return nil
	}
	r.log.Info("resetting the sessions an earlier run owes", "users", len(owed))
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var g errgroup.Group
	g.SetLimit(r.cfg.Workers)
	for i := range owed {
		if ctx.Err() != nil {
			break
		}
		g.Go(func() error {
			if ctx.Err() != nil {
				return nil
			}
			old := owed[i].row
			row := old
			r.resetSessions(ctx, &row, cancel)
			if row.SessionsReset != "true" && ctx.Err() != nil {
				return nil // interrupted: still owed
			}
			if err := res.Append(row); err != nil {
				cancel(fmt.Errorf("recording results: %w", err))
				return nil
			}
			counts.replace(old, row)
			r.keys.replaceOwed(row)
			return nil
		})
	}
	_ = g.Wait()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// plural says "1 user", "2 users".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}

func errText(err error) string {
	if err == nil {
		return "unknown error"
	}
	return err.Error()
}
