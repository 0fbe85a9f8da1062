package job

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"pwrotate/job/input"
	"pwrotate/report"
	"pwrotate/rotate"
	"slices"
	"strconv"
	"strings"
)

// plan is the run's state in memory: the records of this shard, which of
// them already have an outcome, and the passwords of those still to do.
type plan struct {
	in       *input.Input
	records  []input.Record // this shard's records, in input order
	orig     []int32        // when sharded: the index in in.Records of each of records
	caller   *rotate.Caller
	valid    int              // records not invalid (skipped ones included)
	skip     map[int32]string // by index into records: why a valid record is skipped
	recorded []bool           // by index into records
	pending  []int32
	pw       pwArena // parallel to pending
	source   []bool  // parallel to pending: true if from input
	todo     []todo  // parallel to pending: what the pool needs of each record
}

// todo is what the pool needs of a pending record: the full records are
// dropped before the updates start (a plan can be millions long).
type todo struct {
	line, userID int32
}

// readInputCtx reads the input, giving up when ctx is done: a FIFO with no
// writer or a stdin that never ends must not make a signal wait. (The
// reading goroutine is left blocked; the process is about to exit.)
func (r *Runner) readInputCtx(ctx context.Context) (*input.Input, error) {
	type result struct {
		in  *input.Input
		err error
	}
	ch := make(chan result, 1)
	go func() {
		in, err := r.readInput()
		ch <- result{in, err}
	}()
	select {
	case res := <-ch:
		if res.err != nil {
			return nil, &ExitError{Code: report.ExitFatal, Err: res.err}
		}
		return res.in, nil
	case <-ctx.Done():
		return nil, &ExitError{Code: report.ExitInterrupted, Err: errors.New("interrupted while reading the input")}
	}
}

// keepLogins reports whether the input's logins must be kept: only login
// globs need them.
func (r *Runner) keepLogins() bool {
	_, _, ok := r.cfg.Protect.FirstGlob()
	return ok
}

func (r *Runner) readInput() (*input.Input, error) {
	keep := r.keepLogins()
	if r.cfg.InputData != nil {
		name := r.cfg.InputName
		if name == "" {
			name = "input"
		}
		return input.ReadWith(bytes.NewReader(r.cfg.InputData), name, keep)
	}
	if r.cfg.InputPath == "" {
		return nil, errors.New("--input: a users CSV is required")
	}
	stdin := r.cfg.Stdin
	if stdin == nil {
		stdin = os.Stdin
	}
	return input.ReadFileWith(r.cfg.InputPath, stdin, keep)
}

// ShardOf returns the shard (0..shards-1) that userID belongs to.
func ShardOf(userID, shards int) int {
	h := fnv.New32a()
	var b [8]byte
	h.Write(strconv.AppendInt(b[:0], int64(userID), 10))
	return int(h.Sum32() % uint32(shards))
}

// shardRecords keeps the records of this shard, and when sharded the
// index of each in all. Records without a usable userId belong to shard 0,
// so that each is reported exactly once.
func (r *Runner) shardRecords(all []input.Record) (kept []input.Record, orig []int32) {
	if r.cfg.Shards <= 1 {
		return all, nil
	}
	for i, rec := range all {
		s := 0
		if rec.UserID != 0 {
			s = ShardOf(rec.UserID, r.cfg.Shards)
		}
		if s == r.cfg.Shard {
			kept = append(kept, rec)
			orig = append(orig, int32(i))
		}
	}
	return kept, orig
}

// src returns the index in p.in.Records of record i of the plan.
func (p *plan) src(i int) int {
	if p.orig == nil {
		return i
	}
	return int(p.orig[i])
}

// preflight asks who the key belongs to and checks its AuthLevel.
func (r *Runner) preflight(ctx context.Context, p *plan) error {
	cfg := r.cfg
	if cfg.Client == nil {
		if cfg.Apply {
			return fatalKind(ErrNoAPIKey, "no API key: set ECGRID_API_KEY or pass --api-key-file")
		}
		return nil
	}
	caller, o := cfg.Client.Me(ctx)
	if !o.OK {
		if o.Interrupted {
			return &ExitError{Code: report.ExitInterrupted, Err: fmt.Errorf("preflight: %w", o.Err)}
		}
		kind := ErrPreflight
		if o.ErrorCode == "InvalidAPIKey" {
			kind = ErrKeyRefused
		}
		return fatalKind(kind, "preflight GET /v2/users/me: %w", o.Err)
	}
	r.log.Info("preflight", "caller", caller.UserID, "authLevel", caller.LevelName)
	if caller.Level < rotate.LevelNetworkAdmin {
		return fatalKind(ErrLevelTooLow, "preflight: the API key belongs to user %d with AuthLevel %q; changing passwords needs NetworkAdmin or higher",
			caller.UserID, caller.LevelName)
	}
	p.caller = &caller
	return nil
}

// selfReason is why the caller's own record is skipped.
const selfReason = "the caller's own account (pass --include-self to rotate it)"

// skipReason returns why a valid record is deliberately left alone, or "":
// it is protected by --protect, or it is the caller's own account (unless
// --include-self).
func (r *Runner) skipReason(rec *input.Record, login string, caller *rotate.Caller) string {
	if why := r.cfg.Protect.Match(rec.UserID, login); why != "" {
		return why
	}
	if caller != nil && !r.cfg.IncludeSelf && rec.UserID == caller.UserID {
		return selfReason
	}
	return ""
}

// byPrivilege orders the pending users most privileged first (Root first,
// unknown levels last), input order within a level. Only an input with an
// authLevel column is reordered.
func byPrivilege(p *plan) {
	if !p.in.HasAuthLevel {
		return
	}
	slices.SortStableFunc(p.pending, func(a, b int32) int {
		return cmp.Compare(p.in.Level(p.src(int(b))), p.in.Level(p.src(int(a))))
	})
}

// describeProtect names a protect list by its size and fingerprint.
func describeProtect(n int, sha string) string {
	if sha == "" {
		return "no --protect entry"
	}
	return fmt.Sprintf("%s (sha256 %.12s…)", plural(n, "--protect entry"), sha)
}

func (r *Runner) printPlan(p *plan, mode string) {
	w := r.cfg.Stdout
	if w == nil {
		return
	}
	fromInput := 0
	for i := range p.records {
		if _, skip := p.skip[int32(i)]; p.records[i].Invalid == "" && !skip && !p.records[i].Password.Empty() {
			fromInput++
		}
	}
	invalid := len(p.records) - p.valid
	change := p.valid - len(p.skip)
	fmt.Fprintf(w, "pwrotate plan — %s\n", mode)
	if r.cfg.Reason != "" {
		fmt.Fprintf(w, "  reason:    %s\n", r.cfg.Reason)
	}
	fmt.Fprintf(w, "  input:     %s, %d records (sha256 %.16s…)\n", p.in.Name, len(p.records), p.in.SHA256)
	if sel := r.Selection(); sel != nil {
		where := "not kept (pass --out to keep it for review)"
		if sel.Snapshot != "" {
			where = "snapshot " + sel.Snapshot
		}
		dropped := ""
		if sel.Dropped > 0 {
			dropped = fmt.Sprintf(" (%s outside the filter dropped)", plural(sel.Dropped, "user"))
		}
		fmt.Fprintf(w, "  selection: %s from POST %s/v2/users/list, %s listed%s, %s\n", sel.Spec, r.cfg.Endpoint, plural(sel.Listed, "user"), dropped, where)
	}
	fmt.Fprintf(w, "  to change: %s (%d generated, %d from the input)\n", plural(change, "user"), change-fromInput, fromInput)
	if p.in.HasAuthLevel {
		fmt.Fprintf(w, "  order:     most privileged first (%s)\n", levelCounts(p))
	}
	if len(p.skip) > 0 || !r.cfg.Protect.Empty() {
		// With --protect, "skipped: 0" says that it matched nobody.
		fmt.Fprintf(w, "  skipped:   %d\n", len(p.skip))
	}
	if len(p.skip) > 0 {
		shown := 0
		for i, rec := range p.records {
			why, ok := p.skip[int32(i)]
			if !ok {
				continue
			}
			if shown == 10 {
				fmt.Fprintf(w, "    … and %d more (see %s)\n", len(p.skip)-shown, report.ResultsName)
				break
			}
			fmt.Fprintf(w, "    line %d: user %d: %s\n", rec.Line, rec.UserID, why)
			shown++
		}
	}
	fmt.Fprintf(w, "  invalid:   %d\n", invalid)
	shown := 0
	for _, rec := range p.records {
		if rec.Invalid == "" {
			continue
		}
		if shown == 10 {
			fmt.Fprintf(w, "    … and %d more (see %s)\n", invalid-shown, report.ResultsName)
			break
		}
		fmt.Fprintf(w, "    line %d: %s\n", rec.Line, rec.Invalid)
		shown++
	}
	fmt.Fprintf(w, "  endpoint:  POST %s/v2/users/password\n", r.cfg.Endpoint)
	if p.caller != nil {
		fmt.Fprintf(w, "  caller:    user %d, AuthLevel %s\n", p.caller.UserID, p.caller.LevelName)
	} else {
		fmt.Fprintf(w, "  caller:    not checked (no API key given)\n")
	}
	if r.cfg.ResetSessions {
		fmt.Fprintf(w, "  sessions:  reset after each change\n")
	}
	r.printDeliverPlan(w)
	r.printKeyPlan(p)
}

// levelCounts says how many users to change there are at each AuthLevel,
// most privileged first: "Root 2, NetworkAdmin 5, unknown 1".
func levelCounts(p *plan) string {
	var n [rotate.LevelRoot + 1]int
	for i := range p.records {
		if _, skip := p.skip[int32(i)]; p.records[i].Invalid == "" && !skip {
			n[p.in.Level(p.src(i))]++
		}
	}
	var parts []string
	for l := rotate.LevelRoot; l >= rotate.LevelUnknown; l-- {
		if n[l] == 0 {
			continue
		}
		name := l.String()
		if l == rotate.LevelUnknown {
			name = "unknown"
		}
		parts = append(parts, name+" "+strconv.Itoa(n[l]))
	}
	if len(parts) == 0 {
		return "nobody"
	}
	return strings.Join(parts, ", ")
}

// validUsers returns the indices of the valid records of p.
func validUsers(p *plan) []int32 {
	var v []int32
	for i := range p.records {
		if p.records[i].Invalid == "" {
			v = append(v, int32(i))
		}
	}
	return v
}

// markSkips counts the valid records and marks those the run leaves alone
// on purpose (the caller, protected accounts).
func (r *Runner) markSkips(p *plan) {
	for i := range p.records {
		if p.records[i].Invalid != "" {
			continue
		}
		p.valid++
		if why := r.skipReason(&p.records[i], p.in.Login(p.src(i)), p.caller); why != "" {
			if p.skip == nil {
				p.skip = map[int32]string{}
			}
			p.skip[int32(i)] = why
		}
	}
}

// checkMaxUsers refuses a plan larger than --max-users: the cap is on the
// whole plan, every shard's users together, and on the API keys too.
func (r *Runner) checkMaxUsers(p *plan) error {
	cfg := r.cfg
	if cfg.MaxUsers <= 0 {
		return nil
	}
	in, total := p.in, 0
	for i := range in.Records {
		if in.Records[i].Invalid == "" && r.skipReason(&in.Records[i], in.Login(i), p.caller) == "" {
			total++
		}
	}
	if total > cfg.MaxUsers {
		return fatalKind(ErrTooMany, "--max-users %d: the plan would change %d users; refusing", cfg.MaxUsers, total)
	}
	if cfg.RotateAPIKeys {
		if keys := r.keysPlanned(p, validUsers(p)); keys > cfg.MaxUsers {
			return fatalKind(ErrTooMany, "--max-users %d: the plan would rotate %d API keys; refusing", cfg.MaxUsers, keys)
		}
	}
	return nil
}
