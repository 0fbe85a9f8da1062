package job

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"pwrotate/job/input"
	"pwrotate/report"
	"pwrotate/report/deliver"
	"time"

	"golang.org/x/sync/errgroup"
)

// lastActivityIn returns when the run in out last showed signs of life:
// the latest mtime of run.json (the pool's heartbeat), results.csv,
// summary.json and the sealed files, or their ctime when later: anyone who
// can write the folder can set an mtime back (and so skip the wait), not
// a ctime.
func lastActivityIn(out *report.Folder) (time.Time, error) {
	var last time.Time
	entries, err := os.ReadDir(out.Path)
	if err != nil {
		return last, err
	}
	for _, e := range entries {
		name := e.Name()
		switch {
		case name == report.ManifestName, name == report.ResultsName, name == report.SummaryName:
		case report.IsSealedName(name):
		default:
			continue
		}
		fi, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return last, err
		}
		for _, t := range []time.Time{fi.ModTime(), changeTime(fi)} {
			if t.After(last) {
				last = t
			}
		}
	}
	return last, nil
}

// waitOutLateChanges waits, before a resumed run sends generation gen to
// users whose outcome an earlier run did not record, until twice --timeout
// (plus one heartbeat) has passed since that run's last activity: a change
// it sent may still be applied by a slow server, and must not land after,
// and overwrite, the new generation. An interruption ends the wait (ctx).
func (r *Runner) waitOutLateChanges(ctx context.Context, lastActivity time.Time, users, gen int) {
	timeout := r.cfg.Client.Timeout()
	until := lastActivity.Add(2*timeout + heartbeatEvery)
	wait := until.Sub(r.cfg.Now())
	if wait <= 0 {
		return
	}
	r.log.Warn("waiting before sending a new generation: an earlier run may have sent these users a change that a slow server could still apply, after and over the new password",
		"users", users, "generation", gen, "wait", wait.Round(time.Millisecond).String(),
		"earlierRunLastActive", lastActivity.UTC().Format(time.RFC3339Nano), "rule", "2 x --timeout "+timeout.String()+" + 1s heartbeat since its last activity")
	if err := r.cfg.Sleep(ctx, wait); err != nil {
		r.log.Warn("wait interrupted", "err", err)
	}
}

// resetOwedText is the error of a row whose change is recorded and whose
// session reset has not been done yet.
const resetOwedText = "password changed; session reset not done yet"

// resetOwed reports whether row is a change whose session reset did not
// happen (failed, interrupted, or the process stopped before it).
func resetOwed(row report.Row) bool {
	return row.Status == report.Updated && row.UserID > 0 && row.SessionsReset != "true"
}

// owedIn reports whether the results file at path holds a row (the last
// of its line) that owes what owes reports: a session reset (resetOwed),
// a delivery (deliveryOwed).
func owedIn(path string, owes func(report.Row) bool) (bool, error) {
	rows, err := report.ReadResults(path)
	if err != nil {
		return false, err
	}
	last := map[int]report.Row{}
	for _, row := range rows {
		last[row.Line] = row
	}
	for _, row := range last {
		if owes(row) {
			return true, nil
		}
	}
	return false, nil
}

// owedReset is an updated row whose session reset, or delivery, or both,
// a resumed run does, as one unit.
type owedReset struct {
	row            report.Row
	reset, deliver bool
}

// resetOwedSessions does the session resets that an earlier run owes
// (rows updated whose reset failed, was interrupted, or never ran), and
// records each as a new row of its line. A reset that is interrupted stays
// owed. It returns a fatal error (401/403, results not writable).
func (r *Runner) resetOwedSessions(ctx context.Context, owed []owedReset, res *report.ResultsFile, counts *runCounts) error {
	if len(owed) == 0 {
		return nil
	}
	r.log.Info("doing the session resets and deliveries an earlier run owes", "users", len(owed))
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var g errgroup.Group
	g.SetLimit(r.cfg.Workers)
	for i := range owed {
		if ctx.Err() != nil {
			break
		}
		g.Go(func() error {
			if ctx.Err() != nil {
				return nil
			}
			old := owed[i].row
			row := old
			row.Error = ""
			var dres deliver.Result
			if owed[i].deliver {
				dres = r.deliverOwed(ctx, row)
				if !dres.OK() && ctx.Err() != nil {
					return nil // interrupted: still owed
				}
			}
			if owed[i].reset {
				r.resetSessions(ctx, &row, cancel)
				if row.SessionsReset != "true" && ctx.Err() != nil {
					return nil // interrupted: still owed
				}
			}
			if owed[i].deliver {
				setDelivered(&row, dres)
				row.FinishedAt = r.cfg.Now().UTC()
			}
			if row.APIKeyRotated == "false" {
				row.Error = joinText(row.Error, keyOwedText)
			}
			if err := res.Append(row); err != nil {
				cancel(fmt.Errorf("recording results: %w", err))
				return nil
			}
			counts.replace(old, row)
			r.keys.replaceOwed(row)
			return nil
		})
	}
	_ = g.Wait()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// resumeChecks holds the run against what out already holds: run.json
// (its shard, input, protect files; what it promised: resets, keys), and
// summary.json (a dry run's folder; a run already complete). complete is
// true when there is nothing left to do: sum is then the earlier run's.
func (r *Runner) resumeChecks(out *report.Folder, in *input.Input, sum *report.Summary) (complete bool, err error) {
	m, ok, err := readManifest(out)
	if err != nil {
		return false, &ExitError{Code: report.ExitFatal, Err: err}
	}
	if ok && m.ResetSessions && !r.resets {
		r.log.Info("the run was started with --reset-sessions: resetting sessions as it promised", "out", out.Path)
		r.resets = true
	}
	if ok && m.RotateAPIKeys && !r.cfg.RotateAPIKeys {
		r.log.Info("the run was started with --rotate-api-keys: rotating API keys as it promised", "out", out.Path)
		r.cfg.RotateAPIKeys = true
	}
	if err := r.resumeDelivery(out, m, ok); err != nil {
		return false, err
	}
	if ok && m.Shard != sum.Shard {
		return false, fatal("output folder %s holds %s (%s); this run is %s: a folder is bound to the shard layout of its first run",
			out.Path, report.LayoutName(m.Shard), report.ManifestName, report.LayoutName(sum.Shard))
	}
	if ok && m.InputSHA256 != in.SHA256 {
		return false, fatalKind(ErrOtherRun, "--resume: %s holds a run of %s (sha256 %.12s…), not of this input %s (sha256 %.12s…): refusing to mix them",
			out.Path, m.Input, m.InputSHA256, in.Name, in.SHA256)
	}
	if ok && sum.Reason == "" {
		sum.Reason = m.Reason // a resume without --reason continues the same change
	}
	prev, perr := report.ReadSummary(out.SummaryPath())
	if perr == nil && prev.DryRun {
		return false, fatalKind(report.ErrDryRunFolder, "output folder %s holds a dry run's plan, not a run: choose another --out", out.Path)
	}
	if ok {
		owed := false
		if perr == nil && prev.Complete && r.resets && prev.ExitCode == report.ExitIncomplete {
			if owed, err = owedIn(out.ResultsPath(), resetOwed); err != nil {
				return false, fatal("results: %w", err)
			}
		}
		if perr == nil && prev.Complete && !owed && prev.ExitCode == report.ExitIncomplete && r.cfg.Deliver != nil {
			if owed, err = owedIn(out.ResultsPath(), deliveryOwed); err != nil {
				return false, fatal("results: %w", err)
			}
		}
		if perr == nil && prev.Complete && !owed && !r.keysOwedIn(out) {
			r.log.Info("run already complete: nothing to do", "out", out.Path, "exitCode", prev.ExitCode)
			*sum = prev
			// The rotation happened when the folder says, not now: a
			// re-run must not look like a fresh success to the alerts.
			if prev.ExitCode != report.ExitOK {
				return true, &ExitError{Code: prev.ExitCode, Err: fmt.Errorf("run in %s already complete with exit code %d", out.Path, prev.ExitCode)}
			}
			return true, nil
		}
		if err := r.checkSameMap(out, m); err != nil {
			return false, err
		}
		if m.ProtectSHA256 != r.cfg.Protect.Fingerprint() {
			return false, fatal("--resume: the run in %s was started with %s, this one has %s: refusing to change the protected accounts mid-run "+
				"(a user protected now may already have been sent a password); resume with the same --protect files",
				out.Path, describeProtect(m.ProtectEntries, m.ProtectSHA256), describeProtect(r.cfg.Protect.Len(), r.cfg.Protect.Fingerprint()))
		}
	}
	return false, nil
}

// checkSameMap refuses to resume a run with another recipients map than
// the one it started with (none counts as one): a user keeps the group its
// passwords were sealed for, new generations included.
func (r *Runner) checkSameMap(out *report.Folder, m Manifest) error {
	was, now := m.RecipientsMap, mapRecord(r.cfg.RecipientsMap)
	if was == nil && now == nil || was != nil && now != nil && was.SHA256 == now.SHA256 {
		return nil
	}
	return fatal("--resume: the run in %s was started with %s, this one has %s: refusing to change the groups mid-run "+
		"(each user keeps the group its passwords were sealed for); resume with the same --recipients-map files",
		out.Path, describeMap(was), describeMap(now))
}

// describeMap names a recipients map by its key and sha256.
func describeMap(m *MapRecord) string {
	if m == nil {
		return "no --recipients-map"
	}
	return fmt.Sprintf("a --recipients-map by %s (sha256 %.12s…)", m.Column, m.SHA256)
}

// mapRecord is what run.json records of a recipients map; nil for none.
func mapRecord(m *report.RecipientsMap) *MapRecord {
	if m == nil {
		return nil
	}
	return &MapRecord{Column: m.Column(), SHA256: m.SHA256, Groups: len(m.Groups()), Recipients: m.Rows, Files: m.Files}
}

// MapRecord is what run.json records of the --recipients-map a run
// started with.
type MapRecord struct {
	// Column is the input column the map is keyed by (networkId, mailboxId).
	Column string `json:"column"`
	// SHA256 is the map's (report.RecipientsMap.SHA256): a resume must
	// bring a map with the same.
	SHA256 string `json:"sha256"`
	// Groups and Recipients count the map's groups and recipient rows.
	Groups     int `json:"groups"`
	Recipients int `json:"recipients"`
	// Files are the map files as given.
	Files []string `json:"files"`
}

// recordManifest writes run.json before anything is sealed or sent: what
// binds the folder to this input, shard and protect files, and what the
// run promised (session resets, API keys), which a resume keeps.
func (r *Runner) recordManifest(out *report.Folder, p *plan, sum *report.Summary) error {
	cfg := r.cfg
	m, ok, err := readManifest(out)
	if err != nil {
		return &ExitError{Code: report.ExitFatal, Err: err}
	}
	if !ok || (r.resets && !m.ResetSessions) || (cfg.RotateAPIKeys && !m.RotateAPIKeys) {
		if !ok {
			m = Manifest{Version: cfg.Version, Input: p.in.Name, InputSHA256: p.in.SHA256, StartedAt: sum.StartedAt, Shard: sum.Shard,
				Selection: r.Selection(), Reason: cfg.Reason, ProtectEntries: cfg.Protect.Len(), ProtectSHA256: cfg.Protect.Fingerprint(),
				RecipientsMap: mapRecord(cfg.RecipientsMap)}
			if cfg.Deliver != nil {
				m.RunID, m.DeliverSHA256 = r.runID, cfg.Deliver.Map().SHA256()
			}
		}
		m.ResetSessions = r.resets
		m.RotateAPIKeys = cfg.RotateAPIKeys
		if err := out.WriteManifest(m); err != nil {
			return fatal("writing %s: %w", report.ManifestName, err)
		}
	}
	cfg.Hook("manifest", 1)
	return nil
}

// Manifest is run.json: what a resumed run must agree with.
type Manifest struct {
	Version     string    `json:"version"`
	Input       string    `json:"input"`
	InputSHA256 string    `json:"inputSha256"`
	StartedAt   time.Time `json:"startedAt"`
	Shard       string    `json:"shard,omitempty"`
	// Reason is the --reason of the run that started the folder.
	Reason string `json:"reason,omitempty"`
	// ProtectEntries and ProtectSHA256 name the --protect entries the run
	// started with (Protect.Fingerprint): a resume must bring the same.
	ProtectEntries int    `json:"protectEntries,omitempty"`
	ProtectSHA256  string `json:"protectSha256,omitempty"`
	// ResetSessions records that the run resets the sessions of every user
	// it changes: a resume owes those resets even without the flag.
	ResetSessions bool `json:"resetSessions,omitempty"`
	// RotateAPIKeys records that the run rotates the API key of every user
	// it changes: a resume owes those keys even without the flag.
	RotateAPIKeys bool `json:"rotateApiKeys,omitempty"`
	// Selection is set for a run --select: the filter, how many users
	// were listed, and the snapshot's path and sha256.
	Selection *Selection `json:"selection,omitempty"`
	// RecipientsMap is set for a run with --recipients-map: its key and
	// sha256, which a resume must bring again.
	RecipientsMap *MapRecord `json:"recipientsMap,omitempty"`
	// RunID names the run on the Kubernetes Secrets it writes (--deliver),
	// and salts its delivery escrow's passphrase.
	RunID string `json:"runId,omitempty"`
	// DeliverSHA256 is the sha256 of the --deliver files the run was
	// started with: a resume delivers what the run owes, with the same map.
	DeliverSHA256 string `json:"deliverSha256,omitempty"`
}

// readManifest returns out's run.json, or ok=false if there is none.
func readManifest(out *report.Folder) (m Manifest, ok bool, err error) {
	ok, err = out.ReadManifest(&m)
	return m, ok, err
}
