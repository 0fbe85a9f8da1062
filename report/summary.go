package report

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"time"
)

// SummaryName is the file name of the summary in an output folder.
const SummaryName = "summary.json"

// Summary is summary.json: what a run did, written at the end of every run,
// interrupted or not.
type Summary struct {
	// Version is the pwrotate version that ran.
	Version string `json:"version"`
	// StartedAt is when the run started.
	StartedAt time.Time `json:"startedAt"`
	// FinishedAt is when the run ended.
	FinishedAt time.Time `json:"finishedAt"`
	// Input is the input path as given ("-" for stdin).
	Input string `json:"input"`
	// InputSHA256 is the hex sha256 of the input bytes.
	InputSHA256 string `json:"inputSha256"`
	// DryRun is set when nothing was changed (no --apply).
	DryRun bool `json:"dryRun"`
	// Records counts the input records.
	Records int `json:"records"`
	// Counts counts records by status, plus "pending" for records without
	// an outcome.
	Counts map[string]int `json:"counts"`
	// Generation is the last sealed generation of the run.
	Generation int `json:"generation"`
	// APICalls counts every HTTP request made.
	APICalls int `json:"apiCalls"`
	// Retries counts the requests that were retries.
	Retries int `json:"retries"`
	// AchievedRate is API calls per second during the apply phase.
	AchievedRate float64 `json:"achievedRate"`
	// ExitCode is the process exit code.
	ExitCode int `json:"exitCode"`
	// Interrupted is set when a signal stopped the run.
	Interrupted bool `json:"interrupted"`
	// Complete is set when every record has an outcome.
	Complete bool `json:"complete"`
	// Shard is "K/N" for a sharded run.
	Shard string `json:"shard,omitempty"`
	// Outputs lists the files the run wrote.
	Outputs []string `json:"outputs"`
}

// WriteSummary writes s to path as indented JSON, atomically, mode 0600.
// Nil maps and slices are written as {} and [], and a rate that is not a
// finite number as 0.
func WriteSummary(path string, s Summary) error {
	return Files{}.WriteSummary(path, s)
}

// WriteSummary is the package-level WriteSummary, calling f.Hook.
func (f Files) WriteSummary(path string, s Summary) error {
	if s.Counts == nil {
		s.Counts = map[string]int{}
	}
	if s.Outputs == nil {
		s.Outputs = []string{}
	}
	if math.IsNaN(s.AchievedRate) || math.IsInf(s.AchievedRate, 0) {
		s.AchievedRate = 0
	}
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("writing summary: %w", err)
	}
	data = append(data, '\n')
	return f.WriteFileAtomic(path, data, 0o600)
}

// ReadSummary reads a summary written by WriteSummary.
func ReadSummary(path string) (Summary, error) {
	var s Summary
	data, err := os.ReadFile(path)
	if err != nil {
		return s, fmt.Errorf("reading summary: %w", err)
	}
	if err := json.Unmarshal(data, &s); err != nil {
		return Summary{}, fmt.Errorf("reading %s: %w", path, err)
	}
	return s, nil
}
