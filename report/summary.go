package report

import (
	"encoding/json"
	"fmt"
	"math"
	"time"
)

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
	// Reason is the --reason given (an incident or change ticket); "" for none.
	Reason string `json:"reason"`
	// Selection describes the --select listing the input came from; nil
	// when the input was a file.
	Selection *Selection `json:"selection,omitempty"`
	// Shard is "K/N" for a sharded run.
	Shard string `json:"shard,omitempty"`
	// Outputs lists the files the run wrote.
	Outputs []string `json:"outputs"`
	// APIKeys counts the API key rotation (--rotate-api-keys); absent
	// without it.
	APIKeys *APIKeyStats `json:"apiKeys,omitempty"`
	// Delivery counts the delivery of passwords to Kubernetes Secrets
	// (--deliver); absent without it.
	Delivery *DeliveryStats `json:"delivery,omitempty"`
}

// DeliveryStats counts the delivery of a run's passwords to Kubernetes
// Secrets (--deliver).
type DeliveryStats struct {
	// Targets counts the rows of the --deliver files that name a user of
	// the run (this shard's); Ignored the rows of users outside it.
	Targets int `json:"targets"`
	Ignored int `json:"ignored"`
	// Delivered counts the updated users whose every target holds the
	// password of their recorded generation (results rows with
	// delivered=true), this run and earlier runs into the folder.
	Delivered int `json:"delivered"`
	// NotDelivered counts the updated users with targets whose password is
	// not in every one (delivered=false: failed, or still owed): each
	// makes the exit code 2 until a --resume delivers it.
	NotDelivered int `json:"notDelivered"`
	// NotDue counts the users skipped by --older-than.
	NotDue int `json:"notDue"`
}

// APIKeyStats counts the API key rotation of a run.
type APIKeyStats struct {
	// Rotated counts the users whose new key is sealed (results rows with
	// apiKeyRotated=true), this run and earlier runs into the folder.
	Rotated int `json:"rotated"`
	// NotRotated counts the updated users whose key was not rotated
	// (apiKeyRotated=false: failed, or still owed).
	NotRotated int `json:"notRotated"`
	// RotatedNow counts the keys this run rotated and sealed.
	RotatedNow int `json:"rotatedNow"`
	// Generated counts the key-generate requests this run sent.
	Generated int `json:"generateRequests"`
	// ReadBacks counts the keys read back to settle an unknown outcome.
	ReadBacks int `json:"readBacks"`
	// GeneratesAvoided counts the read-backs that found the key replaced
	// by the one an unreadable key-generate answer held: each a second
	// generation avoided. (A key read back that differs from the one
	// logged, after a lost answer, is sealed as a candidate and a key
	// generated once more: it may be someone else's.)
	GeneratesAvoided int `json:"generatesAvoided"`
}

// Selection is how a run's users were chosen from ECGrid (run --select).
type Selection struct {
	// Filter is the --select filter as given, e.g. "network=1,status=Active".
	Filter string `json:"filter"`
	// Listed counts the users the listing returned.
	Listed int `json:"listed"`
	// Dropped counts the users the server listed outside the filter,
	// dropped from the listing (never changed).
	Dropped int `json:"dropped"`
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
	data, err := ReadFile(path)
	if err != nil {
		return s, fmt.Errorf("reading summary: %w", err)
	}
	if err := json.Unmarshal(data, &s); err != nil {
		return Summary{}, fmt.Errorf("reading %s: %w", path, err)
	}
	return s, nil
}
