package report

// Exit codes of pwrotate, as a run's summary.json records them too. They
// are defined here once; the command maps every error to one of them.
const (
	ExitOK          = 0 // every record updated or skipped (dry run: no invalid record)
	ExitFatal       = 1 // could not start, or a fatal error
	ExitIncomplete  = 2 // finished, but some records failed or were invalid, or a reset failed
	ExitInterrupted = 3 // interrupted by a signal: run again with --resume
	ExitBusy        = 4 // the output folder is held by another run: try again later
)

// ExitMeaning says what an exit code means, in words, for a run or (dryRun)
// a plan.
func ExitMeaning(code int, dryRun bool) string {
	switch code {
	case ExitOK:
		if dryRun {
			return "the plan is clean: no invalid record"
		}
		return "every record updated or skipped"
	case ExitFatal:
		return "could not start, or a fatal error stopped the run"
	case ExitIncomplete:
		if dryRun {
			return "some input records are invalid"
		}
		return "finished, but some records failed or were invalid, or a session reset failed"
	case ExitInterrupted:
		return "interrupted: nothing is lost, resume the run"
	case ExitBusy:
		return "the output folder is held by another run: try again later"
	}
	return "unknown exit code"
}
