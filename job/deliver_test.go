package job_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"filippo.io/age"

	"pwrotate/job"
	"pwrotate/report"
	"pwrotate/report/deliver"
	"pwrotate/report/deliver/kubetest"
)

// The tests in this file deliver to a real kube-apiserver (kubetest), as
// a user allowed only get and patch on the mapped Secrets.

func TestMain(m *testing.M) { os.Exit(kubetest.Main(m)) }

var nsSeq atomic.Int32

// kubeWorld is a world (the ECGrid simulator) and an API server whose
// namespace ns holds a Secret per mapped target.
type kubeWorld struct {
	*world
	s       *kubetest.Server
	ns      string
	mapPath string
	targets map[int][][2]string // by user: {secret, key}
}

// newKubeWorld maps users firstUser..firstUser+mapped-1: each has a Secret
// of its own ("app-N", key "password", beside a key "username" and a label)
// except the last `shared` of them, which share the Secret "shared" (key
// "userN"); firstUser also goes to a second key, "ftp-password" of its
// Secret. The job may get and patch every one of them.
func newKubeWorld(t *testing.T, s *kubetest.Server, users, mapped, shared int) *kubeWorld {
	t.Helper()
	w := &kubeWorld{world: newWorld(t, users), s: s, targets: map[int][][2]string{}}
	w.ns = fmt.Sprintf("job-%d", nsSeq.Add(1))
	s.Namespace(t, w.ns)
	var rows, names []string
	rows = append(rows, "userId,namespace,secret,key")
	for i := range mapped {
		u := firstUser + i
		if i >= mapped-shared {
			w.targets[u] = [][2]string{{"shared", fmt.Sprintf("user%d", u)}}
			continue
		}
		name := fmt.Sprintf("app-%d", u)
		s.Secret(t, w.ns, name, map[string]string{"password": "old", "username": fmt.Sprintf("svc-%d", u)},
			map[string]string{"team": "edi"}, map[string]string{"note": "keep"})
		names = append(names, name)
		w.targets[u] = [][2]string{{name, "password"}}
	}
	w.targets[firstUser] = append(w.targets[firstUser], [2]string{fmt.Sprintf("app-%d", firstUser), "ftp-password"})
	if shared > 0 {
		s.Secret(t, w.ns, "shared", map[string]string{"unrelated": "stays"}, nil, nil)
		names = append(names, "shared")
	}
	s.Secret(t, w.ns, "unmapped", map[string]string{"password": "untouched"}, nil, nil)
	for u := firstUser; u < firstUser+mapped; u++ {
		for _, tg := range w.targets[u] {
			rows = append(rows, fmt.Sprintf("%d,%s,%s,%s", u, w.ns, tg[0], tg[1]))
		}
	}
	s.Grant(t, w.ns, kubetest.JobUser, []string{"get", "patch"}, names...)
	w.mapPath = filepath.Join(t.TempDir(), "deliver.csv")
	if err := os.WriteFile(w.mapPath, []byte(strings.Join(rows, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return w
}

// deliverer reads the map and returns a client on kubeconfig.
func (w *kubeWorld) deliverer(kubeconfig string, opts deliver.Options) *deliver.Client {
	w.t.Helper()
	m, err := deliver.ReadMap(w.mapPath)
	if err != nil {
		w.t.Fatal(err)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewJSONHandler(w.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	c, err := deliver.New(m, deliver.Access{Kubeconfig: kubeconfig}, opts)
	if err != nil {
		w.t.Fatal(err)
	}
	return c
}

// deliverConfig is a world's config with delivery.
func (w *kubeWorld) deliverConfig(input, out string, opts deliver.Options) job.Config {
	cfg := w.config(input, out)
	cfg.Deliver = w.deliverer(w.s.JobKubeconfig, opts)
	cfg.EscrowSecret = report.EscrowSecret(testKey)
	return cfg
}

// checkDelivered checks, for every updated user with targets, that the row
// says delivered and that each target holds the live password; that other
// keys, labels and annotations and the unmapped Secret are untouched; and
// returns the users whose row says not delivered.
func (w *kubeWorld) checkDelivered(byUser map[int]report.Row) (notDelivered []int) {
	t := w.t
	t.Helper()
	secrets := map[string]kubetest.SecretObject{}
	read := func(name string) kubetest.SecretObject {
		if s, ok := secrets[name]; ok {
			return s
		}
		s := w.s.ReadSecret(t, w.ns, name)
		secrets[name] = s
		return s
	}
	for u, row := range byUser {
		tgs := w.targets[u]
		if row.Status != report.Updated {
			continue
		}
		if len(tgs) == 0 {
			if row.Delivered != "" {
				t.Errorf("user %d has no target, yet delivered=%q", u, row.Delivered)
			}
			continue
		}
		if row.Delivered != "true" {
			notDelivered = append(notDelivered, u)
			continue
		}
		live, _ := w.sim.Password(u)
		for _, tg := range tgs {
			if got := read(tg[0]).Data[tg[1]]; string(got) != live {
				t.Errorf("user %d: %s/%s[%s] does not hold the live password", u, w.ns, tg[0], tg[1])
			}
		}
	}
	for name, s := range secrets {
		if name == "shared" {
			if string(s.Data["unrelated"]) != "stays" {
				t.Errorf("shared: another key changed")
			}
			continue
		}
		if s.Metadata.Labels["team"] != "edi" || s.Metadata.Annotations["note"] != "keep" || !strings.HasPrefix(string(s.Data["username"]), "svc-") {
			t.Errorf("%s: labels, annotations or other keys changed: %+v", name, s.Metadata)
		}
	}
	if u := w.s.ReadSecret(t, w.ns, "unmapped"); string(u.Data["password"]) != "untouched" || len(u.Metadata.Annotations) != 0 {
		t.Error("the unmapped Secret changed")
	}
	return notDelivered
}

// checkNoDeliveredSecrets checks that no live password is in the logs,
// stdout or the plaintext outputs.
func (w *kubeWorld) checkNoDeliveredSecrets(out string) {
	w.t.Helper()
	w.checkNoSecrets(out)
	for u := range w.targets {
		if live, _ := w.sim.Password(u); live != initialPw {
			for name, text := range map[string]string{"logs": w.logs.String(), "stdout": w.stdout.String()} {
				if strings.Contains(text, live) {
					w.t.Errorf("%s holds user %d's password", name, u)
				}
			}
		}
	}
}

func TestDeliverApply(t *testing.T) {
	s := kubetest.Shared(t)
	w := newKubeWorld(t, s, 14, 12, 3)
	out := filepath.Join(t.TempDir(), "out")
	cfg := w.deliverConfig(users(span(firstUser, 14)...), out, deliver.Options{})
	sum, err := job.New(cfg).Run(context.Background())
	if err != nil || sum.ExitCode != 0 {
		t.Fatalf("run: %v (exit %d)\n%s", err, sum.ExitCode, w.logs)
	}
	byUser := w.checkInvariant(out)
	if nd := w.checkDelivered(byUser); len(nd) > 0 {
		t.Errorf("not delivered: %v", nd)
	}
	if d := sum.Delivery; d == nil || d.Targets != 13 || d.Delivered != 12 || d.NotDelivered != 0 {
		t.Errorf("summary delivery %+v", sum.Delivery)
	}
	for _, want := range []string{"deliver:   13 targets of 12 users in 10 Secrets", "preflight: ok: 13 targets in 10 Secrets may be patched",
		fmt.Sprintf("user %d → %s/app-%d[ftp-password]", firstUser, w.ns, firstUser)} {
		if !strings.Contains(w.stdout.String(), want) {
			t.Errorf("plan lacks %q:\n%s", want, w.stdout)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(out, "deliver-g*.age")); len(left) > 0 {
		t.Errorf("escrow left after every password was delivered: %v", left)
	}
	// The rotation records name the run (run.json's runId).
	b, _ := os.ReadFile(filepath.Join(out, report.ManifestName))
	if !strings.Contains(string(b), `"runId": "out-`) {
		t.Errorf("run.json: %s", b)
	}
	rec := s.ReadSecret(t, w.ns, fmt.Sprintf("app-%d", firstUser+1)).Metadata.Annotations["pwrotate.io/rotated-password"]
	if !strings.Contains(rec, ";run=out-") {
		t.Errorf("rotation record %q", rec)
	}
	w.checkNoDeliveredSecrets(out)
}

func TestDeliverPreflightRefuses(t *testing.T) {
	s := kubetest.Shared(t)
	w := newKubeWorld(t, s, 4, 2, 0)
	// Two more rows: a Secret that does not exist (but may be patched),
	// and one that exists but is not in the job's Role.
	s.Secret(t, w.ns, "other-team", map[string]string{"password": "theirs"}, nil, nil)
	s.Grant(t, w.ns, kubetest.JobUser, []string{"get", "patch"}, "missing")
	data, _ := os.ReadFile(w.mapPath)
	data = append(data, fmt.Sprintf("%d,%s,missing,password\n%d,%s,other-team,password\n", firstUser+2, w.ns, firstUser+3, w.ns)...)
	if err := os.WriteFile(w.mapPath, data, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, apply := range []bool{false, true} {
		t.Run(fmt.Sprintf("apply=%v", apply), func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out")
			cfg := w.deliverConfig(users(span(firstUser, 4)...), out, deliver.Options{})
			cfg.Apply = apply
			if !apply {
				cfg.Out = ""
			}
			sum, err := job.New(cfg).Run(context.Background())
			if sum.ExitCode != 1 || !errors.Is(err, job.ErrDeliverRefused) {
				t.Fatalf("run: exit %d, %v; want exit 1 refusing", sum.ExitCode, err)
			}
			msg := err.Error()
			for _, want := range []string{w.ns + "/missing[password]", "line 5): not found", w.ns + "/other-team[password]", "line 6): forbidden"} {
				if !strings.Contains(msg, want) {
					t.Errorf("error lacks %q: %s", want, msg)
				}
			}
			if !apply && !strings.Contains(w.stdout.String(), "preflight: refused: 2 of 5 targets") {
				t.Errorf("plan:\n%s", w.stdout)
			}
			if n := w.sim.Count("password"); n != 0 {
				t.Errorf("%d password changes, want none", n)
			}
		})
	}
	if got := s.ReadSecret(t, w.ns, "other-team"); string(got.Data["password"]) != "theirs" {
		t.Error("a refused Secret changed")
	}
}

// TestDeliverOutageResume kills the API server (for good) after a few
// users: the deliveries in flight give up after the outage limit (recorded
// delivered=false), the users not yet changed are held back (no change),
// the run exits 2 and is not complete. With the API server back, --resume
// delivers the owed passwords from the escrow with no second change at
// ECGrid, and changes and delivers the rest.
func TestDeliverOutageResume(t *testing.T) {
	s := kubetest.Start(t)
	const n = 40
	w := newKubeWorld(t, s, n, n, 5)
	w.sim.SetLatency(20*time.Millisecond, 40*time.Millisecond)
	out := filepath.Join(t.TempDir(), "out")
	cfg := w.deliverConfig(users(span(firstUser, n)...), out, deliver.Options{OutageLimit: 2 * time.Second, Timeout: 2 * time.Second})
	cfg.Workers = 4
	var killed atomic.Bool
	cfg.Hook = func(point string, k int) {
		if point == "delivered" && k == 8 && killed.CompareAndSwap(false, true) {
			s.Kill()
		}
	}
	sum, err := job.New(cfg).Run(context.Background())
	if sum.ExitCode != 2 || sum.Complete {
		t.Fatalf("first run: exit %d complete %v (%v), want 2 and incomplete", sum.ExitCode, sum.Complete, err)
	}
	t.Logf("first run: %v; counts %v; delivery %+v", err, sum.Counts, sum.Delivery)
	rows, _ := report.ReadResults(filepath.Join(out, report.ResultsName))
	last := map[int]report.Row{}
	for _, r := range rows {
		last[r.UserID] = r
	}
	var owed []int
	for u, r := range last {
		if r.Status == report.Updated && r.Delivered == "false" {
			owed = append(owed, u)
		}
	}
	if len(owed) == 0 || len(owed) > 2*cfg.Workers {
		t.Errorf("%d changed but not delivered after the first run, want 1..%d", len(owed), 2*cfg.Workers)
	}
	if len(last) >= n {
		t.Errorf("every user has a row: the run did not hold back the changes")
	}
	callsBefore := map[int]int{}
	for _, c := range w.sim.Calls() {
		if c.Endpoint == "password" {
			callsBefore[c.UserID]++
		}
	}
	// Resuming without --deliver is refused: the run owes its Secrets.
	noDeliver := w.config(users(span(firstUser, n)...), out)
	noDeliver.Resume = true
	if sum, err := job.New(noDeliver).Run(context.Background()); sum.ExitCode != 1 || !strings.Contains(fmt.Sprint(err), "started with --deliver") {
		t.Errorf("resume without --deliver: exit %d, %v", sum.ExitCode, err)
	}

	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	cfg = w.deliverConfig(users(span(firstUser, n)...), out, deliver.Options{})
	cfg.Resume, cfg.Workers = true, 4
	sum, err = job.New(cfg).Run(context.Background())
	if err != nil || sum.ExitCode != 0 {
		t.Fatalf("resume: exit %d, %v\n%s", sum.ExitCode, err, w.logs)
	}
	byUser := w.checkInvariant(out)
	if nd := w.checkDelivered(byUser); len(nd) > 0 {
		t.Errorf("not delivered after the resume: %v", nd)
	}
	calls := map[int]int{}
	for _, c := range w.sim.Calls() {
		if c.Endpoint == "password" {
			calls[c.UserID]++
		}
	}
	for _, u := range owed {
		if calls[u] != callsBefore[u] {
			t.Errorf("user %d, owed a delivery: %d changes at ECGrid before the resume, %d after: the resume changed it again", u, callsBefore[u], calls[u])
		}
	}
	if d := sum.Delivery; d == nil || d.NotDelivered != 0 || d.Delivered != n {
		t.Errorf("summary delivery %+v", sum.Delivery)
	}
	if left, _ := filepath.Glob(filepath.Join(out, "deliver-g*.age")); len(left) > 0 {
		t.Errorf("escrow left: %v", left)
	}
	w.checkNoDeliveredSecrets(out)
}

// TestDeliverOlderThan rotates users 1-6 first; a run over 1-10 with
// --older-than 1h then rotates exactly 7-10 and leaves 1-6 and their
// Secrets alone, each skipped with its reason.
func TestDeliverOlderThan(t *testing.T) {
	s := kubetest.Shared(t)
	w := newKubeWorld(t, s, 10, 10, 0)
	first := filepath.Join(t.TempDir(), "first")
	if sum, err := job.New(w.deliverConfig(users(span(firstUser, 6)...), first, deliver.Options{})).Run(context.Background()); err != nil {
		t.Fatalf("first run: exit %d, %v", sum.ExitCode, err)
	}
	before := map[int]string{}
	for u := firstUser; u < firstUser+6; u++ {
		before[u] = s.ReadSecret(t, w.ns, fmt.Sprintf("app-%d", u)).Metadata.ResourceVersion
	}
	calls0 := w.sim.Count("password")
	second := filepath.Join(t.TempDir(), "second")
	cfg := w.deliverConfig(users(span(firstUser, 10)...), second, deliver.Options{})
	cfg.OlderThan = time.Hour
	sum, err := job.New(cfg).Run(context.Background())
	if err != nil || sum.ExitCode != 0 {
		t.Fatalf("second run: exit %d, %v", sum.ExitCode, err)
	}
	if n := w.sim.Count("password") - calls0; n != 4 {
		t.Errorf("%d changes, want 4 (users 7-10)", n)
	}
	// (Not checkInvariant: the first run changed users 1-6, which the
	// second skips.)
	byUser := map[int]report.Row{}
	rows, err := report.ReadResults(filepath.Join(second, report.ResultsName))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		byUser[r.UserID] = r
	}
	sealed, err := report.ReadSealed(filepath.Join(second, report.SealedName(1)), []age.Identity{w.id})
	if err != nil || len(sealed) != 4 {
		t.Fatalf("sealed: %d rows, %v", len(sealed), err)
	}
	for _, s := range sealed {
		if live, _ := w.sim.Password(s.UserID); live != s.Password.Reveal() || s.UserID < firstUser+6 {
			t.Errorf("user %d: sealed and rotated in the second run", s.UserID)
		}
	}
	for u := firstUser; u < firstUser+10; u++ {
		row := byUser[u]
		if u < firstUser+6 {
			if row.Status != report.Skipped || !strings.HasPrefix(row.Error, "rotated ") || !strings.Contains(row.Error, " ago, due in ") {
				t.Errorf("user %d: %s %q, want skipped as not due", u, row.Status, row.Error)
			}
			if rv := s.ReadSecret(t, w.ns, fmt.Sprintf("app-%d", u)).Metadata.ResourceVersion; rv != before[u] {
				t.Errorf("user %d: its Secret was written", u)
			}
			continue
		}
		if row.Status != report.Updated || row.Delivered != "true" {
			t.Errorf("user %d: %s delivered=%q", u, row.Status, row.Delivered)
		}
	}
	if sum.Delivery == nil || sum.Delivery.NotDue != 6 || sum.Counts["skipped"] != 6 {
		t.Errorf("summary: counts %v delivery %+v", sum.Counts, sum.Delivery)
	}
	w.checkDelivered(byUser)
}
