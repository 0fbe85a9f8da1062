package console

import (
	"fmt"
	"io"
	"pwrotate/report"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Header is what the start header of 'pwrotate run' shows a person: the few
// settings that matter at a glance. Every setting stays in the JSON log and
// in run.json; this is not a dump of them.
type Header struct {
	Version   string
	Apply     bool
	Resume    bool
	Input     string // the input path or name; "" when Selection is set
	Selection string // the --select filter, if any
	Endpoint  string
	Demo      bool // the endpoint is the built-in simulator
	Rate      float64
	Burst     int
	Workers   int
	Shard     string // "K/N" for a sharded run
	Out       string // output folder; "" for none
	Sealed    int    // number of age recipients
	// SealedPer names the groups of a --recipients-map ("network",
	// "mailbox"), "" without one; Groups counts the map's groups.
	SealedPer string
	Groups    int
	// DemoIdentity is the identity --demo seals to, in the output folder.
	DemoIdentity string
	Reset        bool   // --reset-sessions
	Reason       string // --reason
}

// WriteHeader writes h to w in one Write.
func WriteHeader(w io.Writer, h Header) {
	var b strings.Builder
	mode := "DRY RUN: nothing will be changed"
	if h.Apply {
		mode = "APPLY: passwords will be changed"
		if h.Resume {
			mode = "APPLY (resume): passwords will be changed"
		}
	}
	fmt.Fprintf(&b, "pwrotate %s — %s\n", h.Version, mode)
	if h.Selection != "" {
		fmt.Fprintf(&b, "  select:    %s\n", h.Selection)
	} else {
		fmt.Fprintf(&b, "  input:     %s\n", h.Input)
	}
	ep := h.Endpoint
	if h.Demo {
		ep += " (built-in simulator)"
	}
	fmt.Fprintf(&b, "  endpoint:  %s\n", ep)
	rate := "no rate limit"
	if h.Rate > 0 {
		rate = formatNumber(h.Rate) + " calls/s"
	}
	fmt.Fprintf(&b, "  pacing:    %s (burst %d), %s\n", rate, h.Burst, plural(h.Workers, "worker"))
	if h.Shard != "" {
		fmt.Fprintf(&b, "  shard:     %s\n", h.Shard)
	}
	switch {
	case h.Out == "":
		fmt.Fprintf(&b, "  output:    none (a dry run without --out)\n")
	case h.DemoIdentity != "":
		fmt.Fprintf(&b, "  output:    %s, passwords sealed to the demo key %s\n", h.Out, h.DemoIdentity)
	case h.Sealed > 0 && h.SealedPer != "":
		fmt.Fprintf(&b, "  output:    %s, passwords sealed per %s to its own recipients (%s in the map), every file also to %s\n",
			h.Out, h.SealedPer, plural(h.Groups, h.SealedPer), plural(h.Sealed, "recipient"))
	case h.Sealed > 0:
		fmt.Fprintf(&b, "  output:    %s, passwords sealed to %s\n", h.Out, plural(h.Sealed, "recipient"))
	default:
		fmt.Fprintf(&b, "  output:    %s\n", h.Out)
	}
	if h.Reset {
		fmt.Fprintf(&b, "  sessions:  reset after each change\n")
	}
	if h.Reason != "" {
		fmt.Fprintf(&b, "  reason:    %s\n", h.Reason)
	}
	_, _ = io.WriteString(w, b.String())
}

// WriteError writes "pwrotate: error: msg" on one line, then
// "pwrotate: hint: hint" when hint is not empty.
func WriteError(w io.Writer, msg, hint string) {
	s := "pwrotate: error: " + oneLine(msg) + "\n"
	if hint != "" {
		s += "pwrotate: hint: " + oneLine(hint) + "\n"
	}
	_, _ = io.WriteString(w, s)
}

// oneLine folds line breaks and other control characters into spaces.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, strings.TrimSpace(s))
}

// Problem is one record that did not end well: failed, invalid, or
// updated without its session reset.
type Problem struct {
	Line   string
	User   string
	Status string
	Reason string
}

// Final is what the closing summary says.
type Final struct {
	DryRun      bool
	ExitCode    int
	Counts      map[string]int
	Elapsed     time.Duration
	APICalls    int
	Retries     int
	RateLimited int     // answers with HTTP 429; -1 when not known
	Rate        float64 // achieved API calls per second
	Interrupted bool
	Outputs     []string
	// Problems lists the first failed or invalid records (at most
	// MaxProblems); ProblemsTotal counts them all.
	Problems      []Problem
	ProblemsTotal int
	// ProblemsIn names where the full list is (results.csv), or "" when
	// the plan above lists them (a dry run without --out).
	ProblemsIn string
	// Next lists the commands to run next, each with what it does.
	Next []NextStep
}

// NextStep is one command a person may run next.
type NextStep struct {
	What    string // what it is for, a sentence
	Command string // the command, or "" for advice without one
}

// MaxProblems is the number of problem records the summary lists.
const MaxProblems = 10

// statusWords orders the statuses and says what each means.
var statusWords = []struct{ status, words string }{
	{"updated", "new password live and sealed"},
	{"planned", "would be changed by --apply"},
	{"skipped", "left alone on purpose"},
	{"failed", "not confirmed changed: see below"},
	{"invalid", "not sent: the input record is invalid"},
	{"pending", "no outcome yet: resume the run"},
}

// WriteSummary writes the closing summary to w in one Write.
func WriteSummary(w io.Writer, f Final) {
	var b strings.Builder
	what := "Finished"
	switch {
	case f.Interrupted:
		what = "Interrupted"
	case f.ExitCode == report.ExitFatal:
		what = "Stopped"
	}
	kind := "run"
	if f.DryRun {
		kind = "dry run"
	}
	fmt.Fprintf(&b, "\n%s (%s) in %s\n", what, kind, formatElapsed(f.Elapsed))
	known := map[string]bool{}
	width := 1
	for _, c := range f.Counts {
		width = max(width, len(strconv.Itoa(c)))
	}
	any := false
	for _, s := range statusWords {
		known[s.status] = true
		if n := f.Counts[s.status]; n > 0 || (s.status == "updated" && !f.DryRun) || (s.status == "planned" && f.DryRun) {
			fmt.Fprintf(&b, "  %-11s%*d  %s\n", s.status+":", width, n, s.words)
			any = true
		}
	}
	var other []string
	for k := range f.Counts {
		if !known[k] && f.Counts[k] > 0 {
			other = append(other, k)
		}
	}
	sort.Strings(other)
	for _, k := range other {
		fmt.Fprintf(&b, "  %-11s%*d\n", k+":", width, f.Counts[k])
		any = true
	}
	if !any {
		b.WriteString("  no records\n")
	}
	calls := plural(f.APICalls, "API call")
	if f.Rate > 0 {
		calls += " at " + formatNumber(f.Rate) + "/s"
	}
	calls += ", " + plural(f.Retries, "retry")
	if f.RateLimited >= 0 {
		calls += ", " + strconv.Itoa(f.RateLimited) + " rate-limited (HTTP 429)"
	}
	fmt.Fprintf(&b, "  calls:     %s\n", calls)
	for i, o := range report.CondenseSealed(f.Outputs) {
		label := "outputs:"
		if i > 0 {
			label = ""
		}
		fmt.Fprintf(&b, "  %-10s %s\n", label, o)
	}
	fmt.Fprintf(&b, "  exit code: %d, %s\n", f.ExitCode, report.ExitMeaning(f.ExitCode, f.DryRun))

	if f.ProblemsTotal > 0 {
		if len(f.Problems) > 0 {
			b.WriteString("\nRecords that need attention (line, user, reason):\n")
			for _, p := range f.Problems {
				fmt.Fprintf(&b, "  line %-5s user %-11s %s: %s\n", p.Line, displayCell(p.User), p.Status, displayCell(oneLine(p.Reason)))
			}
		}
		more := f.ProblemsTotal - len(f.Problems)
		switch {
		case len(f.Problems) == 0:
			fmt.Fprintf(&b, "\n%s need attention: the plan above lists them.\n", plural(f.ProblemsTotal, "record"))
		case more > 0 && f.ProblemsIn != "":
			fmt.Fprintf(&b, "  … and %d more in %s\n", more, f.ProblemsIn)
		}
	}
	if len(f.Next) > 0 {
		b.WriteString("\nNext:\n")
		for _, n := range f.Next {
			for _, l := range Wrap(n.What, 76) {
				fmt.Fprintf(&b, "  %s\n", l)
			}
			if n.Command != "" {
				fmt.Fprintf(&b, "    %s\n", n.Command)
			}
		}
	}
	_, _ = io.WriteString(w, b.String())
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	if strings.HasSuffix(word, "y") {
		return strconv.Itoa(n) + " " + strings.TrimSuffix(word, "y") + "ies"
	}
	return strconv.Itoa(n) + " " + word + "s"
}

// formatNumber prints a rate: "10", "2.5", "18.7".
func formatNumber(f float64) string {
	if f == float64(int64(f)) {
		return strconv.FormatInt(int64(f), 10)
	}
	return strconv.FormatFloat(f, 'f', 1, 64)
}

// formatElapsed prints a duration for a person: "850ms", "2.4s", "3m05s",
// "2h07m".
func formatElapsed(d time.Duration) string {
	switch {
	case d < time.Second:
		return strconv.FormatInt(d.Milliseconds(), 10) + "ms"
	case d < time.Minute:
		return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + "s"
	case d < time.Hour:
		d = d.Round(time.Second)
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	default:
		d = d.Round(time.Minute)
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
}

// displayCell shows a results.csv cell to a person: without the ' that
// keeps a spreadsheet from reading it as a formula, "-" when empty.
func displayCell(s string) string {
	if len(s) > 1 && s[0] == '\'' && strings.IndexByte("=+-@", s[1]) >= 0 {
		s = s[1:]
	}
	if s == "" {
		return "-"
	}
	return s
}

// Wrap breaks s into lines of at most width characters at spaces (a word
// longer than width has a line of its own).
func Wrap(s string, width int) []string {
	var lines []string
	line := ""
	for _, w := range strings.Fields(s) {
		switch {
		case line == "":
			line = w
		case len([]rune(line))+1+len([]rune(w)) <= width:
			line += " " + w
		default:
			lines = append(lines, line)
			line = w
		}
	}
	return append(lines, line)
}
