package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// pushed is what the gateway stand-in received.
type pushed struct {
	method   string
	path     string
	user     string
	password string
	families map[string]*dto.MetricFamily
	err      error
}

// gateway is a Pushgateway stand-in that decodes each push and answers status.
func gateway(t *testing.T, status int) (*httptest.Server, <-chan pushed) {
	t.Helper()
	got := make(chan pushed, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		p := pushed{method: req.Method, path: req.URL.EscapedPath(), families: map[string]*dto.MetricFamily{}}
		p.user, p.password, _ = req.BasicAuth()
		dec := expfmt.NewDecoder(req.Body, expfmt.ResponseFormat(req.Header))
		for {
			mf := &dto.MetricFamily{}
			if err := dec.Decode(mf); err != nil {
				if !errors.Is(err, io.EOF) {
					p.err = err
				}
				break
			}
			p.families[mf.GetName()] = mf
		}
		got <- p
		w.WriteHeader(status)
		if status >= 300 {
			_, _ = io.WriteString(w, "gateway says no")
		}
	}))
	t.Cleanup(srv.Close)
	return srv, got
}

// samples returns the family's values keyed by its label values joined by ",".
func samples(mf *dto.MetricFamily) map[string]float64 {
	out := map[string]float64{}
	for _, m := range mf.GetMetric() {
		var ls []string
		for _, l := range m.GetLabel() {
			ls = append(ls, l.GetName()+"="+l.GetValue())
		}
		key := strings.Join(ls, ",")
		switch {
		case m.Counter != nil:
			out[key] = m.GetCounter().GetValue()
		case m.Gauge != nil:
			out[key] = m.GetGauge().GetValue()
		}
	}
	return out
}

func TestPush(t *testing.T) {
	end := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	wantStamp := float64(end.Unix())

	tests := []struct {
		name        string
		final       Final
		wantSuccess bool
	}{
		{
			name: "success",
			final: Final{
				Counts:   map[string]int{"updated": 7, "invalid": 0},
				Duration: 90 * time.Second, AchievedRate: 9.5, ExitCode: 0, Success: true,
			},
			wantSuccess: true,
		},
		{
			name: "interrupted",
			final: Final{
				Counts:   map[string]int{"updated": 3, "failed": 1, "invalid": 2, "pending": 4},
				Duration: 5 * time.Second, AchievedRate: 2, ExitCode: 3, Interrupted: true,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, got := gateway(t, http.StatusOK)
			r := NewRun()
			r.now = func() time.Time { return end }
			for range 3 {
				r.Call("password", 200, nil)
			}
			r.Call("password", 503, errors.New("unavailable"))
			r.Call("password", 0, errors.New("timeout"))
			r.Call("password", 0, errors.New("timeout"))
			r.Call("me", 200, nil)
			r.Call("reset", 429, nil)
			r.Call("other", 200, nil)
			r.Retry("password")
			r.Retry("password")
			r.Retry("reset")
			r.Delivery("delivered")
			r.Delivery("delivered")
			r.Delivery("unreachable")
			if r.Calls() != 9 || r.Retries() != 3 || r.Deliveries("delivered") != 2 {
				t.Fatalf("Calls, Retries = %d, %d; want 9, 3", r.Calls(), r.Retries())
			}

			err := r.Push(context.Background(), srv.URL, "pwrotate", map[string]string{"shard": "2"}, tt.final)
			if err != nil {
				t.Fatalf("Push: %v", err)
			}
			p := <-got
			if p.err != nil {
				t.Fatalf("decoding the pushed body: %v", p.err)
			}
			if p.method != http.MethodPost {
				t.Errorf("method = %s, want POST (Add keeps the last success timestamp)", p.method)
			}
			if want := "/metrics/job/pwrotate/shard/2"; p.path != want {
				t.Errorf("path = %q, want %q", p.path, want)
			}

			wantRecords := map[string]float64{}
			for _, s := range Statuses {
				wantRecords["status="+s] = float64(tt.final.Counts[s])
			}
			want := map[string]map[string]float64{
				"pwrotate_records": wantRecords,
				"pwrotate_api_calls_total": {
					"code=200,endpoint=password":   3,
					"code=503,endpoint=password":   1,
					"code=error,endpoint=password": 2,
					"code=200,endpoint=me":         1,
					"code=429,endpoint=reset":      1,
					"code=200,endpoint=other":      1,
				},
				"pwrotate_retries_total": {
					"endpoint=password": 2,
					"endpoint=reset":    1,
				},
				"pwrotate_deliveries_total": {
					"outcome=delivered":   2,
					"outcome=unreachable": 1,
				},
				"pwrotate_run_duration_seconds":           {"": tt.final.Duration.Seconds()},
				"pwrotate_achieved_rate_calls_per_second": {"": tt.final.AchievedRate},
				"pwrotate_exit_code":                      {"": float64(tt.final.ExitCode)},
				"pwrotate_interrupted":                    {"": boolFloat(tt.final.Interrupted)},
				"pwrotate_last_run_timestamp_seconds":     {"": wantStamp},
			}
			if tt.wantSuccess {
				want["pwrotate_last_success_timestamp_seconds"] = map[string]float64{"": wantStamp}
			}
			for name, wantSamples := range want {
				mf, ok := p.families[name]
				if !ok {
					t.Errorf("metric %s not pushed", name)
					continue
				}
				gotSamples := samples(mf)
				if fmt.Sprint(gotSamples) != fmt.Sprint(wantSamples) {
					t.Errorf("%s = %v, want %v", name, gotSamples, wantSamples)
				}
			}
			for name := range p.families {
				if _, ok := want[name]; !ok {
					t.Errorf("unexpected metric %s pushed", name)
				}
			}
			if mf := p.families["pwrotate_api_calls_total"]; mf != nil && mf.GetType() != dto.MetricType_COUNTER {
				t.Errorf("pwrotate_api_calls_total type = %v, want COUNTER", mf.GetType())
			}
			if mf := p.families["pwrotate_records"]; mf != nil && mf.GetType() != dto.MetricType_GAUGE {
				t.Errorf("pwrotate_records type = %v, want GAUGE", mf.GetType())
			}
		})
	}
}

func TestPushErrors(t *testing.T) {
	const secretPart = "s3cretPW"
	failing, _ := gateway(t, http.StatusInternalServerError)
	withCreds := strings.Replace(failing.URL, "http://", "http://ops:"+secretPart+"@", 1)

	tests := []struct {
		name     string
		url      string
		job      string
		wantText string
	}{
		{"gateway 500", failing.URL, "pwrotate", "500"},
		{"gateway 500 with credentials", withCreds, "pwrotate", "500"},
		{"empty", "", "pwrotate", "--pushgateway"},
		{"no scheme", "pushgateway:9091", "pwrotate", "--pushgateway"},
		{"ftp", "ftp://ops:" + secretPart + "@gw:21", "pwrotate", "--pushgateway"},
		{"no host", "http://ops:" + secretPart + "@/", "pwrotate", "--pushgateway"},
		{"query", "http://gw:9091/?token=" + secretPart, "pwrotate", "--pushgateway"},
		{"unparsable", "http://ops:" + secretPart + "@gw:port x/", "pwrotate", "--pushgateway"},
		{"credentials over http", "http://ops:" + secretPart + "@gw.example:9091", "pwrotate", "in clear over http"},
		{"user only over http", "http://ops@10.0.0.5:9091", "pwrotate", "in clear over http"},
		{"empty job", failing.URL, "", "job"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := NewRun().Push(context.Background(), tt.url, tt.job, nil, Final{})
			if err == nil {
				t.Fatal("Push succeeded, want an error")
			}
			if !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("error %q does not mention %q", err, tt.wantText)
			}
			if strings.Contains(err.Error(), secretPart) {
				t.Errorf("error leaks the URL's credentials: %q", err)
			}
		})
	}
}

// TestValidateURLCredentials: basic-auth credentials in a --pushgateway URL
// only over https, or over http to a loopback host (as --base-url).
func TestValidateURLCredentials(t *testing.T) {
	const secretPart = "s3cretPW"
	tests := []struct {
		url string
		ok  bool
	}{
		{"https://ops:" + secretPart + "@gw.example:9091", true},
		{"http://gw.example:9091", true},
		{"HTTP://ops:" + secretPart + "@gw.example:9091", false},
		{"http://ops:" + secretPart + "@gw.example:9091", false},
		{"http://ops:" + secretPart + "@10.0.0.5:9091/prefix", false},
		{"http://ops@gw.example", false},
		{"http://ops:" + secretPart + "@[fd00::1]:9091", false},
		{"http://ops:" + secretPart + "@localhost:9091", true},
		{"http://ops:" + secretPart + "@LOCALHOST.:9091", true},
		{"http://ops:" + secretPart + "@127.0.0.2:9091", true},
		{"http://ops:" + secretPart + "@[::1]:9091", true},
		{"http://ops:" + secretPart + "@localhost.example.com:9091", false},
	}
	for _, tt := range tests {
		t.Run(Redact(tt.url), func(t *testing.T) {
			err := ValidateURL(tt.url)
			if (err == nil) != tt.ok {
				t.Fatalf("ValidateURL: %v, want ok=%v", err, tt.ok)
			}
			if err != nil && (strings.Contains(err.Error(), secretPart) || !strings.Contains(err.Error(), "--pushgateway")) {
				t.Errorf("error %q leaks the credentials or does not name --pushgateway", err)
			}
		})
	}
}

func TestPushSendsURLCredentialsAsBasicAuth(t *testing.T) {
	srv, got := gateway(t, http.StatusAccepted)
	u := strings.Replace(srv.URL, "http://", "http://ops:pa%24s@", 1)
	if err := NewRun().Push(context.Background(), u, "pwrotate", nil, Final{Success: true}); err != nil {
		t.Fatalf("Push: %v", err)
	}
	p := <-got
	if p.user != "ops" || p.password != "pa$s" {
		t.Errorf("basic auth = %q/%q, want ops/pa$s", p.user, p.password)
	}
	if p.path != "/metrics/job/pwrotate" {
		t.Errorf("path = %q, want /metrics/job/pwrotate", p.path)
	}
}

// TestPushRedirects: a push follows a redirect only on the same host and
// never from https to http, so basic auth never crosses the network in
// clear (Go keeps Authorization on a redirect to the same host name) and
// the metrics never go to another host.
func TestPushRedirects(t *testing.T) {
	tests := []struct {
		name     string
		tls      bool   // the gateway the push is sent to is https
		target   string // where it redirects: "plain" (http, 127.0.0.1), "plain-other-host" (http, localhost), "self"
		wantPush bool   // the push reaches a gateway
	}{
		{"https to http on the same host", true, "plain", false},
		{"http to another host", false, "plain-other-host", false},
		{"https to https on the same host", true, "self", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			plain, toPlain := gateway(t, http.StatusAccepted)
			moved := make(chan pushed, 4)
			front := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
				if strings.HasPrefix(req.URL.Path, "/moved/") {
					u, p, _ := req.BasicAuth()
					moved <- pushed{method: req.Method, path: req.URL.EscapedPath(), user: u, password: p}
					w.WriteHeader(http.StatusAccepted)
					return
				}
				var to string
				switch tt.target {
				case "plain":
					to = plain.URL + req.URL.Path
				case "plain-other-host":
					to = strings.Replace(plain.URL, "127.0.0.1", "localhost", 1) + req.URL.Path
				case "self":
					to = "/moved" + req.URL.Path
				}
				http.Redirect(w, req, to, http.StatusTemporaryRedirect)
			}))
			if tt.tls {
				front.StartTLS()
			} else {
				front.Start()
			}
			t.Cleanup(front.Close)
			saved := pushTransport
			pushTransport = front.Client().Transport // trusts the test certificate
			t.Cleanup(func() { pushTransport = saved })

			u := strings.Replace(front.URL, "://", "://ops:s3cret-pw@", 1)
			err := NewRun().Push(context.Background(), u, "pwrotate", nil, Final{Success: true})
			var p pushed
			select {
			case p = <-toPlain:
			case p = <-moved:
			default:
			}
			switch {
			case p.method != "":
				if !tt.wantPush {
					t.Errorf("the push was redirected to %s (credentials %q/%q)", p.path, p.user, p.password)
				} else if p.user != "ops" || p.password != "s3cret-pw" {
					t.Errorf("basic auth = %q/%q on the same-host redirect", p.user, p.password)
				}
			case tt.wantPush:
				t.Errorf("the push did not arrive: %v", err)
			}
			if tt.wantPush != (err == nil) {
				t.Errorf("Push error = %v, want an error %v", err, !tt.wantPush)
			}
			if err != nil && strings.Contains(err.Error(), "s3cret-pw") {
				t.Errorf("the error %q holds the password", err)
			}
		})
	}
}

func TestPushContextCancelled(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		select {
		case <-release:
		case <-req.Context().Done():
		}
	}))
	t.Cleanup(func() { once.Do(func() { close(release) }); srv.Close() })

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	done := make(chan error, 1)
	go func() { done <- NewRun().Push(ctx, srv.URL, "pwrotate", nil, Final{}) }()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Push error = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Push did not return after its context was cancelled")
	}
}

func TestCountersConcurrent(t *testing.T) {
	r := NewRun()
	const goroutines, each = 8, 1000
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				r.Call("password", 200+g%2, nil)
				if i%10 == 0 {
					r.Retry("password")
					r.Call("custom", 0, nil)
				}
			}
		})
	}
	wg.Wait()
	if got, want := r.Calls(), int64(goroutines*each+goroutines*each/10); got != want {
		t.Errorf("Calls = %d, want %d", got, want)
	}
	if got, want := r.Retries(), int64(goroutines*each/10); got != want {
		t.Errorf("Retries = %d, want %d", got, want)
	}
	if got := r.calls[1][200].Load() + r.calls[1][201].Load(); got != goroutines*each {
		t.Errorf("password calls = %d, want %d", got, goroutines*each)
	}
	if got := r.otherCalls[callKey{"custom", 0}]; got != goroutines*each/10 {
		t.Errorf("custom calls = %d, want %d", got, goroutines*each/10)
	}
}

func TestCallDoesNotAllocate(t *testing.T) {
	r := NewRun()
	err := errors.New("boom")
	if n := testing.AllocsPerRun(1000, func() {
		r.Call("password", 200, nil)
		r.Call("reset", 0, err)
		r.Retry("me")
	}); n != 0 {
		t.Errorf("Call+Retry allocate %v times per run, want 0", n)
	}
}

func BenchmarkCall(b *testing.B) {
	r := NewRun()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r.Call("password", 200, nil)
		}
	})
}

// TestPushAPIKeys: with --rotate-api-keys the run pushes its API keys by
// state, and the read-backs and generates avoided; without it, none.
func TestPushAPIKeys(t *testing.T) {
	for _, keys := range []*APIKeys{nil, {Rotated: 38, NotRotated: 2, ReadBacks: 5, GeneratesAvoided: 3}} {
		srv, got := gateway(t, http.StatusOK)
		r := NewRun()
		final := Final{Counts: map[string]int{"updated": 40}, ExitCode: 2, APIKeys: keys}
		if err := r.Push(context.Background(), srv.URL, "pwrotate", nil, final); err != nil {
			t.Fatalf("Push: %v", err)
		}
		p := <-got
		if p.err != nil {
			t.Fatal(p.err)
		}
		mf, ok := p.families["pwrotate_api_keys"]
		if keys == nil {
			if ok || p.families["pwrotate_api_key_read_backs"] != nil {
				t.Errorf("API key metrics pushed without --rotate-api-keys")
			}
			continue
		}
		if !ok {
			t.Fatal("pwrotate_api_keys not pushed")
		}
		if s := fmt.Sprint(samples(mf)); s != "map[state=not_rotated:2 state=rotated:38]" {
			t.Errorf("pwrotate_api_keys = %s", s)
		}
		for name, want := range map[string]float64{"pwrotate_api_key_read_backs": 5, "pwrotate_api_key_generates_avoided": 3} {
			if mf := p.families[name]; mf == nil || samples(mf)[""] != want {
				t.Errorf("%s: %v, want %v", name, mf, want)
			}
		}
	}
}
