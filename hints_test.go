package main

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"testing"

	"pwrotate/job"
	"pwrotate/job/input"
	"pwrotate/report"
)

// TestHintFor: a hint is chosen by where its error was made (its kind),
// never by its text: an error that merely mentions another error's words
// gets that one's hint only if it is of that kind.
func TestHintFor(t *testing.T) {
	const resume = "pwrotate run --apply --out o --resume"
	tests := []struct {
		name   string
		err    error
		resume string
		want   string
	}{
		{"not empty", report.Kind(report.ErrNotEmpty, errors.New("output folder o is not empty")), resume, "to continue the run in it: " + resume},
		{"not empty without a resume", report.Kind(report.ErrNotEmpty, errors.New("x")), "", ""},
		{"busy, wrapped", fmt.Errorf("output folder: %w", report.ErrBusy), resume, "another pwrotate holds this --out folder"},
		{"made with its hint", withHint(errors.New("--out: an output folder is required with --apply"), hintOut), "", "add --out DIR"},
		{"a flag's value", flagError(errors.New("--rate -1: must be 0 (unlimited) or more")), "", "'pwrotate help run' lists the flags with their defaults"},
		{"a kind beats the flags hint", flagError(fmt.Errorf("--protect p: %w", fs.ErrNotExist)), "", "check the path"},
		{"unknown flag", parseError(errors.New("flag provided but not defined: -frob")), "", "'pwrotate help run' lists the flags"},
		{"input without userId", &input.Error{Name: "u.csv", Err: fmt.Errorf("%w (columns seen: id)", input.ErrNoUserIDColumn)}, "", "needs a header row with a userId column"},
		{"input, other", &input.Error{Name: "u.csv", Err: errors.New("field over 1 KiB")}, "", "check the file given to --input"},
		{"interrupted", &job.ExitError{Code: report.ExitInterrupted, Err: errors.New("stop")}, resume, "nothing is lost; to finish: " + resume},
		{"level", &job.ExitError{Code: report.ExitFatal, Err: report.Kind(job.ErrLevelTooLow, errors.New("low"))}, "", "NetworkAdmin or higher"},
		{"words of another error are not its kind", errors.New("user x: no API key, InvalidAPIKey, preflight, holds a run of"), "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := hintFor(tt.err, "run", tt.resume)
			if tt.want == "" && got != "" || !strings.Contains(got, tt.want) {
				t.Errorf("hintFor(%v) = %q, want %q", tt.err, got, tt.want)
			}
		})
	}
}
