package job

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"pwrotate/report"
	"pwrotate/report/deliver"
	"pwrotate/rotate/secret"
)

// Delivery to Kubernetes Secrets (--deliver, report/deliver). Before any
// change, and in the dry run, a server-side dry-run patch of every Secret
// of the run's users must pass (deliverCheck); with --older-than, the users
// whose Secrets show a recent rotation are skipped. Each user's pending
// password of a generation is also sealed into the delivery escrow
// (report.SealEscrow) with the generation. In the pool, a user with targets
// is changed only while the Kubernetes API answers (WaitReady); once the
// change is confirmed it is recorded with delivered=false (owed), delivered,
// and recorded again with the outcome. A resumed run delivers every owed
// row from the escrow of its generation, with no second change at ECGrid.

// Texts of the results row's error cell.
const (
	deliverOwedText = "password changed; not delivered yet"
	deliverFailText = "password changed; not delivered: "
)

// Kill points (Config.Hook) of the delivery.
const (
	hookEscrowSealed = "escrow-sealed" // the escrow of the generation is durable, nothing sent
	hookDelivered    = "delivered"     // a user's delivery ended, its outcome not recorded
)

// delivery is a run's delivery state.
type delivery struct {
	c         *deliver.Client
	users     []int // the run's users with targets (this shard's, not skipped by --protect or self)
	targets   int   // their targets
	secrets   int   // the Secrets those are in
	ignored   int   // rows of users outside the run
	verdict   deliver.Verdict
	notDue    int // users skipped by --older-than
	due       int // users with targets found due
	olderThan string

	escrowMu sync.Mutex
	escrow   map[int]map[int]secret.Password // by generation, by user (a resume's owed deliveries)
}

// newRunID makes the ID a new run records on the Secrets: the output
// folder's name (the Job's, in Kubernetes) and 8 random hex digits.
func newRunID(out *report.Folder) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := "run"
	if out != nil {
		name = filepath.Base(out.Path)
		if strings.HasPrefix(name, "shard-") {
			name = filepath.Base(filepath.Dir(out.Path)) + "-" + name
		}
	}
	return name + "-" + hex.EncodeToString(b[:])
}

// deliverCheck runs the delivery preflight over the run's users and, with
// --older-than, marks the users not due as skipped. A refused target is
// kept for the plan (dry run) and refused (apply); an error means the
// Kubernetes API could not be asked.
func (r *Runner) deliverCheck(ctx context.Context, p *plan, out *report.Folder) error {
	c := r.cfg.Deliver
	if c == nil {
		return nil
	}
	if r.runID == "" {
		r.runID = newRunID(out)
	}
	c.SetRunID(r.runID)
	d := &delivery{c: c, olderThan: deliver.FormatAge(r.cfg.OlderThan)}
	r.dlv = d
	inRun := map[int]bool{}
	secrets := map[string]bool{}
	for i := range p.records {
		rec := &p.records[i]
		if rec.Invalid != "" || inRun[rec.UserID] {
			continue
		}
		inRun[rec.UserID] = true
		if _, skip := p.skip[int32(i)]; skip {
			continue
		}
		if ts := c.Map().Targets(rec.UserID); len(ts) > 0 {
			d.users = append(d.users, rec.UserID)
			d.targets += len(ts)
			for _, t := range ts {
				secrets[t.Namespace+"/"+t.Secret] = true
			}
		}
	}
	d.secrets = len(secrets)
	for _, u := range c.Map().Users() {
		if !inRun[u] {
			d.ignored += len(c.Map().Targets(u))
		}
	}
	r.log.Info("delivery preflight", "users", len(d.users), "targets", d.targets, "secrets", d.secrets,
		"ignoredRows", d.ignored, "cluster", c.Source(), "run", r.runID)
	v, err := c.Preflight(ctx, d.users)
	d.verdict = v
	if err != nil {
		return r.deliverErr(ctx, "--deliver preflight", err)
	}
	for _, rf := range v.Refusals {
		r.log.Error("delivery target refused", "target", rf.Target.String(), "file", rf.Target.File, "line", rf.Target.Line, "reason", rf.Reason)
	}
	if !v.OK() || r.cfg.OlderThan <= 0 {
		return nil
	}
	due, refusals, err := c.Due(ctx, d.users, r.cfg.OlderThan)
	if err != nil {
		return r.deliverErr(ctx, "--older-than: reading the rotation records", err)
	}
	if len(refusals) > 0 {
		for _, rf := range refusals {
			r.log.Error("delivery target unreadable", "target", rf.Target.String(), "file", rf.Target.File, "line", rf.Target.Line, "reason", rf.Reason)
		}
		d.verdict.Refusals = refusals
		return nil
	}
	for i := range p.records {
		rec := &p.records[i]
		if _, skip := p.skip[int32(i)]; rec.Invalid != "" || skip {
			continue
		}
		du, ok := due[rec.UserID]
		if !ok {
			continue // no target: always due
		}
		if du.Due {
			d.due++
			continue
		}
		if p.skip == nil {
			p.skip = map[int32]string{}
		}
		p.skip[int32(i)] = du.Reason
		d.notDue++
	}
	r.log.Info("--older-than", "olderThan", d.olderThan, "due", d.due, "notDue", d.notDue)
	return nil
}

// deliverErr is the error of a delivery check that could not ask the
// Kubernetes API: exit 3 when interrupted, else exit 1.
func (r *Runner) deliverErr(ctx context.Context, what string, err error) error {
	if ctx.Err() != nil {
		return &ExitError{Code: report.ExitInterrupted, Err: fmt.Errorf("%s: interrupted: %w", what, err)}
	}
	return fatalKind(ErrDeliverUnreachable, "%s: %w (nothing was changed)", what, err)
}

// refused is the exit 1 of a run whose delivery preflight refused a
// target: nothing was changed.
func (d *delivery) refused() error {
	if d == nil || d.verdict.OK() {
		return nil
	}
	const shown = 20
	var parts []string
	for i, rf := range d.verdict.Refusals {
		if i == shown {
			parts = append(parts, fmt.Sprintf("… and %d more (see the log)", len(d.verdict.Refusals)-shown))
			break
		}
		parts = append(parts, rf.String())
	}
	return fatalKind(ErrDeliverRefused, "--deliver: the Kubernetes API refuses %d of %d targets, nothing was changed: %s",
		len(d.verdict.Refusals), d.targets, strings.Join(parts, "; "))
}

// printDeliverPlan writes the delivery part of the plan: the targets, the
// preflight's verdict and --older-than's count.
func (r *Runner) printDeliverPlan(w io.Writer) {
	d := r.dlv
	if d == nil {
		return
	}
	ignored := ""
	if d.ignored > 0 {
		ignored = fmt.Sprintf("; %s of users outside the run ignored", plural(d.ignored, "row"))
	}
	fmt.Fprintf(w, "  deliver:   %s of %s in %s%s\n", plural(d.targets, "target"), plural(len(d.users), "user"), plural(d.secrets, "Secret"), ignored)
	fmt.Fprintf(w, "  cluster:   %s, run %s\n", d.c.Source(), r.runID)
	shown := 0
targets:
	for _, u := range d.users {
		for _, t := range d.c.Map().Targets(u) {
			if shown == 10 {
				fmt.Fprintf(w, "    … and %d more\n", d.targets-shown)
				break targets
			}
			fmt.Fprintf(w, "    user %d → %s\n", u, t)
			shown++
		}
	}
	fmt.Fprintf(w, "  preflight: %s\n", d.verdict)
	for i, rf := range d.verdict.Refusals {
		if i == 50 {
			fmt.Fprintf(w, "    … and %d more (see the log)\n", len(d.verdict.Refusals)-i)
			break
		}
		fmt.Fprintf(w, "    %s\n", rf)
	}
	if r.cfg.OlderThan > 0 && d.verdict.OK() {
		fmt.Fprintf(w, "  older than %s: %d of the users with targets due, %d not due (skipped)\n", d.olderThan, d.due, d.notDue)
	}
}

// resumeDelivery holds a resumed run to the delivery its first run
// started with: its run ID, and the same --deliver files.
func (r *Runner) resumeDelivery(out *report.Folder, m Manifest, ok bool) error {
	if !ok {
		return nil
	}
	c := r.cfg.Deliver
	switch {
	case m.DeliverSHA256 != "" && c == nil:
		return fatal("--resume: the run in %s was started with --deliver: resume it with the same --deliver files (and access to the cluster), or the passwords it owes its Secrets stay undelivered", out.Path)
	case m.DeliverSHA256 == "" && c != nil:
		return fatal("--resume: the run in %s was started without --deliver: finish it without, and deliver in a new run", out.Path)
	case c != nil && m.DeliverSHA256 != c.Map().SHA256():
		return fatal("--resume: the run in %s was started with other --deliver files (sha256 %.12s…, now %.12s…): resume it with the same files", out.Path, m.DeliverSHA256, c.Map().SHA256())
	}
	r.runID = m.RunID
	return nil
}

// deliveryOwed reports whether row is a change whose delivery did not
// happen (failed, interrupted, or the process stopped before it).
func deliveryOwed(row report.Row) bool {
	return row.Status == report.Updated && row.UserID > 0 && row.Delivered == "false"
}

// hasTargets reports whether userID's password is delivered.
func (r *Runner) hasTargets(userID int) bool {
	return r.cfg.Deliver != nil && len(r.cfg.Deliver.Map().Targets(userID)) > 0
}

// escrowPassphrase is the passphrase of this run's delivery escrow.
func (r *Runner) escrowPassphrase() (secret.Password, error) {
	if len(r.cfg.EscrowSecret) == 0 || r.runID == "" {
		return "", errors.New("no escrow secret: --deliver needs the API key")
	}
	return report.EscrowPassphrase(r.cfg.EscrowSecret, r.runID), nil
}

// sealEscrow seals the pending passwords of generation gen whose users have
// targets into the delivery escrow, before anything is sent.
func (r *Runner) sealEscrow(out *report.Folder, p *plan, gen int) error {
	if r.cfg.Deliver == nil {
		return nil
	}
	n := 0
	for i := range p.pending {
		if r.hasTargets(int(p.todo[i].userID)) {
			n++
		}
	}
	if n == 0 {
		return nil
	}
	pass, err := r.escrowPassphrase()
	if err != nil {
		return fatal("sealing the delivery escrow: %w", err)
	}
	path, err := report.SealEscrow(out.Path, gen, pass, func(yield func(int, secret.Password) bool) {
		for i := range p.pending {
			u := int(p.todo[i].userID)
			if r.hasTargets(u) && !yield(u, p.pw.at(i)) {
				return
			}
		}
	})
	if err != nil {
		return fatal("sealing generation %d: %w", gen, err)
	}
	r.log.Info("delivery escrow sealed", "file", path, "generation", gen, "passwords", n)
	r.cfg.Hook(hookEscrowSealed, 1)
	return nil
}

// escrowed returns the password of userID in generation gen from the
// delivery escrow of out (a resume's owed delivery).
func (r *Runner) escrowed(out string, gen, userID int) (secret.Password, error) {
	d := r.dlv
	d.escrowMu.Lock()
	defer d.escrowMu.Unlock()
	if d.escrow == nil {
		d.escrow = map[int]map[int]secret.Password{}
	}
	pws, ok := d.escrow[gen]
	if !ok {
		pass, err := r.escrowPassphrase()
		if err != nil {
			return "", err
		}
		if pws, err = report.OpenEscrow(out, gen, pass); err != nil {
			return "", err
		}
		d.escrow[gen] = pws
	}
	pw, ok := pws[userID]
	if !ok {
		return "", fmt.Errorf("user %d is not in the delivery escrow of generation %d", userID, gen)
	}
	return pw, nil
}

// deliverOwed delivers the password of an owed row, read from the
// delivery escrow of its generation: no second change at ECGrid.
func (r *Runner) deliverOwed(ctx context.Context, row report.Row) deliver.Result {
	pw, err := r.escrowed(r.outDir, row.Generation, row.UserID)
	if err != nil {
		r.log.Error("owed delivery: the password cannot be read from the delivery escrow; deliver it by hand from the sealed file (pwrotate open)",
			"line", row.Line, "user", row.UserID, "generation", row.Generation, "err", err)
		return deliver.Result{Targets: len(r.cfg.Deliver.Map().Targets(row.UserID)), Err: err}
	}
	return r.cfg.Deliver.Deliver(ctx, row.UserID, pw)
}

// setDelivered records the outcome of a delivery in row: delivered, and
// the reasons of every target that does not hold the password.
func setDelivered(row *report.Row, res deliver.Result) {
	row.Delivered = strconv.FormatBool(res.OK())
	if !res.OK() {
		why := "no answer"
		if res.Err != nil {
			var parts []string
			for _, e := range unwrapAll(res.Err) {
				var te *deliver.TargetError
				if errors.As(e, &te) {
					parts = append(parts, te.Error())
				}
			}
			why = strings.Join(parts, ", ")
			if len(parts) == 0 {
				why = res.Err.Error()
			}
		}
		row.Error = joinText(row.Error, deliverFailText+why)
	}
}

func unwrapAll(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// removeEscrow removes the delivery escrow files of a run whose every
// password is delivered: nothing is owed any more.
func (r *Runner) removeEscrow(out *report.Folder) {
	entries, err := os.ReadDir(out.Path)
	if err != nil {
		return
	}
	removed := false
	for _, e := range entries {
		if report.IsEscrowName(e.Name()) {
			if err := os.Remove(out.File(e.Name())); err != nil {
				r.log.Warn("removing the delivery escrow", "file", e.Name(), "err", err)
				continue
			}
			removed = true
		}
	}
	if removed {
		_ = report.SyncDir(out.Path)
	}
}
