package main

import (
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"regexp"
	"strings"

	"pwrotate/job"
	"pwrotate/report"
	"pwrotate/report/console"
	"pwrotate/report/metrics"
)

// Wiring of the screens a person sees at a terminal (package console draws
// them). A person is at the terminal when stderr is a terminal and
// --log-format is auto; otherwise the logs stay exactly as they are.

// humanLogger is the logger of a person at a terminal, at --log-level.
func (c *connFlags) humanLogger(w io.Writer) (*slog.Logger, error) {
	if _, err := c.logger(io.Discard, true); err != nil {
		return nil, err // names --log-format or --log-level
	}
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.logLevel))
	return slog.New(console.NewHumanHandler(w, level)), nil
}

// singleDashFlag finds Go's "-name" in the flag package's errors.
var singleDashFlag = regexp.MustCompile(`(flag|defined:) -([a-z])`)

// startError reports an error that stops a command before it could start:
// on a terminal "pwrotate: error: …" and a hint, else the plain line it
// always was.
func startError(stderr io.Writer, human bool, cmd string, err error, resume string) {
	msg := err.Error()
	if !human {
		_, _ = io.WriteString(stderr, "pwrotate "+cmd+": "+msg+"\n")
		return
	}
	msg = singleDashFlag.ReplaceAllString(msg, "$1 --$2")
	console.WriteError(stderr, msg, hintFor(flagError(err), cmd, resume))
}

// shellArgs writes args for a shell: plain words as they are, the rest in
// single quotes.
func shellArgs(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		if a != "" && strings.Trim(a, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_=.,/:@+%") == "" {
			out[i] = a
		} else {
			out[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	return strings.Join(out, " ")
}

// hasFlag reports whether args set the named flag (--name, -name, --name=…).
func hasFlag(args []string, name string) bool {
	for _, a := range args {
		n, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if strings.HasPrefix(a, "-") && n == name {
			return true
		}
	}
	return false
}

// runCommand is 'pwrotate run ARGS' plus the extra words.
func runCommand(args []string, extra ...string) string {
	s := "pwrotate run " + shellArgs(args)
	if len(extra) > 0 {
		s += " " + strings.Join(extra, " ")
	}
	return s
}

// runError shows a person the error that stopped a run, with its hint.
func runError(w io.Writer, f *runFlags, args []string, err error) {
	msg := err.Error()
	console.WriteError(w, msg, hintFor(err, "run", resumeCommand(f, args)))
}

// started reports whether a run got far enough for its summary to say
// something: a fatal error or a busy folder before any outcome is an error
// line alone.
func started(sum report.Summary) bool {
	if sum.ExitCode != report.ExitFatal && sum.ExitCode != report.ExitBusy {
		return true
	}
	for k, n := range sum.Counts {
		if k != "pending" && n > 0 {
			return true
		}
	}
	return false
}

// resumeCommand is the command that resumes this run, or "" when there is
// nothing to resume (a dry run).
func resumeCommand(f *runFlags, args []string) string {
	if !f.apply || f.out == "" {
		return ""
	}
	if hasFlag(args, "resume") {
		return runCommand(args)
	}
	return runCommand(args, "--resume")
}

// runHeader is the start header of a run.
func runHeader(f *runFlags, cfg job.Config) console.Header {
	rate := f.rate
	if cfg.Shards > 1 {
		rate /= float64(cfg.Shards)
	}
	h := console.Header{
		Version: version, Apply: f.apply, Resume: f.resume, Input: inputName(cfg),
		Endpoint: f.baseURL, Demo: f.demo, Rate: rate, Burst: f.burst, Workers: f.workers,
		Out: cfg.Out, Sealed: len(cfg.Recipients), Reset: f.resetSessions,
		Reason: cfg.Reason,
	}
	if m := cfg.RecipientsMap; m != nil {
		h.SealedPer, h.Groups = m.Kind.String(), len(m.Groups())
	}
	if f.selectSpec != "" {
		h.Input, h.Selection = "", f.selectSpec
	}
	if cfg.Shards > 1 {
		h.Shard = fmt.Sprintf("%d/%d", cfg.Shard, cfg.Shards)
	}
	if f.demo && f.apply {
		h.DemoIdentity = filepath.Join(cfg.Out, report.DemoIdentityName)
	}
	return h
}

// runFinal is the closing summary of a run.
func runFinal(f *runFlags, cfg job.Config, sum report.Summary, args []string) console.Final {
	fin := console.Final{
		DryRun: sum.DryRun, ExitCode: sum.ExitCode, Counts: sum.Counts,
		Elapsed: sum.FinishedAt.Sub(sum.StartedAt), APICalls: sum.APICalls, Retries: sum.Retries,
		Rate: sum.AchievedRate, Interrupted: sum.Interrupted, Outputs: sum.Outputs,
	}
	fin.RateLimited = -1
	if run, ok := cfg.Counter.(*metrics.Run); ok && (run.Calls() > 0 || sum.APICalls == 0) {
		// Counted by this process; a re-run of a complete folder shows the
		// earlier run's summary, whose 429s were not recorded.
		fin.RateLimited = int(run.Answers(429))
	}
	failed, invalid := sum.Counts[string(report.Failed)], sum.Counts[string(report.Invalid)]
	fin.ProblemsTotal = failed + invalid
	results := ""
	if cfg.Out != "" {
		results = filepath.Join(cfg.Out, report.ResultsName)
		if probs, err := console.ReadProblems(results, console.MaxProblems); err == nil {
			fin.Problems = probs
			fin.ProblemsIn = results
			fin.ProblemsTotal = max(fin.ProblemsTotal, len(probs))
		}
	}

	input := inputName(cfg)
	switch {
	case sum.ExitCode == report.ExitInterrupted:
		if r := resumeCommand(f, args); r != "" {
			fin.Next = append(fin.Next, console.NextStep{What: "Finish the run: nothing recorded is lost, and it goes on where it stopped:", Command: r})
		} else {
			fin.Next = append(fin.Next, console.NextStep{What: "Nothing was changed; run the same command again:", Command: runCommand(args)})
		}
		return fin
	case sum.ExitCode == report.ExitFatal:
		if r := resumeCommand(f, args); r != "" {
			fin.Next = append(fin.Next, console.NextStep{What: "Fix the cause above, then finish the run:", Command: r})
		}
		return fin
	case sum.DryRun:
		if invalid > 0 {
			fin.Next = append(fin.Next, console.NextStep{What: "Fix the invalid records in " + input + ", then check again:", Command: runCommand(args)})
		}
		if sum.Counts[string(report.Planned)] > 0 {
			var extra []string
			extra = append(extra, "--apply")
			if !hasFlag(args, "out") {
				if f.demo {
					extra = append(extra, "--out demo-out")
				} else {
					extra = append(extra, "--out DIR")
				}
			}
			if !f.demo && !hasFlag(args, "recipient") && !hasFlag(args, "recipients-file") {
				extra = append(extra, "--recipient age1...")
			}
			fin.Next = append(fin.Next, console.NextStep{What: "Carry out the plan:", Command: runCommand(args, extra...)})
		}
		return fin
	}
	if sum.Counts[string(report.Updated)] > 0 || failed > 0 {
		key := "KEY.txt"
		what := "Read the new passwords (KEY.txt: the age identity of a --recipient):"
		if f.demo {
			key = filepath.Join(cfg.Out, report.DemoIdentityName)
			what = "Read the new passwords (the demo sealed them to " + key + "):"
		}
		fin.Next = append(fin.Next, console.NextStep{What: what, Command: "pwrotate open --identity " + shellArgs([]string{key, cfg.Out})})
		if k := sum.APIKeys; k != nil && k.Rotated > 0 {
			fin.Next = append(fin.Next, console.NextStep{
				What:    fmt.Sprintf("Hand out the %d new API keys: every integration using an old one stopped working when it was replaced:", k.Rotated),
				Command: "pwrotate open --api-keys --identity " + shellArgs([]string{key, cfg.Out}),
			})
		}
	}
	if k := sum.APIKeys; k != nil && k.NotRotated > 0 {
		what := fmt.Sprintf("%d API keys were not rotated (rows with apiKeyRotated=false in %s say why); fix the cause, then settle them:", k.NotRotated, results)
		fin.Next = append(fin.Next, console.NextStep{What: what, Command: resumeCommand(f, args)})
	}
	if d := sum.Delivery; d != nil && (d.NotDelivered > 0 || !sum.Complete) {
		what := fmt.Sprintf("%d changed passwords are not in their Kubernetes Secrets yet (rows with delivered=false in %s say why); once the cluster answers, deliver them (no second change):", d.NotDelivered, results)
		if !sum.Complete {
			what = "The Kubernetes API was down: users with --deliver targets were left unchanged, and changed passwords may be owed to their Secrets; once it answers, finish the run:"
		}
		fin.Next = append(fin.Next, console.NextStep{What: what, Command: resumeCommand(f, args)})
	}
	if failed > 0 {
		fin.Next = append(fin.Next, console.NextStep{What: "Failed users were not confirmed changed ('open' shows any unconfirmed candidate). Fix the cause, then rotate them again: their userIds are the rows of " + results + " with status failed; use a new --out."})
	}
	if invalid > 0 {
		fin.Next = append(fin.Next, console.NextStep{What: "Invalid records were not sent: fix them in " + input + " and rotate those users with a new --out."})
	}
	return fin
}
