// Package job is the rotation itself: it reads and validates the input,
// makes the plan, seals the passwords, runs the rate-limited worker pool and
// keeps the run's state in the output folder so that an interrupted or
// killed run can be resumed without losing a password.
package job

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"filippo.io/age"

	"pwrotate/job/input"
	"pwrotate/report"
	"pwrotate/report/deliver"
	"pwrotate/rotate"
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
	// OUT/input.csv (report.SnapshotName) before the plan; a resume reads the snapshot.
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
	Protect       *input.Protect // accounts never to rotate (--protect); nil: none
	Reason        string         // --reason: recorded in run.json and summary.json
	MaxUsers      int
	Shard, Shards int // process shard Shard of Shards (Shards <= 1: everything)
	Version       string
	Logger        *slog.Logger
	Stdout        io.Writer // where the plan is printed; nil: nowhere
	Progress      Progress  // optional
	Counter       Counter   // optional
	// RecipientsMap, when set (--recipients-map), seals each user's
	// passwords for its group: its network or mailbox (the input's column
	// of the map's Kind), to the group's recipients and Recipients.
	RecipientsMap *report.RecipientsMap
	// Hook, when set, is called at named points of the run (tests use it
	// to kill the process at an exact step). n counts occurrences.
	Hook func(point string, n int)
	// Now is the clock (default time.Now); Sleep waits for d or until ctx
	// is done (default a timer). Tests replace both to see the waits of a
	// resume without waiting.
	Now   func() time.Time
	Sleep func(ctx context.Context, d time.Duration) error
	// Deliver, when set, puts each changed user's password into the
	// Kubernetes Secrets that the --deliver files name (deliver.go).
	Deliver *deliver.Client
	// OlderThan, with Deliver, rotates only the users that are due
	// (--older-than); 0: every user.
	OlderThan time.Duration
	// EscrowSecret (report.EscrowSecret of the API key) makes the
	// passphrase of the delivery escrow; needed with Deliver and Apply.
	EscrowSecret []byte
}

// ExitError is a run's failure with the exit code it maps to.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string { return e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }

func fatal(format string, args ...any) error {
	return &ExitError{Code: report.ExitFatal, Err: fmt.Errorf(format, args...)}
}

// fatalKind is fatal, marked as of kind (report.Kind).
func fatalKind(kind error, format string, args ...any) error {
	return &ExitError{Code: report.ExitFatal, Err: report.Kind(kind, fmt.Errorf(format, args...))}
}

// Kinds of fatal error a caller tells apart (errors.Is) to say what to do.
var (
	// ErrNoAPIKey: --apply or --select without an API key.
	ErrNoAPIKey = errors.New("no API key")
	// ErrKeyRefused: the server does not know the API key.
	ErrKeyRefused = errors.New("API key refused")
	// ErrLevelTooLow: the key's account may not change passwords.
	ErrLevelTooLow = errors.New("AuthLevel too low")
	// ErrPreflight: the preflight call failed.
	ErrPreflight = errors.New("preflight failed")
	// ErrOtherRun: the output folder holds a run of another input.
	ErrOtherRun = errors.New("output folder holds another run")
	// ErrTooMany: the plan is larger than the cap on users.
	ErrTooMany = errors.New("plan over the cap")
	// ErrDeliverRefused: the Kubernetes API refuses a --deliver target.
	ErrDeliverRefused = errors.New("delivery target refused")
	// ErrDeliverUnreachable: the Kubernetes API could not be asked.
	ErrDeliverUnreachable = errors.New("kubernetes API unreachable")
)

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
	// sending is set once the run may have changes in flight (the first
	// change request, reset or key generation): before it, a signal may
	// end the process at once.
	sending atomic.Bool
	// runID names the run on the Secrets it writes (run.json keeps it).
	runID  string
	dlv    *delivery // nil without --deliver
	outDir string    // the output folder of an applying run
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
		cfg.Sleep = rotate.Sleep
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

// Sending reports whether the run may have changes in flight: false until
// it is about to send its first change (the read-only start-up, the
// preflight, a listing, sealing), true from then on. Safe to call from
// another goroutine.
func (r *Runner) Sending() bool { return r.sending.Load() }

// Abort syncs the results recorded so far. Call it before exiting at once.
func (r *Runner) Abort() {
	r.mu.Lock()
	res := r.results
	r.mu.Unlock()
	if res != nil {
		_ = res.Sync()
	}
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
			sum.ExitCode = report.ExitFatal
		}
	}
	return sum, err
}

func (r *Runner) run(ctx context.Context, sum *report.Summary) error {
	out, err := r.openOut()
	if err != nil {
		return err
	}
	if out != nil {
		defer out.Close()
	}
	in, err := r.input(ctx, out)
	if err != nil {
		return err
	}
	sum.Input, sum.InputSHA256 = in.Name, in.SHA256
	if err := r.checkGroupColumn(in); err != nil {
		return err
	}
	if sel := r.Selection(); sel != nil {
		sum.Selection = &report.Selection{Filter: sel.Spec, Listed: sel.Listed, Dropped: sel.Dropped}
	}
	if where, pattern, ok := r.cfg.Protect.FirstGlob(); ok && !in.HasLogin {
		return fatal("--protect %s: login pattern %q needs a login column in the input, and %s has none (%s)",
			where, pattern, in.Name, in.ColumnsSeen())
	}
	r.resets = r.cfg.ResetSessions
	if out != nil {
		if complete, err := r.resumeChecks(out, in, sum); complete || err != nil {
			return err
		}
	}

	p := &plan{in: in}
	p.records, p.orig = r.shardRecords(in.Records)
	sum.Records = len(p.records)
	if err := r.preflight(ctx, p); err != nil {
		return err
	}
	r.markSkips(p)
	if err := r.deliverCheck(ctx, p, out); err != nil {
		return err
	}
	if err := r.checkMaxUsers(p); err != nil {
		return err
	}
	if !r.cfg.Apply {
		return r.dryRun(p, out, sum)
	}
	if err := r.dlv.refused(); err != nil {
		return err
	}
	return r.apply(ctx, p, out, sum)
}

// openOut locks the output folder of a run that has one (every --apply,
// and a dry run with --out), after checking its shard layout and that
// run.json binds what it holds. It returns nil for a dry run without --out.
func (r *Runner) openOut() (*report.Folder, error) {
	cfg := r.cfg
	if !cfg.Apply && cfg.Out == "" {
		return nil, nil
	}
	if cfg.Apply && len(cfg.Recipients) == 0 {
		return nil, fatal("--recipient: at least one recipient is needed with --apply")
	}
	if err := report.CheckLayout(cfg.Out, cfg.Shard, cfg.Shards); err != nil {
		return nil, &ExitError{Code: report.ExitFatal, Err: err}
	}
	out, err := report.OpenFolder(cfg.Out, cfg.Resume)
	if err != nil {
		if errors.Is(err, report.ErrBusy) {
			return nil, &ExitError{Code: report.ExitBusy, Err: err}
		}
		return nil, &ExitError{Code: report.ExitFatal, Err: err}
	}
	out.Files = r.files
	cfg.Hook("locked", 1)
	if err := report.CheckBound(out); err != nil {
		out.Close()
		return nil, &ExitError{Code: report.ExitFatal, Err: err}
	}
	return out, nil
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
