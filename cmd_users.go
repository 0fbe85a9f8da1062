package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"pwrotate/report"
	"pwrotate/report/console"
	"pwrotate/report/directory"
	"pwrotate/report/metrics"
	"pwrotate/rotate"
)

// usersFlags are the flags of 'pwrotate users'.
type usersFlags struct {
	connFlags
	network, mailbox  int
	authLevel, status string
	output, progress  string
}

func newUsersFlags(stderr io.Writer) (*flag.FlagSet, *usersFlags) {
	f := &usersFlags{}
	fs := flag.NewFlagSet("pwrotate users", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&f.network, "network", 0, "list the users of this network ID (0 = every network the key sees)")
	fs.IntVar(&f.mailbox, "mailbox", 0, "list the users of this mailbox ID (0 = any)")
	fs.StringVar(&f.authLevel, "auth-level", "", "list the users of this AuthLevel (Root … General; empty = any)")
	fs.StringVar(&f.status, "status", rotate.DefaultStatus, "list the users of this status (Development, Active, Preproduction, Suspended, Terminated), or any")
	fs.StringVar(&f.output, "output", "-", "write the CSV to this file (atomically, mode 0600); - for stdout")
	fs.StringVar(&f.progress, "progress", "auto", "auto, always, never")
	f.connFlags.register(fs)
	fs.Usage = func() {} // the help is hand-written (help.go)
	return fs, f
}

// filter checks the filter flags and returns the listing's filter.
func (f *usersFlags) filter() (rotate.UserFilter, error) {
	var uf rotate.UserFilter
	if f.network < 0 || f.network > 1<<31-1 {
		return uf, fmt.Errorf("--network %d: want an ID from 1 (or 0 for any)", f.network)
	}
	if f.mailbox < 0 || f.mailbox > 1<<31-1 {
		return uf, fmt.Errorf("--mailbox %d: want an ID from 1 (or 0 for any)", f.mailbox)
	}
	uf.NetworkID, uf.MailboxID = f.network, f.mailbox
	var err error
	if uf.AuthLevel, err = rotate.ParseLevelName(f.authLevel); err != nil {
		return uf, fmt.Errorf("--auth-level: %w", err)
	}
	if uf.Status, err = rotate.ParseStatus(f.status); err != nil {
		return uf, fmt.Errorf("--status: %w", err)
	}
	return uf, nil
}

// cmdUsers is 'pwrotate users'. sigs is the process's signal channel, or
// nil when Main runs in-process (tests).
func cmdUsers(args []string, stdout, stderr io.Writer, sigs chan os.Signal) int {
	if refuseKeyFlag("users", args, stderr) {
		return report.ExitFatal
	}
	fs, f := newUsersFlags(stderr)
	fs.SetOutput(io.Discard)
	rest, err := parseArgs(fs, args, true)
	if errors.Is(err, flag.ErrHelp) {
		writeHelp(stdout, "users")
		return report.ExitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "pwrotate users: %v\n", err)
		return report.ExitFatal
	}
	if len(rest) > 0 {
		fmt.Fprintf(stderr, "pwrotate users: unexpected argument %q (flags only; the file is --output FILE)\n", rest[0])
		return report.ExitFatal
	}
	stderrFile, _ := stderr.(*os.File)
	terminal := stderrFile != nil && console.IsTerminal(stderrFile)
	prog, err := console.NewProgress(console.ProgressConfig{Out: stderr, Mode: f.progress, Terminal: terminal})
	if err != nil {
		fmt.Fprintf(stderr, "pwrotate users: %v\n", err)
		return report.ExitFatal
	}
	logger, err := f.logger(prog.LogWriter(), terminal)
	if err != nil {
		fmt.Fprintf(stderr, "pwrotate users: %v\n", err)
		return report.ExitFatal
	}
	prog.SetLogger(logger)

	// The listing changes nothing, and its file is written atomically at
	// the end: a signal exits 3 at once.
	ctx, stopWatching := watchSignals(sigs, interrupt{early: func(s os.Signal) {
		logger.Warn("interrupted: nothing was written", "signal", s.String(), "exitCode", report.ExitInterrupted)
	}})
	defer stopWatching()

	code, err := listUsers(ctx, f, stdout, prog, logger)
	prog.Stop()
	if err != nil {
		logger.Error("listing users failed", "err", err, "exitCode", code)
	}
	return code
}

// listUsers lists the users and writes the CSV; it returns the exit code.
func listUsers(ctx context.Context, f *usersFlags, stdout io.Writer, prog *console.Progress, logger *slog.Logger) (int, error) {
	if err := f.connFlags.validate(); err != nil {
		return report.ExitFatal, err
	}
	filter, err := f.filter()
	if err != nil {
		return report.ExitFatal, err
	}
	apiKey, err := readAPIKey(f.apiKeyFile)
	if err != nil {
		return report.ExitFatal, err
	}
	if apiKey == "" {
		return report.ExitFatal, errors.New("no API key: set ECGRID_API_KEY or pass --api-key-file")
	}
	calls := metrics.NewRun()
	client, err := rotate.New(rotate.Config{
		BaseURL: f.baseURL, APIKey: apiKey, Workers: 1, Timeout: f.timeout, MaxAttempts: f.maxAttempts,
		Pacer: rotate.NewLimiter(f.rate, f.burst), Observer: calls, Logger: logger,
	})
	if err != nil {
		return report.ExitFatal, err
	}
	logger.Info("start", "version", version, "command", "users", "filter", filter.String(), "output", f.output,
		"baseURL", f.baseURL, "rate", f.rate, "burst", f.burst, "timeout", f.timeout.String(), "maxAttempts", f.maxAttempts,
		"apiKey", keyState(apiKey))
	if ctx.Err() != nil {
		return report.ExitInterrupted, errors.New("interrupted during start-up: nothing was listed")
	}
	start := time.Now()
	prog.Start(ctx)
	pages, dropped := 0, 0
	users, err := client.ListUsers(ctx, filter, rotate.ListOptions{OnPage: progressByPage(prog, &pages),
		OnDrop: func(rotate.User, string) { dropped++ }})
	if err != nil {
		if ctx.Err() != nil || errors.Is(err, context.Canceled) {
			return report.ExitInterrupted, fmt.Errorf("interrupted: nothing was written: %w", err)
		}
		return report.ExitFatal, fmt.Errorf("POST %s/v2/users/list: %w", f.baseURL, err)
	}
	prog.Stop()
	if err := directory.WriteTo(f.output, stdout, directory.Users(users)); err != nil {
		return report.ExitFatal, fmt.Errorf("--output %s: %w", f.output, err)
	}
	if len(users) == 0 {
		logger.Warn("no user matches the filter", "filter", filter.String())
	}
	logger.Info("listed", "users", len(users), "dropped", dropped, "pages", pages, "apiCalls", calls.Calls(), "retries", calls.Retries(),
		"output", f.output, "duration", time.Since(start).Round(time.Millisecond).String(), "exitCode", report.ExitOK)
	return report.ExitOK, nil
}

// progressByPage returns a ListOptions.OnPage that counts the new users of
// each page on prog and the pages in *pages.
func progressByPage(prog *console.Progress, pages *int) func(pageNo, pageUsers, total int) {
	var mu sync.Mutex
	shown := 0
	return func(pageNo, _, total int) {
		mu.Lock()
		defer mu.Unlock()
		*pages = pageNo
		for ; shown < total; shown++ {
			prog.Done(false)
		}
	}
}

// listLogger returns a ListOptions.OnPage for run --select: a "listing
// users" log line at most every interval, and for the first page.
func listLogger(logger *slog.Logger, interval time.Duration) func(pageNo, pageUsers, total int) {
	var last time.Time
	return func(pageNo, _, total int) {
		if now := time.Now(); pageNo == 1 || now.Sub(last) >= interval {
			last = now
			logger.Info("listing users", "page", pageNo, "listed", total)
		}
	}
}
