package job

import (
	"fmt"
	"pwrotate/job/input"
	"pwrotate/report"
	"pwrotate/rotate"
	"pwrotate/rotate/secret"
)

func (r *Runner) dryRun(p *plan, out *report.Folder, sum *report.Summary) error {
	for i := range p.records {
		if _, skip := p.skip[int32(i)]; p.records[i].Invalid == "" && !skip {
			p.pending = append(p.pending, int32(i))
		}
	}
	byPrivilege(p)
	// Every password is made and checked, none kept.
	err := r.passwords(p, func(i int, pw secret.Password, _ bool) error {
		if err := rotate.CheckPolicy(pw.Reveal()); err != nil {
			rec := p.records[p.pending[i]]
			return fatal("line %d: the password for user %d breaks the rule: %w", rec.Line, rec.UserID, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	r.printPlan(p, "dry run: nothing will be changed (pass --apply to carry it out)")
	if err := r.dlv.refused(); err != nil {
		return err
	}
	r.log.Info("plan", "dryRun", true, "records", len(p.records), "valid", p.valid, "invalid", len(p.records)-p.valid,
		"skipped", len(p.skip))
	invalid := len(p.records) - p.valid
	sum.Counts[string(report.Planned)] = p.valid - len(p.skip)
	sum.Counts[string(report.Invalid)] = invalid
	sum.Counts[string(report.Skipped)] = len(p.skip)
	if r.cfg.Counter != nil {
		sum.APICalls = int(r.cfg.Counter.Calls())
		sum.Retries = int(r.cfg.Counter.Retries())
	}
	code := report.ExitOK
	if invalid > 0 {
		code = report.ExitIncomplete
	}
	sum.ExitCode = code
	sum.Complete = true
	if out != nil {
		rows := make([]report.Row, 0, len(p.records))
		for i, rec := range p.records {
			row := r.baseRow(rec, report.Planned, p.skip[int32(i)])
			if row.Status == report.Planned {
				row.SealedFor = r.groupOf(p, i).String()
			}
			rows = append(rows, row)
		}
		res, _, err := r.files.OpenResults(out.ResultsPath())
		if err != nil {
			return fatal("results: %w", err)
		}
		if err := res.Append(rows...); err != nil {
			res.Close()
			return fatal("results: %w", err)
		}
		if err := res.Close(); err != nil {
			return fatal("results: %w", err)
		}
		sum.Outputs = []string{out.ResultsPath(), out.SummaryPath()}
		sum.FinishedAt = r.cfg.Now().UTC()
		if err := r.files.WriteSummary(out.SummaryPath(), *sum); err != nil {
			return fatal("summary: %w", err)
		}
	}
	if code != report.ExitOK {
		return &ExitError{Code: code, Err: fmt.Errorf("%d invalid records", invalid)}
	}
	return nil
}

// baseRow is the results row of a record before any call: invalid,
// skipped (skip is the reason), or status st.
func (r *Runner) baseRow(rec input.Record, st report.Status, skip string) report.Row {
	row := report.Row{Line: rec.Line, UserID: rec.UserID, Status: st}
	if rec.UserID == 0 {
		row.RawUserID = rec.RawUserID
	}
	if rec.Invalid != "" || skip != "" {
		row.Status, row.Error = report.Invalid, rec.Invalid
		if rec.Invalid == "" {
			row.Status, row.Error = report.Skipped, skip
		}
		row.FinishedAt = r.cfg.Now().UTC()
		return row
	}
	row.PasswordSource = "generated"
	if !rec.Password.Empty() {
		row.PasswordSource = "input"
	}
	return row
}
