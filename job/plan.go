package job

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
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
	// groups is parallel to pending with a recipients map (nil without):
	// the group each user's passwords are sealed for (report.Group's ID;
	// 0: the global group). groupNames names them (results.csv's
	// sealedFor), by ID.
	groups     []int32
	groupNames map[int32]string
}

// group returns the group of pending user i (0: the global group).
func (p *plan) group(i int) int32 {
	if p.groups == nil {
		return 0
	}
	return p.groups[i]
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

// inputOptions says what the run keeps of its input beside the records:
// the logins for login globs, the group column for a recipients map.
func (r *Runner) inputOptions() input.Options {
	return input.Options{KeepLogins: r.keepLogins(), GroupColumn: r.cfg.RecipientsMap.Column()}
}

func (r *Runner) readInput() (*input.Input, error) {
	opts := r.inputOptions()
	if r.cfg.InputData != nil {
		name := r.cfg.InputName
		if name == "" {
			name = "input"
		}
		return input.ReadOptions(bytes.NewReader(r.cfg.InputData), name, opts)
	}
	if r.cfg.InputPath == "" {
		return nil, errors.New("--input: a users CSV is required")
	}
	stdin := r.cfg.Stdin
	if stdin == nil {
		stdin = os.Stdin
	}
	return input.ReadFileOptions(r.cfg.InputPath, stdin, opts)
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

// groupOf returns the group that the passwords of record i of the plan are
// sealed for: its network or mailbox when the recipients map names it,
// else the global group.
func (r *Runner) groupOf(p *plan, i int) report.Group {
	return r.cfg.RecipientsMap.GroupOf(p.in.Group(p.src(i)))
}

// groupPending notes the group of each pending user: with a recipients
// map, in p.groups (4 bytes a user; nothing without a map), and the name
// of each group in p.groupNames.
func (r *Runner) groupPending(p *plan) {
	p.groupNames = map[int32]string{0: report.Group{}.String()}
	if r.cfg.RecipientsMap == nil {
		return
	}
	p.groups = make([]int32, len(p.pending))
	for i, idx := range p.pending {
		g := r.groupOf(p, int(idx))
		p.groups[i] = int32(g.ID)
		if _, ok := p.groupNames[int32(g.ID)]; !ok {
			p.groupNames[int32(g.ID)] = g.String()
		}
	}
}

// checkGroupColumn refuses a recipients map with an input that cannot say
// which group a user is in: before any call.
func (r *Runner) checkGroupColumn(in *input.Input) error {
	m := r.cfg.RecipientsMap
	if m == nil || in.GroupColumn != "" {
		return nil
	}
	return fatal("--recipients-map is keyed by %s, but the input %s has no %s column (%s): export the users with 'pwrotate users' "+
		"(it writes the networkId and mailboxId of each user) and pass that file as --input, or take them from ECGrid with --select",
		m.Column(), in.Name, m.Column(), in.ColumnsSeen())
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
	r.printGroups(w, p)
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

// maxPlanGroups is how many groups the plan lists one by one.
const maxPlanGroups = 10

// printGroups says, with a recipients map, how the users to change are
// sealed: the users and recipients of each group (the largest groups
// first, at most maxPlanGroups), and the users sealed to the global
// recipients only (their group is not in the map, or the input gives none).
func (r *Runner) printGroups(w io.Writer, p *plan) {
	m := r.cfg.RecipientsMap
	if m == nil {
		return
	}
	global := len(r.cfg.Recipients)
	users := map[int]int{}
	unmapped, unmappedGroups, noID := 0, map[int]bool{}, 0
	for i := range p.records {
		if _, skip := p.skip[int32(i)]; p.records[i].Invalid != "" || skip {
			continue
		}
		id := p.in.Group(p.src(i))
		switch g := m.GroupOf(id); {
		case !g.Global():
			users[g.ID]++
		case id == 0:
			noID++
		default:
			unmapped++
			unmappedGroups[id] = true
		}
	}
	also := "every file also to the " + plural(global, "global recipient")
	if global == 0 {
		also = "no global recipient given yet (--apply needs one; every file is sealed to them too)"
	}
	fmt.Fprintf(w, "  sealing:   one file per %s (--recipients-map, %s, sha256 %.12s…); %s\n",
		m.Kind, plural(len(m.Groups()), "group"), m.SHA256, also)
	ids := make([]int, 0, len(users))
	for id := range users {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b int) int { return cmp.Or(cmp.Compare(users[b], users[a]), cmp.Compare(a, b)) })
	for k, id := range ids {
		if k == maxPlanGroups {
			rest := 0
			for _, id := range ids[k:] {
				rest += users[id]
			}
			fmt.Fprintf(w, "    … and %d more %ss (%s)\n", len(ids)-k, m.Kind, plural(rest, "user"))
			break
		}
		g := report.Group{Kind: m.Kind, ID: id}
		fmt.Fprintf(w, "    %s %d: %s, %s\n", m.Kind, id, plural(users[id], "user"), plural(m.Recipients(g)+global, "recipient"))
	}
	if n := unmapped + noID; n > 0 {
		var why []string
		if unmapped > 0 {
			why = append(why, fmt.Sprintf("%d in %s the map leaves out", unmapped, plural(len(unmappedGroups), m.Kind.String())))
		}
		if noID > 0 {
			why = append(why, fmt.Sprintf("%d without a %s", noID, m.Column()))
		}
		fmt.Fprintf(w, "    global recipients only: %s (%s)\n", plural(n, "user"), strings.Join(why, ", "))
	}
	if idle := len(m.Groups()) - len(ids); idle > 0 {
		fmt.Fprintf(w, "    map groups with no user to change: %d\n", idle)
	}
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
