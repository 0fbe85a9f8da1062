package main

import (
	"errors"
	"io/fs"
	"strings"

	"pwrotate/job"
	"pwrotate/job/input"
	"pwrotate/report"
)

// hintError is an error made in this package with the hint that mends it.
type hintError struct {
	err  error
	hint string // {cmd} is the command; {resume} the command that resumes
	// soft: the hint of any bad flag value, given only when no kind of
	// error made below main (errors.Is) has a hint of its own.
	soft bool
}

func (e *hintError) Error() string { return e.err.Error() }
func (e *hintError) Unwrap() error { return e.err }

// withHint attaches hint to err, where err is made.
func withHint(err error, hint string) error {
	if err == nil {
		return nil
	}
	return &hintError{err: err, hint: hint}
}

// flagError marks err, an error about a flag's value, with the general
// hint about flags, unless it has a hint already.
func flagError(err error) error {
	var h *hintError
	if err == nil || errors.As(err, &h) {
		return err
	}
	return &hintError{err: err, hint: hintFlags, soft: true}
}

// Hints of the errors this package makes: each is attached where its error
// is made.
const (
	hintFlags      = "'pwrotate help {cmd}' lists the flags with their defaults"
	hintUnknown    = "'pwrotate help {cmd}' lists the flags"
	hintRecipient  = "add --recipient age1… (your age public key) or --recipients-file FILE; 'age-keygen -o key.txt' makes a key pair"
	hintOut        = "add --out DIR: a new folder for results.csv, summary.json and the sealed passwords"
	hintInput      = "add --input users.csv (a CSV with a userId column), or try the built-in simulator with --demo"
	hintResumeOut  = "to continue the run in it: {resume}"
	hintApply      = "add --apply (a dry run has nothing to resume)"
	hintAPIKey     = "set ECGRID_API_KEY, or pass --api-key-file FILE"
	hintMaxUsers   = "check the input; if its size is right, raise --max-users"
	hintIdentity   = "add --identity FILE: the age identity (or SSH private key) of a recipient the passwords were sealed to"
	hintOpenTarget = "pwrotate open --identity KEY.txt OUT-FOLDER"
)

// hintByKind gives the hint of each kind of error that other packages
// make (errors.Is), in the order they are tried.
var hintByKind = []struct {
	kind error
	hint string
}{
	{report.ErrNotEmpty, hintResumeOut},
	{report.ErrBusy, "another pwrotate holds this --out folder: wait for it to finish, then run the same command again"},
	{job.ErrOtherRun, "give --input the file that run started with, or choose a new --out folder"},
	{report.ErrDryRunFolder, "choose a new --out folder for the run that applies"},
	{job.ErrNoAPIKey, hintAPIKey},
	{job.ErrKeyRefused, "check the key in ECGRID_API_KEY or --api-key-file: the server does not know it"},
	{job.ErrLevelTooLow, "use the API key of an account with AuthLevel NetworkAdmin or higher"},
	{job.ErrTooMany, hintMaxUsers},
	{input.ErrNoUserIDColumn, "the input needs a header row with a userId column: check the file given to --input"},
	{input.ErrNoRecords, "the input has no users: check the file, or the job that writes it"},
	{job.ErrPreflight, "check --base-url, the network, and the key"},
	{fs.ErrNotExist, "check the path"},
}

// hintFor returns the one-line hint for err, chosen by where it was made
// (never by its text), or "". cmd is the command; resume the command that
// resumes the run, or "" when there is none: a hint that needs it is then
// not given.
func hintFor(err error, cmd, resume string) string {
	hint := ""
	var h *hintError
	var ie *input.Error
	var ee *job.ExitError
	hinted := errors.As(err, &h)
	switch {
	case hinted && !h.soft:
		hint = h.hint
	case errors.As(err, &ee) && ee.Code == report.ExitInterrupted:
		hint = "nothing is lost; to finish: {resume}"
	default:
		for _, k := range hintByKind {
			if errors.Is(err, k.kind) {
				hint = k.hint
				break
			}
		}
		if hint == "" && errors.As(err, &ie) {
			hint = "check the file given to --input (- reads stdin)"
		}
		if hint == "" && hinted {
			hint = h.hint
		}
	}
	if strings.Contains(hint, "{resume}") && resume == "" {
		return ""
	}
	if cmd == "" {
		cmd = "run"
	}
	return strings.NewReplacer("{resume}", resume, "{cmd}", cmd).Replace(hint)
}
