package job

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"pwrotate/job/input"
	"pwrotate/report"
	"pwrotate/report/directory"
	"pwrotate/rotate"
)

// Selection is what a run --select listed. run.json records it (member
// "selection"), and Runner.Selection returns it for summary.json.
type Selection struct {
	// Filter is the filter sent to POST /v2/users/list (no status: any).
	Filter rotate.UserFilter `json:"filter"`
	// Spec is the filter as --select takes it, e.g.
	// "network=1,status=Active".
	Spec string `json:"spec"`
	// Listed is how many users the listing held (the snapshot's records).
	Listed int `json:"listed"`
	// Dropped is how many listed users the server answered although their
	// fields contradict the filter: left out of the snapshot, never changed.
	Dropped int `json:"dropped"`
	// Snapshot is the path of OUT/input.csv; "" in a dry run without --out.
	Snapshot string `json:"snapshot,omitempty"`
	// SnapshotSHA256 is the hex sha256 of the snapshot's bytes (the same
	// as the run's inputSha256).
	SnapshotSHA256 string `json:"snapshotSha256"`
}

// ParseSelect reads a --select value, "[network=N][,mailbox=M]
// [,auth-level=L][,status=S|any]": keys once each, status Active unless
// given. Without network= the listing holds every network the key can see
// (a NetOps key resetting several networks in one run). Names are matched
// case-insensitively and returned in their ECGrid spelling.
func ParseSelect(spec string) (rotate.UserFilter, error) {
	f := rotate.UserFilter{Status: rotate.DefaultStatus}
	seen := map[string]bool{}
	for _, part := range strings.Split(spec, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		key, val, ok := strings.Cut(part, "=")
		key, val = strings.ToLower(strings.TrimSpace(key)), strings.TrimSpace(val)
		if !ok || val == "" {
			return f, fmt.Errorf("--select %q: %q is not key=value", spec, part)
		}
		if seen[key] {
			return f, fmt.Errorf("--select %q: %s given twice", spec, key)
		}
		seen[key] = true
		var err error
		switch key {
		case "network", "mailbox":
			n, perr := strconv.Atoi(val)
			if perr != nil || n < 1 {
				return f, fmt.Errorf("--select %q: %s=%s: want an ID from 1", spec, key, val)
			}
			if key == "network" {
				f.NetworkID = n
			} else {
				f.MailboxID = n
			}
		case "auth-level", "authlevel":
			f.AuthLevel, err = rotate.ParseLevelName(val)
		case "status":
			f.Status, err = rotate.ParseStatus(val)
		default:
			return f, fmt.Errorf("--select %q: unknown key %q (want network, mailbox, auth-level, status)", spec, key)
		}
		if err != nil {
			return f, fmt.Errorf("--select %q: %w", spec, err)
		}
	}
	return f, f.Check()
}

// Selection returns what the run's --select listed (or read back from the
// snapshot), or nil for a run of an input file or before the input is
// known.
func (r *Runner) Selection() *Selection {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sel == nil {
		return nil
	}
	s := *r.sel
	return &s
}

func (r *Runner) setSelection(s *Selection) {
	r.mu.Lock()
	r.sel = s
	r.mu.Unlock()
}

// input reads the run's input: the input file, or for --select the
// snapshot of an earlier listing in the output folder, else a new listing
// (snapshotted there before anything else happens).
func (r *Runner) input(ctx context.Context, out *report.Folder) (*input.Input, error) {
	if r.cfg.Select == nil {
		return r.readInputCtx(ctx)
	}
	cfg := r.cfg
	f := *cfg.Select
	sel := &Selection{Filter: f, Spec: f.String()}
	if out != nil {
		sel.Snapshot = out.SnapshotPath()
		m, hasRun, err := readManifest(out)
		if err != nil {
			return nil, &ExitError{Code: report.ExitFatal, Err: err}
		}
		if hasRun && m.Selection == nil {
			return nil, fatalKind(ErrOtherRun, "--select: %s holds a run of the input %s, not of a --select listing: refusing to mix them", out.Path, m.Input)
		}
		if hasRun && m.Selection.Spec != sel.Spec {
			return nil, fatalKind(ErrOtherRun, "--resume: %s holds a run of --select %s, not of --select %s: refusing to mix them", out.Path, m.Selection.Spec, sel.Spec)
		}
		// A resumed run keeps its target set: never list again. Only a
		// snapshot that run.json vouches for (its sha256, checked against
		// the manifest's by the caller) is a listing: without run.json
		// nothing was sent, and an input.csv there (a killed first run's,
		// or one planted in the folder) is listed over.
		if hasRun {
			in, err := input.ReadFileOptions(sel.Snapshot, nil, r.inputOptions())
			if err != nil {
				return nil, fatal("--select: the snapshot of the listing: %w", err)
			}
			sel.Listed, sel.SnapshotSHA256 = len(in.Records), in.SHA256
			if hasRun {
				sel.Dropped = m.Selection.Dropped
			}
			r.setSelection(sel)
			r.log.Info("--select: reading the snapshot of the earlier listing; not listing again", "snapshot", sel.Snapshot, "users", sel.Listed)
			return in, nil
		}
	}
	if cfg.Client == nil {
		return nil, fatalKind(ErrNoAPIKey, "--select lists users through the API: set ECGRID_API_KEY or pass --api-key-file")
	}
	r.log.Info("--select: listing users", "filter", sel.Spec)
	users, err := cfg.Client.ListUsers(ctx, f, rotate.ListOptions{OnPage: cfg.ListProgress,
		OnDrop: func(rotate.User, string) { sel.Dropped++ }})
	if err != nil {
		if ctx.Err() != nil || errors.Is(err, context.Canceled) {
			return nil, &ExitError{Code: report.ExitInterrupted, Err: fmt.Errorf("interrupted while listing users: %w", err)}
		}
		return nil, fatal("--select %s: listing users: %w", sel.Spec, err)
	}
	var buf bytes.Buffer
	if err := directory.Write(&buf, directory.Users(users)); err != nil {
		return nil, fatal("--select: %w", err)
	}
	name := "ECGrid users " + sel.Spec
	if out != nil {
		if err := report.WriteFileAtomic(sel.Snapshot, buf.Bytes(), 0o600); err != nil {
			return nil, fatal("--select: snapshot: %w", err)
		}
		name = sel.Snapshot
		cfg.Hook("snapshot", 1)
	}
	in, err := input.ReadOptions(bytes.NewReader(buf.Bytes()), name, r.inputOptions())
	if err != nil {
		return nil, fatal("--select %s: %w", sel.Spec, err)
	}
	sel.Listed, sel.SnapshotSHA256 = len(users), in.SHA256
	r.setSelection(sel)
	r.log.Info("--select: listed", "filter", sel.Spec, "users", sel.Listed, "dropped", sel.Dropped, "snapshot", sel.Snapshot)
	return in, nil
}
