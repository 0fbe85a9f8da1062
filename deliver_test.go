package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"pwrotate/report"
	"pwrotate/report/deliver/kubetest"
	"pwrotate/rotate/ecgridsim"
)

// The "done when" for --deliver, through the pwrotate process
// (the crash tests' child) against a real kube-apiserver (kubetest), as a
// user allowed only get and patch on the mapped Secrets.

// kubeCrash is a crashWorld whose users are mapped to Secrets of a real API
// server.
type kubeCrash struct {
	*crashWorld
	s       *kubetest.Server
	mapPath string
	targets map[int][][3]string // by user: {namespace, secret, key}
	// names lists the Secrets created, by namespace.
	names map[string][]string
}

// newKubeCrash maps users 2000.. of a crashWorld of n users: the first
// own-ns[0] users to a Secret of their own in namespace team-a, the next
// own-ns[1] in team-b, the next `shared` to keys of one Secret "shared" in
// team-a; user 2000 also to team-b/ftp-2000[password]. Each own Secret has
// a key "username" and a label beside; team-a holds an unmapped Secret. The
// job (kubetest.JobUser) may get and patch exactly the mapped Secrets.
func newKubeCrash(t *testing.T, n int, own [2]int, shared int) *kubeCrash {
	t.Helper()
	k := &kubeCrash{crashWorld: newCrashWorld(t, n), s: kubetest.Start(t),
		targets: map[int][][3]string{}, names: map[string][]string{}}
	for _, ns := range []string{"team-a", "team-b"} {
		k.s.Namespace(t, ns)
	}
	add := func(u int, ns, name, key string, create bool) {
		if create {
			k.s.Secret(t, ns, name, map[string]string{key: "old", "username": fmt.Sprintf("svc-%d", u)},
				map[string]string{"app": "edi"}, map[string]string{"owner": "integration-team"})
			k.names[ns] = append(k.names[ns], name)
		}
		k.targets[u] = append(k.targets[u], [3]string{ns, name, key})
	}
	u := 2000
	for i := range own[0] {
		add(u+i, "team-a", fmt.Sprintf("app-%d", u+i), "password", true)
	}
	u += own[0]
	for i := range own[1] {
		add(u+i, "team-b", fmt.Sprintf("app-%d", u+i), "password", true)
	}
	u += own[1]
	if shared > 0 {
		k.s.Secret(t, "team-a", "shared", map[string]string{"unrelated": "stays"}, map[string]string{"app": "edi"}, nil)
		k.names["team-a"] = append(k.names["team-a"], "shared")
		for i := range shared {
			add(u+i, "team-a", "shared", fmt.Sprintf("user%d", u+i), false)
		}
	}
	add(2000, "team-b", "ftp-2000", "password", true)
	k.s.Secret(t, "team-a", "unmapped", map[string]string{"password": "untouched"}, nil, nil)
	for ns, names := range k.names {
		k.s.Grant(t, ns, kubetest.JobUser, []string{"get", "patch"}, names...)
	}
	var b strings.Builder
	b.WriteString("userId,namespace,secret,key\n")
	for u := 2000; u < 2000+n; u++ {
		for _, tg := range k.targets[u] {
			fmt.Fprintf(&b, "%d,%s,%s,%s\n", u, tg[0], tg[1], tg[2])
		}
	}
	k.mapPath = filepath.Join(k.dir, "deliver.csv")
	if err := os.WriteFile(k.mapPath, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return k
}

// args are the --deliver flags of a run.
func (k *kubeCrash) args(extra ...string) []string {
	return append([]string{"--deliver", k.mapPath, "--kubeconfig", k.s.JobKubeconfig}, extra...)
}

// rows returns the last results row of each user in out.
func (k *kubeCrash) rows(out string) map[int]report.Row {
	k.t.Helper()
	rows, err := report.ReadResults(filepath.Join(out, report.ResultsName))
	if err != nil {
		k.t.Fatal(err)
	}
	last := map[int]report.Row{}
	for _, r := range rows {
		last[r.UserID] = r
	}
	return last
}

// checkSecrets checks that every updated user's live password is in every
// one of its targets, that the other keys, labels and annotations of the
// Secrets, and the unmapped Secret, are untouched. It returns the users
// whose row says delivered=false.
func (k *kubeCrash) checkSecrets(out string) (notDelivered []int) {
	t := k.t
	t.Helper()
	read := map[[2]string]kubetest.SecretObject{}
	secretOf := func(ns, name string) kubetest.SecretObject {
		if s, ok := read[[2]string{ns, name}]; ok {
			return s
		}
		s := k.s.ReadSecret(t, ns, name)
		read[[2]string{ns, name}] = s
		return s
	}
	for u, row := range k.rows(out) {
		if row.Status != report.Updated || len(k.targets[u]) == 0 {
			continue
		}
		if row.Delivered != "true" {
			notDelivered = append(notDelivered, u)
		}
		live, _ := k.sim.Password(u)
		for _, tg := range k.targets[u] {
			if row.Delivered == "true" && string(secretOf(tg[0], tg[1]).Data[tg[2]]) != live {
				t.Errorf("user %d: %s/%s[%s] does not hold the live password", u, tg[0], tg[1], tg[2])
			}
		}
	}
	for key, s := range read {
		if key[1] == "shared" {
			if string(s.Data["unrelated"]) != "stays" || s.Metadata.Labels["app"] != "edi" {
				t.Errorf("%s/shared: another key or a label changed", key[0])
			}
			continue
		}
		if s.Metadata.Labels["app"] != "edi" || s.Metadata.Annotations["owner"] != "integration-team" || !strings.HasPrefix(string(s.Data["username"]), "svc-") {
			t.Errorf("%s/%s: a label, an annotation or another key changed", key[0], key[1])
		}
	}
	if s := k.s.ReadSecret(t, "team-a", "unmapped"); string(s.Data["password"]) != "untouched" || len(s.Metadata.Annotations) != 0 {
		t.Error("the unmapped Secret changed")
	}
	return notDelivered
}

// TestDeliverKilledAndResumed: 320 mapped users (300 with Secrets of their
// own across two namespaces, 20 sharing one Secret, one with two targets),
// answers lost on the way, the process killed with SIGKILL three times
// (with the escrow sealed and nothing sent; after a delivery, before its
// outcome is recorded; between a change's record and its delivery), then
// resumed: every updated user's live password is in every one of its
// targets, and nothing else of the Secrets changed.
func TestDeliverKilledAndResumed(t *testing.T) {
	k := newKubeCrash(t, 320, [2]int{150, 150}, 20)
	k.sim.Inject(ecgridsim.Fault{Endpoint: "password", Kind: ecgridsim.ApplyThenDrop, Times: 10})
	k.sim.SetLatency(2*time.Millisecond, 8*time.Millisecond)
	out := filepath.Join(k.dir, "out")
	for i, killAt := range []string{"escrow-sealed", "delivered:60", "changed:30"} {
		if code := k.run(out, killAt, k.args()...); code != -1 {
			t.Fatalf("run %d: not killed at %s (exit %d)", i+1, killAt, code)
		}
	}
	if code := k.run(out, "", k.args()...); code != 0 {
		t.Fatalf("final resume: exit %d", code)
	}
	k.check(out)
	if nd := k.checkSecrets(out); len(nd) > 0 {
		t.Errorf("not delivered: %v", nd)
	}
	if left, _ := filepath.Glob(filepath.Join(out, "deliver-g*.age")); len(left) > 0 {
		t.Errorf("escrow left: %v", left)
	}
	sum, err := report.ReadSummary(filepath.Join(out, report.SummaryName))
	if err != nil || sum.Delivery == nil || sum.Delivery.Delivered != 320 || sum.Delivery.Targets != 321 {
		t.Errorf("summary: %+v %v", sum.Delivery, err)
	}
}

// TestDeliverRefusedTargets: a map naming a Secret that does not exist and
// one the job may not patch is exit 1 with zero password changes, the
// error naming both.
func TestDeliverRefusedTargets(t *testing.T) {
	k := newKubeCrash(t, 6, [2]int{2, 2}, 0)
	k.s.Secret(t, "team-b", "not-ours", map[string]string{"password": "theirs"}, nil, nil)
	k.s.Grant(t, "team-a", kubetest.JobUser, []string{"get", "patch"}, "gone")
	f, err := os.OpenFile(k.mapPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "2004,team-a,gone,password\n2005,team-b,not-ours,password\n")
	f.Close()
	out := filepath.Join(k.dir, "out")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd, stderr := k.command(ctx, out, "", k.args()...)
	err = cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("exit %v, want 1\n%s", err, stderr)
	}
	for _, want := range []string{"team-a/gone[password]", "not found", "team-b/not-ours[password]", "forbidden"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if n := k.sim.Count("password"); n != 0 {
		t.Errorf("%d password changes, want 0", n)
	}
	if s := k.s.ReadSecret(t, "team-b", "not-ours"); string(s.Data["password"]) != "theirs" {
		t.Error("a refused Secret changed")
	}
}

// TestDeliverAPIServerKilled kills the API server with SIGKILL in the middle
// of a run and starts it again 3 s later: when the run ends, at most
// 2 x --workers users are changed but not delivered, and after at most one
// --resume every Secret holds its live password.
func TestDeliverAPIServerKilled(t *testing.T) {
	const workers = 4
	k := newKubeCrash(t, 240, [2]int{120, 120}, 0)
	k.sim.SetLatency(15*time.Millisecond, 25*time.Millisecond)
	out := filepath.Join(k.dir, "out")
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	cmd, stderr := k.command(ctx, out, "", k.args("--workers", fmt.Sprint(workers))...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	k.waitPasswordCalls(60)
	k.s.Kill()
	killedAt := time.Now()
	calls := k.sim.Count("password")
	time.Sleep(3 * time.Second)
	duringOutage := k.sim.Count("password") - calls
	if err := k.s.Restart(); err != nil {
		t.Fatal(err)
	}
	t.Logf("API server back after %v; %d changes while it was down", time.Since(killedAt).Round(time.Millisecond), duringOutage)
	err := cmd.Wait()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	if code != 0 && code != 2 {
		t.Fatalf("first run: exit %d\n%s", code, stderr)
	}
	if duringOutage > 2*workers {
		t.Errorf("%d changes while the API server was down, want at most the %d in flight", duringOutage, 2*workers)
	}
	if !strings.Contains(stderr.String(), "kubernetes API unreachable or refusing") {
		t.Errorf("the outage was not noticed:\n%s", stderr)
	}
	nd := k.checkSecrets(out)
	t.Logf("first run: exit %d, %d changed but not delivered", code, len(nd))
	if len(nd) > 2*workers {
		t.Errorf("%d users changed but not delivered after the first run, want at most %d", len(nd), 2*workers)
	}
	if code == 2 {
		if code := k.run(out, "", k.args()...); code != 0 {
			t.Fatalf("resume: exit %d", code)
		}
	}
	k.check(out)
	if nd := k.checkSecrets(out); len(nd) > 0 {
		t.Errorf("not delivered after the resume: %v", nd)
	}
}

// TestDeliverOlderThan: after a run that rotated users 1-60, a run over
// 1-100 with --older-than 1h rotates exactly 61-100 and leaves 1-60 and
// their Secrets alone.
func TestDeliverOlderThan(t *testing.T) {
	k := newKubeCrash(t, 100, [2]int{50, 50}, 0)
	first := filepath.Join(k.dir, "first.csv")
	var b strings.Builder
	b.WriteString("userId\n")
	for u := 2000; u < 2060; u++ {
		fmt.Fprintf(&b, "%d\n", u)
	}
	if err := os.WriteFile(first, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	all := k.input
	k.input = first
	if code := k.run(filepath.Join(k.dir, "out1"), "", k.args()...); code != 0 {
		t.Fatalf("first run: exit %d", code)
	}
	k.input = all
	rv := map[[2]string]string{}
	for u := 2000; u < 2060; u++ {
		for _, tg := range k.targets[u] {
			rv[[2]string{tg[0], tg[1]}] = k.s.ReadSecret(t, tg[0], tg[1]).Metadata.ResourceVersion
		}
	}
	before := map[int]int{}
	for _, c := range k.sim.Calls() {
		if c.Endpoint == "password" {
			before[c.UserID]++
		}
	}
	out := filepath.Join(k.dir, "out2")
	if code := k.run(out, "", k.args("--older-than", "1h")...); code != 0 {
		t.Fatalf("second run: exit %d", code)
	}
	after := map[int]int{}
	for _, c := range k.sim.Calls() {
		if c.Endpoint == "password" {
			after[c.UserID]++
		}
	}
	rows := k.rows(out)
	for u := 2000; u < 2100; u++ {
		changed := after[u] - before[u]
		row := rows[u]
		if u < 2060 {
			if changed != 0 || row.Status != report.Skipped || !strings.Contains(row.Error, " ago, due in ") {
				t.Errorf("user %d: %d changes, %s %q; want skipped, not due", u, changed, row.Status, row.Error)
			}
			continue
		}
		if changed < 1 || row.Status != report.Updated || row.Delivered != "true" {
			t.Errorf("user %d: %d changes, %s delivered=%q; want rotated and delivered", u, changed, row.Status, row.Delivered)
		}
	}
	for key, v := range rv {
		if got := k.s.ReadSecret(t, key[0], key[1]).Metadata.ResourceVersion; got != v {
			t.Errorf("%s/%s was written though its user is not due", key[0], key[1])
		}
	}
	if nd := k.checkSecrets(out); len(nd) > 0 {
		t.Errorf("not delivered: %v", nd)
	}
}
