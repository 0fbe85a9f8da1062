package job

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"filippo.io/age"

	"pwrotate/report"
	"pwrotate/rotate"
	"pwrotate/rotate/secret"
)

// API key rotation (--rotate-api-keys). After a user's password change
// (and session reset) succeeded, the row is recorded saying the key is
// owed (apiKeyRotated=false); then the live key is read, its sha256 made
// durable in the key log, and a new key generated once. New keys are
// sealed in batches (OUT/apikeys-NNNNN.age); only once a batch is durable
// are its users' rows recorded again with apiKeyRotated=true (the later row
// of a line supersedes the earlier). An unknown outcome (a lost answer, a
// kill) is settled by reading the key back: the logged digest means not
// rotated, generate again; another key may be pwrotate's or someone
// else's, so it is sealed as a candidate, its digest logged, and a key
// generated once more (each key is sealed before the next generate, so
// none is lost). A key-generate success whose body holds no key that
// parses is sealed as received. A resumed run settles every row still
// owed the same way.

// Batches of new keys are sealed at this many keys, or this long after the
// first key of the batch arrived.
const (
	keyBatchSize = 256
	keyBatchWait = time.Second
)

// Texts of the results row's error cell.
const (
	keyOwedText   = "password changed; API key not rotated yet"
	keyFailedText = "password changed; API key not rotated: "
)

// Kill points (Config.Hook) of the key rotation.
const (
	hookKeyLogged   = "key-logged"   // a user's old-key digest is durable in the key log, nothing generated
	hookKeyAnswered = "key-answered" // a key-generate was answered (or its answer lost), nothing sealed
	hookKeysSealed  = "keys-sealed"  // a batch of keys is durable, its rows not yet recorded
	// a key read back (or an unreadable answer) is durable as a candidate,
	// its digest not yet logged
	hookKeyCandidate = "key-candidate"
)

// errKeyStopped: the rotation of one key was interrupted (a signal past
// the grace, a 401/403): it stays owed.
var errKeyStopped = errors.New("API key rotation interrupted")

// keyRotator does the API key part of a run. A nil *keyRotator (no
// --rotate-api-keys) does nothing.
type keyRotator struct {
	r      *Runner
	client *rotate.Client
	dir    string
	recips []age.Recipient
	caller int // the caller's user ID, whose key is never rotated; 0: unknown
	log    *report.KeyLog

	mu      sync.Mutex
	digests map[int]string // per user, the digest logged last

	// From the rows recorded before this run (the last row of each line).
	trueBefore, falseBefore int
	owed                    []report.Row // rows updated whose key is owed
	owedAt                  map[int]int  // by input line, the index in owed

	// Set by start, for the pool.
	res      *report.ResultsFile
	stop     context.CancelCauseFunc
	in       chan pendingKey
	loopDone chan struct{}

	batchMu   sync.Mutex // guards nextBatch and sealed: the batcher and candidates (sealCandidate) both seal
	nextBatch int
	sealed    []string // batch files written by this run

	owedNow, rotatedNow, failedNow atomic.Int64
	readBacks, avoided, generated  atomic.Int64
	loggedN, answeredN, candidates atomic.Int64
	batchesN                       atomic.Int64 // batches the batcher sealed
}

// pendingKey is a new key waiting for its batch to be sealed, with the row
// to record once it is.
type pendingKey struct {
	row report.Row
	key secret.Password
	at  time.Time
}

// openKeys prepares the key rotation of a run applying into out: the key
// log (created if missing) and the number of the next batch.
func (r *Runner) openKeys(out *report.Folder, p *plan) error {
	if !r.cfg.RotateAPIKeys {
		return nil
	}
	kl, digests, err := report.OpenKeyLog(out.File(report.KeyLogName))
	if err != nil {
		return fatal("%w", err)
	}
	batches, err := report.APIKeyBatches(out.Path)
	if err != nil {
		kl.Close()
		return fatal("%w", err)
	}
	k := &keyRotator{
		r: r, client: r.cfg.Client, dir: out.Path, recips: r.cfg.Recipients,
		log: kl, digests: digests, nextBatch: 1,
	}
	if len(batches) > 0 {
		k.nextBatch = batches[len(batches)-1] + 1
	}
	if p.caller != nil {
		k.caller = p.caller.UserID
	}
	r.keys = k
	return nil
}

// closeKeys closes the key log.
func (r *Runner) closeKeys() {
	if r.keys != nil {
		_ = r.keys.log.Close()
	}
}

// eligible reports whether row's user gets a new key: its password was
// changed, and it is not the caller.
func (k *keyRotator) eligible(row report.Row) bool {
	return row.Status == report.Updated && row.UserID > 0 && row.UserID != k.caller
}

// noteRecorded is told the last recorded row of each line, before the
// run: it counts rotated keys and keeps the rows whose key is owed.
func (k *keyRotator) noteRecorded(row report.Row) {
	if k == nil || !k.eligible(row) {
		return
	}
	switch row.APIKeyRotated {
	case "true":
		k.trueBefore++
	case "false":
		k.falseBefore++
		if k.owedAt == nil {
			k.owedAt = map[int]int{}
		}
		k.owedAt[row.Line] = len(k.owed)
		k.owed = append(k.owed, row)
	}
}

// keysOwedIn reports whether the results in out hold a row (the last of
// its line) whose API key is owed: a complete run with such a row is
// resumed, not skipped.
func (r *Runner) keysOwedIn(out *report.Folder) bool {
	if !r.cfg.RotateAPIKeys {
		return false
	}
	rows, err := report.ReadResults(out.ResultsPath())
	if err != nil {
		return false
	}
	last := map[int]report.Row{}
	for _, row := range rows {
		last[row.Line] = row
	}
	for _, row := range last {
		if row.Status == report.Updated && row.APIKeyRotated == "false" {
			return true
		}
	}
	return false
}

// keysPlanned is how many API keys the run will rotate: the users it will
// change, the caller aside, and the keys an earlier run owes.
func (r *Runner) keysPlanned(p *plan, users []int32) int {
	if !r.cfg.RotateAPIKeys {
		return 0
	}
	n := 0
	for _, idx := range users {
		if p.caller == nil || p.records[idx].UserID != p.caller.UserID {
			n++
		}
	}
	if r.keys != nil {
		n += len(r.keys.owed)
	}
	return n
}

// printKeyPlan adds the API key line to the plan.
func (r *Runner) printKeyPlan(p *plan) {
	w := r.cfg.Stdout
	if w == nil || !r.cfg.RotateAPIKeys {
		return
	}
	users := p.pending
	owed := 0
	if r.keys != nil {
		owed = len(r.keys.owed)
	}
	fmt.Fprintf(w, "  api keys:  %s to rotate after the password changes (GET %s/v2/users/key/{id}, POST …/key-generate/{id})",
		plural(r.keysPlanned(p, users), "key"), r.cfg.Endpoint)
	if owed > 0 {
		fmt.Fprintf(w, ", %d owed by an earlier run", owed)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "             every integration using these keys stops working until given its new key; never the caller's key")
}

// start runs the batcher for the pool: res is where rows are recorded,
// stop ends the run with a fatal cause.
func (k *keyRotator) start(res *report.ResultsFile, stop context.CancelCauseFunc) {
	if k == nil {
		return
	}
	k.res, k.stop = res, stop
	k.in = make(chan pendingKey, keyBatchSize)
	k.loopDone = make(chan struct{})
	go k.loop()
}

// dispatchOwed rotates, through the pool's workers, the keys an earlier
// run owes.
func (k *keyRotator) dispatchOwed(ctx context.Context, g interface{ Go(func() error) }) {
	if k == nil || len(k.owed) == 0 {
		return
	}
	k.r.log.Info("settling the API keys an earlier run owes", "users", len(k.owed))
	for _, row := range k.owed {
		if ctx.Err() != nil {
			return
		}
		g.Go(func() error {
			if ctx.Err() == nil {
				k.rotate(ctx, row)
			}
			return nil
		})
	}
	k.owed = nil
}

// owe marks an updated row, about to be recorded, as owing its API key
// (again, for the second row of a change and its reset).
func (k *keyRotator) owe(row *report.Row) {
	if k == nil || !k.eligible(*row) {
		return
	}
	if row.APIKeyRotated != "false" {
		k.owedNow.Add(1)
	}
	row.APIKeyRotated = "false"
	if !strings.HasSuffix(row.Error, keyOwedText) {
		row.Error = joinText(row.Error, keyOwedText)
	}
}

// replaceOwed is told a row recorded again (a session reset an earlier
// run owed) before the pool: the owed key's rows are copies of it.
func (k *keyRotator) replaceOwed(row report.Row) {
	if k == nil {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if i, ok := k.owedAt[row.Line]; ok && i < len(k.owed) {
		k.owed[i] = row
	}
}

// rotate rotates the key of row's user (row was recorded saying the key is
// owed) and hands the new key to the batcher, or records why it failed.
// Once begun, it goes on after a signal, for one --timeout at most.
func (k *keyRotator) rotate(ctx context.Context, row report.Row) {
	if k == nil || !k.eligible(row) {
		return
	}
	uctx, cancel := unitContext(ctx, k.client.Timeout())
	defer cancel()
	key, err := k.rotateOne(uctx, row.UserID)
	now := k.r.cfg.Now().UTC()
	switch {
	case err == nil:
		k.in <- pendingKey{row: row, key: key, at: now}
	case errors.Is(err, errKeyStopped):
		// Still owed: the row says so already; --resume settles it.
	default:
		k.r.log.Warn("API key rotation failed", "line", row.Line, "user", row.UserID, "reason", err.Error())
		row.APIKeyRotated = "false"
		row.Error = joinText(stripOwed(row.Error), keyFailedText+err.Error())
		row.FinishedAt = now
		if aerr := k.res.Append(row); aerr != nil {
			k.stop(fmt.Errorf("recording results: %w", aerr))
			return
		}
		k.failedNow.Add(1)
	}
}

// rotateOne gives userID a new API key and returns it: the key of a
// key-generate answer, never a key merely read back. An error wrapping
// errKeyStopped leaves the key owed; any other error says why the rotation
// failed (the key may still be owed: the log settles it).
//
// A read-back that shows another key than the one logged (after a lost
// answer, or a kill) cannot tell pwrotate's generate from someone else's,
// who would then know the key: that key is sealed as a candidate (no key
// is lost), its digest logged, and a key generated once more.
func (k *keyRotator) rotateOne(ctx context.Context, userID int) (secret.Password, error) {
	k.mu.Lock()
	digest, logged := k.digests[userID]
	k.mu.Unlock()
	if logged {
		// An earlier attempt (a killed run's, maybe with a generate still
		// in flight) logged the key it was about to replace: read the key
		// back to learn whether it was replaced.
		cur, replaced, err := k.settle(ctx, userID, digest)
		if err != nil {
			return "", err
		}
		if replaced {
			if digest, err = k.candidate(userID, cur); err != nil {
				return "", err
			}
		}
	} else {
		cur, o := k.client.APIKey(ctx, userID)
		if err := k.outcomeErr(o, "reading the API key"); err != nil {
			return "", err
		}
		var err error
		if digest, err = k.logDigest(userID, cur); err != nil {
			return "", err
		}
	}
	for n := 1; ; n++ {
		key, unread, o := k.client.GenerateAPIKey(ctx, userID)
		k.generated.Add(1)
		k.r.cfg.Hook(hookKeyAnswered, int(k.answeredN.Add(1)))
		if o.OK {
			return key, nil
		}
		if !unread.Empty() {
			// A success whose body holds no key that parses: it may be
			// the new key in a form we do not read. Sealed as received
			// before anything else.
			if err := k.sealCandidate(userID, unread); err != nil {
				return "", err
			}
		}
		if !o.Unknown {
			return "", k.outcomeErr(o, "generating the API key")
		}
		// The answer was lost (or unreadable): read the key back.
		cur, replaced, err := k.settle(ctx, userID, digest)
		if err != nil {
			return "", fmt.Errorf("generating the API key: outcome unknown (%v); %w", errText(o.Err), err)
		}
		if replaced {
			if answerHolds(unread, cur) {
				// This generate's own answer holds the live key: ours.
				k.avoided.Add(1)
				return cur, nil
			}
			if digest, err = k.candidate(userID, cur); err != nil {
				return "", err
			}
		}
		// Each generate whose read-back shows it was not applied, or not
		// surely ours, counts as one attempt of --max-attempts.
		if n >= k.client.MaxAttempts() {
			return "", fmt.Errorf("generating the API key: no new key confirmed after %d attempts: %s", n, errText(o.Err))
		}
	}
}

// answerHolds reports whether the unread body of a key-generate answer
// holds key (long enough not to be there by chance): the server gave it in
// answer to that generate.
func answerHolds(unread, key secret.Password) bool {
	return len(key.Reveal()) >= 16 && strings.Contains(unread.Reveal(), key.Reveal())
}

// logDigest makes the digest of userID's live key durable in the key log,
// before a key-generate is sent, and returns it.
func (k *keyRotator) logDigest(userID int, live secret.Password) (string, error) {
	digest := report.KeyDigest(live)
	if err := k.log.Record(report.KeyLogEntry{UserID: userID, OldDigest: digest}); err != nil {
		k.stop(fmt.Errorf("API key log: %w", err))
		return "", fmt.Errorf("%w: %v", errKeyStopped, err)
	}
	k.mu.Lock()
	k.digests[userID] = digest
	k.mu.Unlock()
	k.r.cfg.Hook(hookKeyLogged, int(k.loggedN.Add(1)))
	return digest, nil
}

// candidate seals cur, a key read back that may not be pwrotate's, and
// logs its digest: the next key-generate replaces it. It returns the
// digest.
func (k *keyRotator) candidate(userID int, cur secret.Password) (string, error) {
	k.r.log.Warn("API key replaced, but not surely by pwrotate: sealed as a candidate; generating once more", "user", userID)
	if err := k.sealCandidate(userID, cur); err != nil {
		return "", err
	}
	return k.logDigest(userID, cur)
}

// sealCandidate seals key, which may be userID's live key, at once in a
// batch of its own, durably, before any other key-generate for the user.
// Its row is not recorded as rotated. A failure stops the run (the key
// stays owed).
func (k *keyRotator) sealCandidate(userID int, key secret.Password) error {
	k.batchMu.Lock()
	n := k.nextBatch
	k.nextBatch++
	k.batchMu.Unlock()
	keys := []report.SealedKey{{UserID: userID, Key: key, ObtainedAt: k.r.cfg.Now().UTC()}}
	path, err := report.SealAPIKeys(k.dir, n, k.recips, keys)
	clear(keys)
	if err != nil {
		k.stop(fmt.Errorf("sealing API keys: %w", err))
		return fmt.Errorf("%w: sealing a candidate key: %v", errKeyStopped, err)
	}
	// The key log vouches for a candidate's batch too: open --api-keys
	// must not report pwrotate's own file as planted.
	if err := k.log.RecordBatch(path); err != nil {
		k.stop(fmt.Errorf("API key log: %w", err))
		return fmt.Errorf("%w: API key log: %v", errKeyStopped, err)
	}
	k.batchMu.Lock()
	k.sealed = append(k.sealed, path)
	k.batchMu.Unlock()
	k.candidates.Add(1)
	k.r.log.Info("API key sealed as a candidate", "file", path, "user", userID)
	k.r.cfg.Hook(hookKeyCandidate, int(k.candidates.Load()))
	return nil
}

// settle reads userID's key back after an unknown outcome: replaced when
// it is not the key whose digest was logged (cur is then the live key). A
// key still the old one is read again one --timeout later before it is
// taken as not replaced: the request may yet be applied late (a 504 from a
// proxy while the server goes on, a killed run's request in flight).
func (k *keyRotator) settle(ctx context.Context, userID int, digest string) (cur secret.Password, replaced bool, err error) {
	cur, err = k.readBack(ctx, userID)
	if err == nil && report.KeyDigest(cur) == digest {
		if err = k.sleep(ctx, k.client.Timeout()); err == nil {
			cur, err = k.readBack(ctx, userID)
		}
	}
	if err != nil {
		return "", false, err
	}
	if report.KeyDigest(cur) == digest {
		return "", false, nil
	}
	return cur, true, nil
}

// sleep waits d, or until ctx is done (the key then stays owed).
func (k *keyRotator) sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: waiting to read the API key back", errKeyStopped)
	}
}

// readBack reads userID's live key to settle an unknown outcome.
func (k *keyRotator) readBack(ctx context.Context, userID int) (secret.Password, error) {
	k.readBacks.Add(1)
	cur, o := k.client.APIKey(ctx, userID)
	if err := k.outcomeErr(o, "reading the API key back"); err != nil {
		return "", err
	}
	return cur, nil
}

// outcomeErr turns a failed outcome into an error (nil when OK); a 401/403
// stops the run.
func (k *keyRotator) outcomeErr(o rotate.Outcome, what string) error {
	switch {
	case o.OK:
		return nil
	case o.Interrupted:
		return fmt.Errorf("%w: %s: %s", errKeyStopped, what, errText(o.Err))
	case o.Fatal:
		k.stop(fmt.Errorf("%w: %v (no further requests sent)", errFatalAPI, o.Err))
		return fmt.Errorf("%w: %s: %s", errKeyStopped, what, errText(o.Err))
	}
	return fmt.Errorf("%s: %s", what, errText(o.Err))
}

// loop collects new keys into batches and seals each: at keyBatchSize
// keys, keyBatchWait after the first, and when the pool is done.
func (k *keyRotator) loop() {
	defer close(k.loopDone)
	var batch []pendingKey
	var timer *time.Timer
	var due <-chan time.Time
	flush := func() {
		if timer != nil {
			timer.Stop()
			timer, due = nil, nil
		}
		k.seal(batch)
		batch = nil
	}
	for {
		select {
		case pk, ok := <-k.in:
			if !ok {
				flush()
				return
			}
			batch = append(batch, pk)
			if len(batch) == 1 {
				timer = time.NewTimer(keyBatchWait)
				due = timer.C
			}
			if len(batch) >= keyBatchSize {
				flush()
			}
		case <-due:
			timer, due = nil, nil
			flush()
		}
	}
}

// seal writes one batch durably, then records its rows with
// apiKeyRotated=true. If sealing fails the run stops; the keys stay owed
// (a resume reads them back: they differ from the logged digests).
func (k *keyRotator) seal(batch []pendingKey) {
	if len(batch) == 0 {
		return
	}
	keys := make([]report.SealedKey, len(batch))
	for i, pk := range batch {
		keys[i] = report.SealedKey{UserID: pk.row.UserID, Key: pk.key, ObtainedAt: pk.at}
	}
	k.batchMu.Lock()
	n := k.nextBatch
	k.nextBatch++
	k.batchMu.Unlock()
	path, err := report.SealAPIKeys(k.dir, n, k.recips, keys)
	clear(keys)
	for i := range batch {
		batch[i].key = ""
	}
	if err != nil {
		k.stop(fmt.Errorf("sealing API keys: %w", err))
		return
	}
	k.batchMu.Lock()
	k.sealed = append(k.sealed, path)
	k.batchMu.Unlock()
	k.r.log.Info("API keys sealed", "file", path, "keys", len(batch))
	k.r.cfg.Hook(hookKeysSealed, int(k.batchesN.Add(1)))
	now := k.r.cfg.Now().UTC()
	rows := make([]report.Row, len(batch))
	for i, pk := range batch {
		row := pk.row
		row.APIKeyRotated = "true"
		row.Error = stripOwed(row.Error)
		row.FinishedAt = now
		rows[i] = row
	}
	// The key log vouches for the batch (open --api-keys prefers such
	// batches to any other file in the folder) before its rows say rotated.
	if err := k.log.RecordBatch(path); err != nil {
		k.stop(fmt.Errorf("API key log: %w", err))
		return
	}
	if err := k.res.Append(rows...); err != nil {
		k.stop(fmt.Errorf("recording results: %w", err))
		return
	}
	k.rotatedNow.Add(int64(len(rows)))
}

// finish seals the last batch once the workers are done.
func (k *keyRotator) finish() {
	if k == nil || k.in == nil {
		return
	}
	close(k.in)
	<-k.loopDone
}

// stats returns what the key rotation did; Rotated and NotRotated count
// the rows of the whole output folder.
func (k *keyRotator) stats() *report.APIKeyStats {
	if k == nil {
		return nil
	}
	rotated := k.rotatedNow.Load()
	return &report.APIKeyStats{
		Rotated:          k.trueBefore + int(rotated),
		NotRotated:       k.falseBefore + int(k.owedNow.Load()-rotated),
		RotatedNow:       int(rotated),
		Generated:        int(k.generated.Load()),
		ReadBacks:        int(k.readBacks.Load()),
		GeneratesAvoided: int(k.avoided.Load()),
	}
}

// outputs returns the files of the key rotation: the key log and the
// sealed batches in the folder.
func (k *keyRotator) outputs() []string {
	if k == nil {
		return nil
	}
	files := []string{filepath.Join(k.dir, report.KeyLogName)}
	if ns, err := report.APIKeyBatches(k.dir); err == nil {
		for _, n := range ns {
			files = append(files, filepath.Join(k.dir, report.APIKeysName(n)))
		}
	}
	return files
}

// joinText joins two texts of an error cell with "; ".
func joinText(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "; " + b
}

// stripOwed removes the "key not rotated yet" note from an error cell.
func stripOwed(s string) string {
	s = strings.TrimSuffix(s, keyOwedText)
	return strings.TrimSuffix(s, "; ")
}
