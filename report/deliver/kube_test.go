package deliver

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"pwrotate/report/deliver/kubetest"
	"pwrotate/rotate/secret"
)

// The tests in this file run against a real kube-apiserver and etcd
// (kubetest): RBAC, dry-run, merge patches and concurrency as the job will
// meet them.

func TestMain(m *testing.M) { os.Exit(kubetest.Main(m)) }

// writeMap writes a --deliver file with the rows given as
// "user,namespace,secret,key" and returns its path.
func writeMap(t *testing.T, rows ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "deliver.csv")
	data := "userId,namespace,secret,key\n" + strings.Join(rows, "\n") + "\n"
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// newTestClient reads the map and returns a client on kubeconfig.
func newTestClient(t *testing.T, kubeconfig string, opts Options, rows ...string) *Client {
	t.Helper()
	m, err := ReadMap(writeMap(t, rows...))
	if err != nil {
		t.Fatal(err)
	}
	if opts.RunID == "" {
		opts.RunID = "test-run"
	}
	c, err := New(m, Access{Kubeconfig: kubeconfig}, opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// pw makes a distinct password for user i.
func pw(i int, gen string) secret.Password {
	return secret.Password(fmt.Sprintf("Pw-%s-%04d-x9!Q", gen, i))
}

var nsSeq atomic.Int32

// namespace creates a namespace of the test's own on s.
func namespace(t *testing.T, s *kubetest.Server) string {
	t.Helper()
	ns := fmt.Sprintf("t%d-%s", nsSeq.Add(1), strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name())))
	if len(ns) > 63 {
		ns = strings.TrimRight(ns[:63], "-")
	}
	s.Namespace(t, ns)
	return ns
}

func TestDeliverPatchesOnlyItsKey(t *testing.T) {
	s := kubetest.Shared(t)
	ns := namespace(t, s)
	s.Secret(t, ns, "app", map[string]string{"password": "old", "username": "svc-ftp", "other": "keep"},
		map[string]string{"team": "edi"}, map[string]string{"note": "keep me"})
	s.Secret(t, ns, "unmapped", map[string]string{"password": "untouched"}, nil, nil)
	s.Grant(t, ns, kubetest.JobUser, []string{"get", "patch"}, "app")
	before := s.ReadSecret(t, ns, "unmapped")

	var logs bytes.Buffer
	var outcomes sync.Map
	c := newTestClient(t, s.JobKubeconfig, Options{
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Observe: func(o string) {
			n, _ := outcomes.LoadOrStore(o, new(atomic.Int32))
			n.(*atomic.Int32).Add(1)
		},
	}, "1,"+ns+",app,password")
	v, err := c.Preflight(t.Context(), []int{1})
	if err != nil || !v.OK() || v.Targets != 1 || v.Secrets != 1 {
		t.Fatalf("Preflight = %+v, %v", v, err)
	}
	if got := s.ReadSecret(t, ns, "app"); string(got.Data["password"]) != "old" || len(got.Metadata.Annotations) != 1 {
		t.Fatalf("the dry-run preflight changed the Secret: %+v", got.Metadata)
	}
	start := time.Now()
	res := c.Deliver(t.Context(), 1, pw(1, "a"))
	if !res.OK() || res.Err != nil || res.Attempts != 1 {
		t.Fatalf("Deliver = %+v", res)
	}
	got := s.ReadSecret(t, ns, "app")
	if string(got.Data["password"]) != pw(1, "a").Reveal() {
		t.Error("the Secret does not hold the new password")
	}
	if string(got.Data["username"]) != "svc-ftp" || string(got.Data["other"]) != "keep" {
		t.Errorf("other keys changed: %q", got.Data)
	}
	if got.Metadata.Labels["team"] != "edi" || got.Metadata.Annotations["note"] != "keep me" {
		t.Errorf("labels or annotations lost: %+v", got.Metadata)
	}
	rec := got.Metadata.Annotations["pwrotate.io/rotated-password"]
	when, _, err := parseAnnotation(rec)
	if err != nil || !strings.HasSuffix(rec, ";run=test-run") || when.Before(start.Add(-time.Second).Truncate(time.Second)) || when.After(time.Now()) {
		t.Errorf("rotation record %q (%v)", rec, err)
	}
	if after := s.ReadSecret(t, ns, "unmapped"); after.Metadata.ResourceVersion != before.Metadata.ResourceVersion {
		t.Error("an unmapped Secret changed")
	}
	if n, ok := outcomes.Load(OutcomeDelivered); !ok || n.(*atomic.Int32).Load() != 1 {
		t.Errorf("outcomes: delivered not counted once")
	}
	if strings.Contains(logs.String(), pw(1, "a").Reveal()) {
		t.Error("the password is in the log")
	}
	// A user without a row: nothing to do.
	if res := c.Deliver(t.Context(), 2, pw(2, "a")); res.Targets != 0 || res.OK() || res.Attempts != 0 {
		t.Errorf("Deliver(user without row) = %+v", res)
	}
}

func TestDeliverSharedSecretConcurrently(t *testing.T) {
	s := kubetest.Shared(t)
	ns := namespace(t, s)
	s.Secret(t, ns, "shared", map[string]string{"unrelated": "stays"}, map[string]string{"app": "x"}, nil)
	s.Grant(t, ns, kubetest.JobUser, []string{"get", "patch"}, "shared")
	var rows []string
	for i := 1; i <= 20; i++ {
		rows = append(rows, fmt.Sprintf("%d,%s,shared,user%d", i, ns, i))
	}
	c := newTestClient(t, s.JobKubeconfig, Options{QPS: 1000, Burst: 100}, rows...)
	for round, gen := range []string{"a", "b"} {
		var wg sync.WaitGroup
		for i := 1; i <= 20; i++ {
			wg.Go(func() {
				if res := c.Deliver(t.Context(), i, pw(i, gen)); !res.OK() {
					t.Errorf("round %d user %d: %v", round, i, res)
				}
			})
		}
		wg.Wait()
		got := s.ReadSecret(t, ns, "shared")
		for i := 1; i <= 20; i++ {
			if string(got.Data[fmt.Sprintf("user%d", i)]) != pw(i, gen).Reveal() {
				t.Errorf("round %d: user%d lost its password", round, i)
			}
			if _, ok := got.Metadata.Annotations[fmt.Sprintf("pwrotate.io/rotated-user%d", i)]; !ok {
				t.Errorf("round %d: user%d lost its rotation record", round, i)
			}
		}
		if string(got.Data["unrelated"]) != "stays" || got.Metadata.Labels["app"] != "x" {
			t.Errorf("round %d: the rest of the Secret changed", round)
		}
	}
}

func TestPreflightNamesEachRefusal(t *testing.T) {
	s := kubetest.Shared(t)
	ns := namespace(t, s)
	other := namespace(t, s)
	s.Secret(t, ns, "ok", map[string]string{"password": "old"}, nil, nil)
	s.Secret(t, ns, "forbidden", map[string]string{"password": "old"}, nil, nil)
	s.Secret(t, other, "elsewhere", map[string]string{"password": "old"}, nil, nil)
	s.Do(t, http.MethodPost, "/api/v1/namespaces/"+ns+"/secrets",
		`{"apiVersion":"v1","kind":"Secret","metadata":{"name":"frozen"},"immutable":true,"data":{"password":"b2xk"}}`)
	// The job may get and patch "ok", "missing" (which does not exist) and
	// "frozen" (immutable), and nothing in the other namespace.
	s.Grant(t, ns, kubetest.JobUser, []string{"get", "patch"}, "ok", "missing", "frozen")
	c := newTestClient(t, s.JobKubeconfig, Options{},
		"1,"+ns+",ok,password",
		"2,"+ns+",missing,password",
		"3,"+ns+",forbidden,password",
		"4,"+other+",elsewhere,password",
		"5,"+ns+",frozen,password",
		"6,"+ns+",ok,password6",
	)
	v, err := c.Preflight(t.Context(), []int{1, 2, 3, 4, 5, 6, 7})
	if err != nil {
		t.Fatal(err)
	}
	if v.OK() || v.Targets != 6 || v.Secrets != 5 {
		t.Errorf("verdict %+v", v)
	}
	want := []string{
		ns + "/missing[password] (", "line 3): not found",
		ns + "/forbidden[password] (", "line 4): forbidden: ", `cannot patch resource "secrets"`,
		other + "/elsewhere[password] (", "line 5): forbidden",
		ns + "/frozen[password] (", "line 6): rejected (HTTP 422): ", "immutable",
	}
	var got []string
	for _, r := range v.Refusals {
		got = append(got, r.String())
	}
	all := strings.Join(got, "\n")
	if len(v.Refusals) != 4 {
		t.Errorf("refusals:\n%s\nwant 4", all)
	}
	for _, w := range want {
		if !strings.Contains(all, w) {
			t.Errorf("refusals:\n%s\nlack %q", all, w)
		}
	}
	if strings.Contains(all, "/ok[") {
		t.Errorf("a patchable target is refused:\n%s", all)
	}
	// Only users 1 and 6: the Secret "ok" passes.
	if v, err := c.Preflight(t.Context(), []int{6, 1}); err != nil || !v.OK() || v.Secrets != 1 || v.Targets != 2 {
		t.Errorf("Preflight(1, 6) = %+v, %v", v, err)
	}
	if got := s.ReadSecret(t, ns, "ok"); string(got.Data["password"]) != "old" || len(got.Data) != 1 {
		t.Error("the preflight changed a Secret")
	}
	// Deliver trusts the preflight: a 403 then is the API server refusing
	// (RBAC taken away, or not yet loaded after a restart), retried until
	// OutageLimit, then named.
	c.opts.OutageLimit = 2 * time.Second
	res := c.Deliver(t.Context(), 3, pw(3, "a"))
	var te *TargetError
	if res.OK() || !errors.As(res.Err, &te) || !strings.Contains(te.Reason, "forbidden") || res.Attempts < 2 || !errors.Is(res.Err, ErrOutage) {
		t.Errorf("Deliver(forbidden) = %+v", res)
	}
}

func TestDue(t *testing.T) {
	s := kubetest.Shared(t)
	ns := namespace(t, s)
	now := time.Now().Truncate(time.Second) // as the records keep it
	ann := func(ago time.Duration) map[string]string {
		return map[string]string{"pwrotate.io/rotated-password": annotationValue(now.Add(-ago), "earlier")}
	}
	s.Secret(t, ns, "old", nil, nil, ann(2*time.Hour))
	s.Secret(t, ns, "young", nil, nil, ann(10*time.Minute))
	s.Secret(t, ns, "never", nil, nil, nil)
	s.Secret(t, ns, "garbled", nil, nil, map[string]string{"pwrotate.io/rotated-password": "yesterday"})
	s.Secret(t, ns, "mixed", nil, nil, ann(5*time.Minute))
	s.Secret(t, ns, "mine", nil, nil, map[string]string{"pwrotate.io/rotated-password": annotationValue(now.Add(-time.Minute), "test-run")})
	s.Grant(t, ns, kubetest.JobUser, []string{"get", "patch"}, "old", "young", "never", "garbled", "mixed", "gone", "mine")
	c := newTestClient(t, s.JobKubeconfig, Options{Now: func() time.Time { return now }},
		"1,"+ns+",old,password",
		"2,"+ns+",young,password",
		"3,"+ns+",never,password",
		"4,"+ns+",garbled,password",
		"5,"+ns+",mixed,password",
		"5,"+ns+",old,password5",
		"7,"+ns+",mine,password",
	)
	due, refusals, err := c.Due(t.Context(), []int{1, 2, 3, 4, 5, 6, 7}, time.Hour)
	if err != nil || len(refusals) != 0 {
		t.Fatalf("Due: %v, %v", refusals, err)
	}
	want := map[int]Due{
		1: {Due: true, Reason: "rotated 2h ago"},
		2: {Due: false, Reason: "rotated 10m ago, due in 50m"},
		3: {Due: true, Reason: "no rotation recorded on " + ns + "/never[password]"},
		4: {Due: true, Reason: "no rotation recorded on " + ns + "/garbled[password]"},
		5: {Due: true, Reason: "no rotation recorded on " + ns + "/old[password5]"},
		// This run's own record: a resumed run finishes what it started.
		7: {Due: true, Reason: "rotated by this run before it stopped, on " + ns + "/mine[password]"},
	}
	for u, w := range want {
		if got := due[u]; got.Due != w.Due || got.Reason != w.Reason {
			t.Errorf("user %d: %+v, want %+v", u, got, w)
		}
	}
	if _, ok := due[6]; ok {
		t.Error("a user without targets has an entry")
	}
	// After a delivery the user is no longer due.
	c.opts.Now = time.Now
	if res := c.Deliver(t.Context(), 3, pw(3, "a")); !res.OK() {
		t.Fatal(res)
	}
	c.SetRunID("next-run") // the next run
	due, _, err = c.Due(t.Context(), []int{3}, time.Hour)
	if err != nil || due[3].Due || !strings.HasPrefix(due[3].Reason, "rotated 0s ago, due in ") {
		t.Errorf("after delivery: %+v, %v", due[3], err)
	}
	// A target that cannot be read is a refusal.
	c2 := newTestClient(t, s.JobKubeconfig, Options{}, "1,"+ns+",gone,password", "2,"+ns+",secret-not-granted,password")
	_, refusals, err = c2.Due(t.Context(), []int{1, 2}, time.Hour)
	if err != nil || len(refusals) != 2 || refusals[0].Reason != "not found" || !strings.HasPrefix(refusals[1].Reason, "forbidden") {
		t.Errorf("Due(unreadable) = %v, %v", refusals, err)
	}
}

func TestAccess(t *testing.T) {
	s := kubetest.Shared(t)
	ns := namespace(t, s)
	s.Secret(t, ns, "admin-only", map[string]string{"password": "old"}, nil, nil)
	row := "1," + ns + ",admin-only,password"
	m, err := ReadMap(writeMap(t, row))
	if err != nil {
		t.Fatal(err)
	}
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("KUBECONFIG", "")
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	verdict := func(t *testing.T, acc Access) (string, string) {
		t.Helper()
		c, err := New(m, acc, Options{MaxAttempts: 1})
		if err != nil {
			return "", err.Error()
		}
		v, err := c.Preflight(t.Context(), []int{1})
		if err != nil {
			return c.Source(), err.Error()
		}
		if v.OK() {
			return c.Source(), "ok"
		}
		return c.Source(), v.Refusals[0].Reason
	}
	t.Run("explicit kubeconfig", func(t *testing.T) {
		src, got := verdict(t, Access{Kubeconfig: s.JobKubeconfig})
		if !strings.HasPrefix(got, "forbidden") || src != "kubeconfig "+s.JobKubeconfig+" (context job)" {
			t.Errorf("%s: %s", src, got)
		}
	})
	t.Run("context", func(t *testing.T) {
		src, got := verdict(t, Access{Kubeconfig: s.JobKubeconfig, Context: "admin"})
		if got != "ok" || !strings.HasSuffix(src, "(context admin)") {
			t.Errorf("%s: %s", src, got)
		}
		_, got = verdict(t, Access{Kubeconfig: s.JobKubeconfig, Context: "nope"})
		if !strings.Contains(got, `"nope"`) {
			t.Errorf("unknown context: %s", got)
		}
	})
	t.Run("KUBECONFIG", func(t *testing.T) {
		t.Setenv("KUBECONFIG", s.AdminKubeconfig)
		src, got := verdict(t, Access{})
		if got != "ok" || src != "kubeconfig from KUBECONFIG (context admin)" {
			t.Errorf("%s: %s", src, got)
		}
		// --kubeconfig wins over KUBECONFIG.
		if _, got := verdict(t, Access{Kubeconfig: s.JobKubeconfig}); !strings.HasPrefix(got, "forbidden") {
			t.Errorf("--kubeconfig beside KUBECONFIG: %s", got)
		}
	})
	t.Run("home", func(t *testing.T) {
		_, got := verdict(t, Access{})
		if !strings.Contains(got, "no Kubernetes cluster configured") {
			t.Errorf("no configuration: %s", got)
		}
		if err := os.MkdirAll(filepath.Join(home, ".kube"), 0o700); err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(s.AdminKubeconfig)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(home, ".kube", "config"), data, 0o600); err != nil {
			t.Fatal(err)
		}
		src, got := verdict(t, Access{})
		if got != "ok" || !strings.Contains(src, filepath.Join(".kube", "config")) {
			t.Errorf("%s: %s", src, got)
		}
	})
	t.Run("in a pod without a token", func(t *testing.T) {
		t.Setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
		t.Setenv("KUBERNETES_SERVICE_PORT", "443")
		old := serviceAccountDir
		serviceAccountDir = t.TempDir()
		t.Cleanup(func() { serviceAccountDir = old })
		_, got := verdict(t, Access{})
		if !strings.Contains(got, "no ServiceAccount token") {
			t.Errorf("%s", got)
		}
		// A context means a kubeconfig: the ServiceAccount is not tried.
		if _, got := verdict(t, Access{Context: "admin"}); got != "ok" {
			t.Errorf("with --kube-context: %s", got)
		}
	})
}

func TestDeliverRetries(t *testing.T) {
	s := kubetest.Shared(t)
	ns := namespace(t, s)
	s.Secret(t, ns, "app", map[string]string{"password": "old"}, nil, nil)
	s.Grant(t, ns, "proxied-job", []string{"get", "patch"}, "app")
	tests := []struct {
		name   string
		faults []kubetest.Fault // the first requests; then forwarded
		ok     bool
		want   string
	}{
		{"429 then 500 then 503", []kubetest.Fault{{Status: 429, RetryAfter: "1"}, {Status: 500}, {Status: 503}}, true, ""},
		{"409 conflict", []kubetest.Fault{{Status: 409}, {Status: 409}}, true, ""},
		{"403 and 401 after the preflight", []kubetest.Fault{{Status: 403}, {Status: 401}}, true, ""},
		{"dropped connections", []kubetest.Fault{{Drop: true}, {Drop: true}}, true, ""},
		{"502 for longer than OutageLimit", slices.Repeat([]kubetest.Fault{{Status: 502}}, 1000), false, "rejected (HTTP 502): injected 502"},
		{"400 is final", []kubetest.Fault{{Status: 400}}, false, "rejected (HTTP 400)"},
		// A webhook quoting the request: the password never reaches the
		// result or the log.
		{"answers quoting the password", []kubetest.Fault{{Status: 500, Echo: true}, {Status: 422, Echo: true}}, false, "rejected (HTTP 422): injected 422: {\"metadata\""},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var res Result
			var sent atomic.Int32
			kc := s.FaultProxy(t, "proxied-job", func(n int, r *http.Request) kubetest.Fault {
				sent.Add(1)
				if n <= len(tt.faults) {
					return tt.faults[n-1]
				}
				return kubetest.Fault{}
			})
			// Every request failing is an outage: retried beyond
			// MaxAttempts until OutageLimit.
			var logs syncBuffer
			c := newTestClient(t, kc, Options{MaxAttempts: 4, OutageLimit: 3 * time.Second,
				Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}, "1,"+ns+",app,password")
			defer func() {
				p := pw(i, "r").Reveal()
				b64 := base64.StdEncoding.EncodeToString([]byte(p))
				for _, text := range []string{logs.String(), res.String()} {
					if strings.Contains(text, p) || strings.Contains(text, b64) {
						t.Errorf("the password is in the result or the log:\n%s", text)
					}
				}
			}()
			start := time.Now()
			res = c.Deliver(t.Context(), 1, pw(i, "r"))
			if res.OK() != tt.ok {
				t.Fatalf("Deliver = %v, want ok %v", res, tt.ok)
			}
			if tt.ok {
				if res.Attempts != len(tt.faults)+1 {
					t.Errorf("attempts = %d, want %d", res.Attempts, len(tt.faults)+1)
				}
				if got := s.ReadSecret(t, ns, "app"); string(got.Data["password"]) != pw(i, "r").Reveal() {
					t.Error("not delivered")
				}
				if tt.faults[0].RetryAfter != "" && time.Since(start) < time.Second {
					t.Errorf("Retry-After 1 not honoured: %v", time.Since(start))
				}
				if c.Down() {
					t.Error("still down after a success")
				}
				return
			}
			if !strings.Contains(res.String(), tt.want) {
				t.Errorf("Deliver = %v, want %q", res, tt.want)
			}
			if tt.faults[len(tt.faults)-1].Status >= 500 {
				if d := time.Since(start); d < 3*time.Second || !errors.Is(res.Err, ErrOutage) || res.Attempts <= 4 {
					t.Errorf("gave up after %v and %d attempts (%v), want OutageLimit 3s", d, res.Attempts, res.Err)
				}
			} else if res.Attempts != len(tt.faults) {
				t.Errorf("attempts = %d, want %d", res.Attempts, len(tt.faults))
			}
		})
	}
}

// TestOutage kills the API server (SIGKILL) in the middle of deliveries and
// starts it again 3 s later on the same etcd: the deliveries in flight ride
// it out, WaitReady holds back new changes meanwhile (the pool does not wait
// for the deliveries), and every password lands. Then a longer outage: deliveries and WaitReady give up with
// ErrOutage after OutageLimit.
func TestOutage(t *testing.T) {
	s := kubetest.Start(t)
	ns := namespace(t, s)
	const users, workers = 120, 4
	var rows, names []string
	for i := 1; i <= users; i++ {
		name := fmt.Sprintf("app-%d", i)
		s.Secret(t, ns, name, map[string]string{"password": "old"}, nil, nil)
		rows = append(rows, fmt.Sprintf("%d,%s,%s,password", i, ns, name))
		names = append(names, name)
	}
	s.Grant(t, ns, kubetest.JobUser, []string{"get", "patch"}, names...)
	var logs syncBuffer
	c := newTestClient(t, s.JobKubeconfig, Options{
		OutageLimit: 30 * time.Second, Timeout: 5 * time.Second,
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}, rows...)
	if v, err := c.Preflight(t.Context(), nil); err != nil || !v.OK() {
		t.Fatalf("Preflight: %v %v", v, err)
	}
	// Preflight of no users checks nothing; of all of them:
	all := make([]int, users)
	for i := range all {
		all[i] = i + 1
	}
	if v, err := c.Preflight(t.Context(), all); err != nil || !v.OK() || v.Secrets != users {
		t.Fatalf("Preflight: %v %v", v, err)
	}

	var (
		next           atomic.Int32
		killed         = make(chan struct{})
		mu             sync.Mutex
		changes        []time.Time // when each "change" was let through
		wg, deliveries sync.WaitGroup
		failed         sync.Map
	)
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1))
				if i > users {
					return
				}
				if err := c.WaitReady(t.Context()); err != nil {
					failed.Store(i, err.Error())
					continue
				}
				mu.Lock()
				changes = append(changes, time.Now())
				mu.Unlock()
				if i == users/3 {
					close(killed)
				}
				time.Sleep(200 * time.Millisecond) // the change at ECGrid
				// Delivered beside the pool, which goes on: only
				// WaitReady holds it back during the outage.
				deliveries.Go(func() {
					if res := c.Deliver(t.Context(), i, pw(i, "o")); !res.OK() {
						failed.Store(i, res.String())
					}
				})
			}
		})
	}
	<-killed
	s.Kill()
	killedAt := time.Now()
	time.Sleep(3 * time.Second)
	restartAt := time.Now()
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	t.Logf("API server back after %v", time.Since(killedAt).Round(time.Millisecond))
	wg.Wait()
	deliveries.Wait()
	failed.Range(func(k, v any) bool {
		t.Errorf("user %v: %v", k, v)
		return true
	})
	for i, name := range names {
		if got := s.ReadSecret(t, ns, name); string(got.Data["password"]) != pw(i+1, "o").Reveal() {
			t.Errorf("%s does not hold user %d's password", name, i+1)
		}
	}
	if !strings.Contains(logs.String(), "kubernetes API unreachable or refusing") || !strings.Contains(logs.String(), "kubernetes API answering again") {
		t.Errorf("the outage was not noticed:\n%s", logs.String())
	}
	// A second after the kill every worker has seen it (a refused
	// connection fails at once): no change may start until it is back.
	held := 0
	for _, at := range changes {
		if at.After(killedAt.Add(time.Second)) && at.Before(restartAt) {
			held++
		}
	}
	if held > 0 {
		t.Errorf("%d changes were let through while the API server was down", held)
	}
	if strings.Contains(logs.String(), "Pw-o-") {
		t.Error("a password is in the log")
	}

	// A longer outage: nothing answers for OutageLimit.
	c.opts.OutageLimit = 2 * time.Second
	s.Kill()
	start := time.Now()
	res := c.Deliver(t.Context(), 1, pw(1, "p"))
	if res.OK() || !errors.Is(res.Err, ErrOutage) {
		t.Errorf("Deliver during a long outage = %v", res)
	}
	if d := time.Since(start); d < 2*time.Second || d > 10*time.Second {
		t.Errorf("Deliver gave up after %v, want about OutageLimit (2s)", d)
	}
	if err := c.WaitReady(t.Context()); !errors.Is(err, ErrOutage) {
		t.Errorf("WaitReady = %v, want ErrOutage", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	if _, err := c.Preflight(ctx, []int{1}); !errors.Is(err, ErrOutage) {
		t.Errorf("Preflight while down = %v, want ErrOutage", err)
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
