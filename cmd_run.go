package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	"pwrotate/job"
	"pwrotate/job/input"
	"pwrotate/report"
	"pwrotate/report/console"
	"pwrotate/report/deliver"
	"pwrotate/report/metrics"
	"pwrotate/rotate"
	"pwrotate/rotate/ecgridsim/demo"
)

// runFlags are the flags of 'pwrotate run'.
type runFlags struct {
	connFlags
	input, selectSpec, out, symbolSet         string
	pushgateway, shard, progress, reason      string
	kubeconfig, kubeContext, olderThan        string
	apply, resume, resetSessions, includeSelf bool
	demo, rotateAPIKeys                       bool
	recipients, recipientFiles, protect       listFlag
	recipientsMap                             listFlag
	deliver                                   listFlag
	workers, maxUsers                         int
	length, digits, symbols, shards           int
}

func newRunFlags(stderr io.Writer) (*flag.FlagSet, *runFlags) {
	f := &runFlags{}
	fs := flag.NewFlagSet("pwrotate run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	shape := rotate.DefaultShape()
	fs.StringVar(&f.input, "input", "", "users CSV, - for stdin (required, except with --select or --demo)")
	fs.StringVar(&f.selectSpec, "select", "", "take the users from ECGrid instead: [network=N][,mailbox=M][,auth-level=L][,status=S|any] (status Active unless given; every network without network=); snapshot in OUT/input.csv")
	fs.BoolVar(&f.apply, "apply", false, "change passwords; without it the run is a dry run (plan)")
	fs.StringVar(&f.out, "out", "", "output folder (0700; files 0600); required with --apply")
	fs.BoolVar(&f.resume, "resume", false, "continue the unfinished run in --out (a fresh run if --out is empty)")
	fs.Var(&f.recipients, "recipient", "age recipient (age1…, age1pq1…, ssh-ed25519 …, ssh-rsa …), repeatable")
	fs.Var(&f.recipientFiles, "recipients-file", "file of recipients, one a line, # comments; repeatable")
	fs.Var(&f.recipientsMap, "recipients-map", "seal each network's (or mailbox's) passwords to its own recipients too: CSV networkId,recipient or mailboxId,recipient; repeatable")
	f.connFlags.register(fs)
	fs.IntVar(&f.workers, "workers", 8, "requests in flight at most")
	fs.IntVar(&f.length, "length", shape.Length, "generated password length")
	fs.IntVar(&f.digits, "digits", shape.Digits, "digits in a generated password")
	fs.IntVar(&f.symbols, "symbols", shape.Symbols, "symbols in a generated password")
	fs.StringVar(&f.symbolSet, "symbol-set", shape.SymbolSet, "symbols to draw from (ASCII only)")
	fs.BoolVar(&f.resetSessions, "reset-sessions", false, "after a change, also reset the user's sessions")
	fs.BoolVar(&f.rotateAPIKeys, "rotate-api-keys", false, "after a change (and reset), also replace the user's API key, sealed in OUT/apikeys-*.age (never the caller's)")
	fs.BoolVar(&f.includeSelf, "include-self", false, "allow rotating the caller's own account")
	fs.IntVar(&f.maxUsers, "max-users", 0, "refuse a plan larger than N users (0 = no cap)")
	fs.Var(&f.protect, "protect", "file of accounts never to rotate: user IDs and login globs (svc-*), one a line, # comments; repeatable")
	fs.StringVar(&f.reason, "reason", "", "the incident or change ticket, recorded in run.json and summary.json (at most 200 printable characters)")
	fs.BoolVar(&f.demo, "demo", false, "use the built-in ECGrid simulator on loopback and the bundled example input")
	fs.StringVar(&f.pushgateway, "pushgateway", "", "push the run's metrics to this Prometheus Pushgateway at the end")
	fs.Var(&f.deliver, "deliver", "CSV userId,namespace,secret,key: put each new password into these Kubernetes Secret keys; repeatable")
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig file for --deliver (else KUBECONFIG, the pod's ServiceAccount, ~/.kube/config)")
	fs.StringVar(&f.kubeContext, "kube-context", "", "kubeconfig context for --deliver")
	fs.StringVar(&f.olderThan, "older-than", "", "with --deliver: rotate only users whose Secrets show no rotation younger than D (90d, 36h)")
	fs.StringVar(&f.shard, "shard", "", "process only shard K/N (K defaults to JOB_COMPLETION_INDEX with --shards)")
	fs.IntVar(&f.shards, "shards", 0, "number of shards N (with JOB_COMPLETION_INDEX)")
	fs.StringVar(&f.progress, "progress", "auto", "auto, always, never")
	return fs, f
}

// runUI is how a run talks to its reader: the progress display, the
// logger, and whether a person reads the screens.
type runUI struct {
	human  bool // a terminal, and no --log-format asked for
	prog   *console.Progress
	logger *slog.Logger
	screen io.Writer
}

// cmdRun is 'pwrotate run'. sigs is the process's signal channel, or nil
// when Main runs in-process (tests): then cmdRun installs its own.
func cmdRun(args []string, stdin io.Reader, stdout, stderr io.Writer, sigs chan os.Signal) int {
	f, ui, code, ok := parseRun(args, stdout, stderr)
	if !ok {
		return code
	}
	// Signals are watched before the wiring: one that arrives during
	// start-up (or was caught before cmdRun) exits 3 at once, since
	// nothing that changes anything is in flight before the pool starts.
	var runner atomic.Pointer[job.Runner]
	ctx, stopWatching := watchSignals(sigs, interrupt{
		changing: func() bool { r := runner.Load(); return r != nil && r.Sending() },
		early: func(s os.Signal) {
			if ui.human {
				console.WriteError(ui.screen, "interrupted during start-up: nothing was changed", "run the same command again")
			} else {
				ui.logger.Warn("interrupted during start-up: nothing was changed; run the same command again",
					"signal", s.String(), "exitCode", report.ExitInterrupted)
			}
		},
		first: func(s os.Signal) {
			ui.logger.Warn("signal: no new requests; finishing those in flight (a second signal exits at once)", "signal", s.String())
		},
		second: func() {
			runner.Load().Abort()
			ui.logger.Error("second signal: exiting at once; run again with --resume")
		},
	})
	defer stopWatching()

	cfg, cleanup, err := wire(f, stdin, stdout, ui.logger)
	defer cleanup()
	if err != nil {
		if ui.human {
			runError(ui.screen, f, args, err)
		} else {
			ui.logger.Error("cannot start", "err", err, "exitCode", report.ExitFatal)
		}
		return report.ExitFatal
	}
	if ui.human {
		console.WriteHeader(ui.screen, runHeader(f, cfg))
	}
	run := job.New(cfg)
	runner.Store(run)

	// The display starts with the updates, once the plan is printed; it goes
	// on while requests in flight finish after a signal.
	run.SetProgress(startingProgress{ui.prog, context.WithoutCancel(ctx)})
	sum, runErr := run.Run(ctx)
	ui.prog.Stop()
	reportRun(ui, f, cfg, sum, runErr, args, stdout)
	return sum.ExitCode
}

// parseRun reads the command line of 'run' and sets up its display and
// logger. ok=false: the command ends with code (help, or an error already
// shown).
func parseRun(args []string, stdout, stderr io.Writer) (f *runFlags, ui runUI, code int, ok bool) {
	stderrFile, _ := stderr.(*os.File)
	terminal := stderrFile != nil && console.IsTerminal(stderrFile)
	if terminal {
		if refuseKeyFlag("run", args, io.Discard) {
			console.WriteError(stderr, "there is no --api-key flag: a key on the command line leaks into process lists and shell history",
				"set ECGRID_API_KEY, or pass --api-key-file FILE")
			return nil, ui, report.ExitFatal, false
		}
	} else if refuseKeyFlag("run", args, stderr) {
		return nil, ui, report.ExitFatal, false
	}
	fs, f := newRunFlags(stderr)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	rest, err := parseArgs(fs, args, true)
	if errors.Is(err, flag.ErrHelp) {
		writeHelp(stdout, "run")
		return nil, ui, report.ExitOK, false
	}
	if err != nil {
		startError(stderr, terminal, "run", err, "")
		return nil, ui, report.ExitFatal, false
	}
	ui.human = terminal && f.logFormat == "auto"
	if len(rest) > 0 {
		startError(stderr, ui.human, "run", fmt.Errorf("unexpected argument %q (flags only; the input is --input FILE)", rest[0]), "")
		return nil, ui, report.ExitFatal, false
	}
	if ui.prog, err = console.NewProgress(console.ProgressConfig{Out: stderr, Mode: f.progress, Terminal: terminal}); err != nil {
		startError(stderr, ui.human, "run", err, "")
		return nil, ui, report.ExitFatal, false
	}
	if ui.human {
		ui.logger, err = f.humanLogger(ui.prog.LogWriter())
	} else {
		ui.logger, err = f.logger(ui.prog.LogWriter(), terminal)
	}
	if err != nil {
		startError(stderr, ui.human, "run", err, "")
		return nil, ui, report.ExitFatal, false
	}
	ui.prog.SetLogger(ui.logger)
	ui.screen = ui.prog.LogWriter()
	return f, ui, 0, true
}

// reportRun shows how a run ended: the closing screen for a person, the
// summary lines for a machine; it pushes the metrics, and after a demo it
// says how to open what it sealed.
func reportRun(ui runUI, f *runFlags, cfg job.Config, sum report.Summary, runErr error, args []string, stdout io.Writer) {
	fatal := sum.ExitCode == report.ExitFatal || sum.ExitCode == report.ExitBusy
	if ui.human {
		if runErr != nil && fatal {
			runError(ui.screen, f, args, runErr)
		}
		pushMetrics(f, cfg, sum, ui.logger)
		if started(sum) {
			console.WriteSummary(ui.screen, runFinal(f, cfg, sum, args))
		}
		return
	}
	logger := ui.logger
	switch {
	case runErr == nil:
	case fatal:
		logger.Error("run failed", "err", runErr, "exitCode", sum.ExitCode)
	default:
		logger.Warn("run ended", "reason", runErr, "exitCode", sum.ExitCode)
	}
	pushMetrics(f, cfg, sum, logger)
	logger.Info("summary", "exitCode", sum.ExitCode, "records", sum.Records, "counts", sum.Counts,
		"apiCalls", sum.APICalls, "retries", sum.Retries, "achievedRate", fmt.Sprintf("%.1f/s", sum.AchievedRate),
		"interrupted", sum.Interrupted, "outputs", report.CondenseSealed(sum.Outputs))
	if k := sum.APIKeys; k != nil {
		logger.Info("api keys", "rotated", k.Rotated, "notRotated", k.NotRotated, "rotatedNow", k.RotatedNow,
			"generateRequests", k.Generated, "readBacks", k.ReadBacks, "generatesAvoided", k.GeneratesAvoided)
	}
	if d := sum.Delivery; d != nil {
		logger.Info("delivery", "targets", d.Targets, "ignoredRows", d.Ignored, "delivered", d.Delivered,
			"notDelivered", d.NotDelivered, "notDue", d.NotDue)
	}
	if f.demo && f.apply && cfg.Out != "" && sum.ExitCode != report.ExitFatal {
		identity := filepath.Join(cfg.Out, report.DemoIdentityName)
		fmt.Fprintf(stdout, "\nNext, open the sealed passwords with (from the source tree: go run . open ...):\n  pwrotate open --identity %s %s\nor with age itself:\n  age -d -i %s %s\n",
			identity, cfg.Out, identity, filepath.Join(cfg.Out, report.SealedName(1)))
		if f.rotateAPIKeys {
			fmt.Fprintf(stdout, "and the new API keys with:\n  pwrotate open --api-keys --identity %s %s\n", identity, cfg.Out)
		}
	}
}

// startingProgress starts the display when the job knows its total.
type startingProgress struct {
	*console.Progress
	ctx context.Context
}

func (p startingProgress) SetTotal(n int) {
	p.Progress.SetTotal(n)
	p.Start(p.ctx)
}

// config checks every value of the flags and turns them into the parts of
// a job.Config that need no file, key or network, and the rate each
// process paces its calls at. It reads nothing but getenv
// (JOB_COMPLETION_INDEX), so that every refusal is tested without I/O.
func (f *runFlags) config(getenv func(string) string) (cfg job.Config, rateLimit float64, err error) {
	cfg = job.Config{
		InputPath: f.input, Apply: f.apply, Out: f.out, Resume: f.resume,
		Endpoint: f.baseURL, Workers: f.workers, ResetSessions: f.resetSessions, RotateAPIKeys: f.rotateAPIKeys,
		IncludeSelf: f.includeSelf, MaxUsers: f.maxUsers, Version: version,
	}
	if err := f.connFlags.validate(); err != nil {
		return cfg, 0, err
	}
	switch {
	case f.workers < 1 || f.workers > 1024:
		return cfg, 0, fmt.Errorf("--workers %d: must be between 1 and 1024", f.workers)
	case f.maxUsers < 0:
		return cfg, 0, withHint(fmt.Errorf("--max-users %d: must be 0 (no cap) or more", f.maxUsers), hintMaxUsers)
	case f.resume && !f.apply:
		return cfg, 0, withHint(errors.New("--resume goes with --apply"), hintApply)
	case f.apply && f.out == "":
		return cfg, 0, withHint(errors.New("--out: an output folder is required with --apply"), hintOut)
	case f.selectSpec != "" && f.input != "":
		return cfg, 0, errors.New("--select and --input: give one; --select takes the users from ECGrid, --input from a file")
	case f.demo && f.input != "":
		return cfg, 0, errors.New("--demo uses the bundled example input (or --select): drop --input")
	case !f.demo && f.input == "" && f.selectSpec == "":
		return cfg, 0, withHint(errors.New("--input: a users CSV is required (or --select, or --demo)"), hintInput)
	}
	if f.selectSpec != "" {
		sel, err := job.ParseSelect(f.selectSpec)
		if err != nil {
			return cfg, 0, err
		}
		if f.shards > 1 || f.shard != "" {
			// Each shard would list for itself, and two listings may differ:
			// a user could fall between shards.
			return cfg, 0, errors.New("--select with --shard/--shards: each shard would list on its own and may see another set; export once with 'pwrotate users' and give every shard that file as --input")
		}
		cfg.Select = &sel
	}
	if err := checkReason(f.reason); err != nil {
		return cfg, 0, err
	}
	cfg.Reason = f.reason
	if cfg.Generator, err = rotate.NewGenerator(rotate.Shape{Length: f.length, Digits: f.digits, Symbols: f.symbols, SymbolSet: f.symbolSet}); err != nil {
		return cfg, 0, err
	}
	shard, shards, err := parseShard(f.shard, f.shards, getenv)
	if err != nil {
		return cfg, 0, err
	}
	rateLimit = f.rate
	if shards > 1 {
		cfg.Shard, cfg.Shards = shard, shards
		rateLimit = f.rate / float64(shards)
		if cfg.Out != "" {
			cfg.Out = filepath.Join(cfg.Out, report.ShardDir(shard))
		}
	}
	if f.pushgateway != "" {
		if err := metrics.ValidateURL(f.pushgateway); err != nil {
			return cfg, 0, err
		}
	}
	if len(f.deliver) == 0 {
		for _, fl := range []struct{ name, value string }{{"older-than", f.olderThan}, {"kubeconfig", f.kubeconfig}, {"kube-context", f.kubeContext}} {
			if fl.value != "" {
				return cfg, 0, fmt.Errorf("--%s goes with --deliver FILE (the Secrets to deliver to)", fl.name)
			}
		}
	}
	if f.olderThan != "" {
		if cfg.OlderThan, err = deliver.ParseAge(f.olderThan); err != nil {
			return cfg, 0, fmt.Errorf("--older-than %w", err)
		}
	}
	return cfg, rateLimit, nil
}

// wire builds the job.Config of a run: the checked flags (config), then
// what needs files, keys or the network: protected accounts, the demo
// simulator, the API key, recipients, the client.
func wire(f *runFlags, stdin io.Reader, stdout io.Writer, logger *slog.Logger) (job.Config, func(), error) {
	cfg, cleanup, err := wireFlags(f, stdin, stdout, logger)
	return cfg, cleanup, flagError(err)
}

// wireFlags is wire; its errors are about the flags' values.
func wireFlags(f *runFlags, stdin io.Reader, stdout io.Writer, logger *slog.Logger) (job.Config, func(), error) {
	cleanup := func() {}
	cfg, rateLimit, err := f.config(os.Getenv)
	cfg.Logger, cfg.Stdout, cfg.Stdin = logger, stdout, stdin
	if err != nil {
		return cfg, cleanup, err
	}
	if cfg.Select != nil {
		cfg.ListProgress = listLogger(logger, console.DefaultInterval)
	}
	if len(f.protect) > 0 {
		if cfg.Protect, err = input.LoadProtect(f.protect); err != nil {
			return cfg, cleanup, err
		}
	}
	apiKey := ""
	if f.demo {
		if apiKey, cleanup, err = wireDemo(f, &cfg, logger); err != nil {
			return cfg, cleanup, err
		}
	} else if apiKey, err = readAPIKey(f.apiKeyFile); err != nil {
		return cfg, cleanup, err
	}
	if len(f.recipients) > 0 || len(f.recipientFiles) > 0 {
		rs, err := report.ParseRecipients(f.recipients, f.recipientFiles)
		if err != nil {
			return cfg, cleanup, err
		}
		cfg.Recipients = append(cfg.Recipients, rs...)
	}
	if f.apply && len(cfg.Recipients) == 0 {
		what := "at least one recipient is needed with --apply"
		if len(f.recipientsMap) > 0 {
			what = "at least one global recipient is needed with --apply, besides --recipients-map (every file is also sealed to them: the break-glass keys)"
		}
		return cfg, cleanup, withHint(errors.New("--recipient or --recipients-file: "+what), hintRecipient)
	}
	if cfg.RecipientsMap, err = report.ParseRecipientsMap(f.recipientsMap, cfg.Recipients); err != nil {
		return cfg, cleanup, err
	}
	run := metrics.NewRun()
	cfg.Counter = run
	if apiKey != "" {
		lim := rotate.NewLimiter(rateLimit, f.burst)
		lim.SetLogger(logger)
		client, err := rotate.New(rotate.Config{
			BaseURL: f.baseURL, APIKey: apiKey, Workers: f.workers, Timeout: f.timeout,
			MaxAttempts: f.maxAttempts, Pacer: lim, Observer: run, Logger: logger,
		})
		if err != nil {
			return cfg, cleanup, err
		}
		cfg.Client = client
	} else if _, err := rotate.ValidateBaseURL(f.baseURL); err != nil {
		return cfg, cleanup, err
	}
	if len(f.deliver) > 0 {
		if err := wireDeliver(f, &cfg, apiKey, run, logger); err != nil {
			return cfg, cleanup, err
		}
	}
	if v := os.Getenv("PWROTATE_TEST_KILL_AT"); v != "" {
		cfg.Hook = killHook(v)
	}
	logger.Info("start", "version", version, "apply", f.apply, "input", inputName(cfg), "out", cfg.Out, "resume", f.resume,
		"baseURL", f.baseURL, "recipients", len(cfg.Recipients), "rate", rateLimit, "burst", f.burst, "workers", f.workers,
		"timeout", f.timeout.String(), "maxAttempts", f.maxAttempts, "resetSessions", f.resetSessions, "rotateAPIKeys", f.rotateAPIKeys,
		"includeSelf", f.includeSelf, "maxUsers", f.maxUsers, "shard", cfg.Shard, "shards", cfg.Shards, "demo", f.demo,
		"protectFiles", len(f.protect), "protectEntries", cfg.Protect.Len(), "reason", cfg.Reason,
		"recipientsMap", mapState(cfg.RecipientsMap),
		"deliverFiles", len(f.deliver), "olderThan", f.olderThan,
		"apiKey", keyState(apiKey))
	return cfg, cleanup, nil
}

// wireDeliver reads the --deliver files and makes the client that delivers
// to the cluster they name (--kubeconfig, --kube-context). It sends
// nothing: the job's preflight is the first request.
func wireDeliver(f *runFlags, cfg *job.Config, apiKey string, run *metrics.Run, logger *slog.Logger) error {
	m, err := deliver.ReadMap(f.deliver...)
	if err != nil {
		return fmt.Errorf("--deliver: %w", err)
	}
	c, err := deliver.New(m, deliver.Access{Kubeconfig: f.kubeconfig, Context: f.kubeContext}, deliver.Options{
		UserAgent: "pwrotate/" + version, Timeout: f.timeout, Workers: f.workers,
		Logger: logger, Observe: run.Delivery,
	})
	if err != nil {
		return fmt.Errorf("--deliver: %w", err)
	}
	cfg.Deliver = c
	if apiKey != "" {
		cfg.EscrowSecret = report.EscrowSecret(apiKey)
	}
	return nil
}

// wireDemo starts the demo simulator and points cfg at it: its base URL,
// the bundled input (unless --select) and, with --apply, a fresh identity
// in the output folder. It returns the simulator's key and what stops it.
func wireDemo(f *runFlags, cfg *job.Config, logger *slog.Logger) (apiKey string, cleanup func(), err error) {
	env, err := demo.Start()
	if err != nil {
		return "", func() {}, err
	}
	cleanup = func() { _ = env.Close() }
	f.baseURL, cfg.Endpoint = env.BaseURL, env.BaseURL
	if cfg.Select == nil {
		cfg.InputData, cfg.InputName = demo.ExampleInput, demo.InputName
	}
	if !f.apply {
		return env.APIKey, cleanup, nil
	}
	if entries, _ := os.ReadDir(cfg.Out); len(entries) > 0 && !f.resume {
		return "", cleanup, report.Kind(report.ErrNotEmpty, fmt.Errorf("output folder %s is not empty: pass --resume to continue the run in it, or choose a new folder", cfg.Out))
	}
	rcp, path, err := report.DemoIdentity(cfg.Out)
	if err != nil {
		return "", cleanup, fmt.Errorf("demo identity: %w", err)
	}
	cfg.Recipients = append(cfg.Recipients, rcp)
	logger.Info("demo: sealing to a fresh identity", "identity", path)
	return env.APIKey, cleanup, nil
}

// maxReasonRunes bounds --reason.
const maxReasonRunes = 200

// checkReason accepts a --reason of at most 200 printable characters
// (spaces included; no tab, line break or other control).
func checkReason(s string) error {
	if !utf8.ValidString(s) {
		return errors.New("--reason: not valid UTF-8")
	}
	if n := utf8.RuneCountInString(s); n > maxReasonRunes {
		return fmt.Errorf("--reason: %d characters, at most %d", n, maxReasonRunes)
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("--reason: character %U is not printable (one line of text, at most %d characters)", r, maxReasonRunes)
		}
	}
	return nil
}

func inputName(cfg job.Config) string {
	if cfg.Select != nil {
		return "--select " + cfg.Select.String()
	}
	if cfg.InputName != "" {
		return cfg.InputName
	}
	return cfg.InputPath
}

// mapState describes the --recipients-map of a run for the start log line.
func mapState(m *report.RecipientsMap) string {
	if m == nil {
		return "none"
	}
	return fmt.Sprintf("by %s: %d groups, %d recipients, sha256 %s", m.Column(), len(m.Groups()), m.Rows, m.SHA256)
}

func keyState(key string) string {
	if key == "" {
		return "none"
	}
	return "set"
}

// parseShard reads --shard K/N, or --shards N with K from
// JOB_COMPLETION_INDEX (a Kubernetes Indexed Job).
func parseShard(spec string, shards int, getenv func(string) string) (k, n int, err error) {
	if spec == "" && shards <= 1 {
		if shards < 0 {
			return 0, 0, fmt.Errorf("--shards %d: must be 1 or more", shards)
		}
		return 0, 1, nil
	}
	if spec != "" {
		ks, ns, ok := strings.Cut(spec, "/")
		if ok && shards > 1 && ns != strconv.Itoa(shards) {
			return 0, 0, fmt.Errorf("--shard %s and --shards %d disagree on the number of shards", spec, shards)
		}
		if !ok {
			ns = strconv.Itoa(shards)
		}
		if k, err = strconv.Atoi(ks); err != nil {
			return 0, 0, fmt.Errorf("--shard %q: want K/N", spec)
		}
		if n, err = strconv.Atoi(ns); err != nil {
			return 0, 0, fmt.Errorf("--shard %q: want K/N", spec)
		}
	} else {
		n = shards
		idx := getenv("JOB_COMPLETION_INDEX")
		if idx == "" {
			return 0, 0, fmt.Errorf("--shards %d: give --shard K/N or set JOB_COMPLETION_INDEX", shards)
		}
		if k, err = strconv.Atoi(idx); err != nil {
			return 0, 0, fmt.Errorf("JOB_COMPLETION_INDEX %q: not a number", idx)
		}
	}
	if n < 1 || n > 10000 || k < 0 || k >= n {
		return 0, 0, fmt.Errorf("--shard %d/%d: need 0 <= K < N <= 10000", k, n)
	}
	return k, n, nil
}

// killHook makes the process kill itself with SIGKILL at a named point of
// the run ("point" or "point:n"). Only tests set PWROTATE_TEST_KILL_AT.
func killHook(spec string) func(string, int) {
	point, nth, _ := strings.Cut(spec, ":")
	n, _ := strconv.Atoi(nth)
	if n < 1 {
		n = 1
	}
	return func(p string, i int) {
		if p == point && i == n {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			time.Sleep(time.Minute)
		}
	}
}

func pushMetrics(f *runFlags, cfg job.Config, sum report.Summary, logger *slog.Logger) {
	if f.pushgateway == "" {
		return
	}
	run, _ := cfg.Counter.(*metrics.Run)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	grouping := map[string]string{}
	if cfg.Shards > 1 {
		grouping["shard"] = strconv.Itoa(cfg.Shard)
	}
	var keys *metrics.APIKeys
	if k := sum.APIKeys; k != nil {
		keys = &metrics.APIKeys{Rotated: k.Rotated, NotRotated: k.NotRotated, ReadBacks: k.ReadBacks, GeneratesAvoided: k.GeneratesAvoided}
	}
	err := run.Push(ctx, f.pushgateway, "pwrotate", grouping, metrics.Final{
		Counts: sum.Counts, Duration: sum.FinishedAt.Sub(sum.StartedAt), AchievedRate: sum.AchievedRate,
		ExitCode: sum.ExitCode, Interrupted: sum.Interrupted,
		// A dry run rotates nothing: it must not silence a "rotation overdue" alert.
		Success: sum.ExitCode == report.ExitOK && !sum.DryRun,
		// A re-run of a complete folder changed nothing: it reports when
		// the rotation really happened (summary.json), not now.
		CompletedAt: sum.FinishedAt,
		APIKeys:     keys,
	})
	if err != nil {
		logger.Warn("pushing metrics failed", "err", err)
		return
	}
	logger.Info("metrics pushed", "pushgateway", metrics.Redact(f.pushgateway))
}
