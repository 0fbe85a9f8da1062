// Package metrics counts a run's API calls and retries and, at the end of the
// run (or on interruption), pushes them with the run's outcome to a
// Prometheus Pushgateway.
//
// The counters are plain atomics on the hot path; the Prometheus registry is
// private to each Push and is never the global one, so nothing is exposed
// over HTTP and two runs in one process do not mix.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/push"
)

// PushTimeout bounds one Push when ctx carries no earlier deadline.
const PushTimeout = 30 * time.Second

// Statuses are the record statuses that Push always reports (as 0 when
// absent from Final.Counts), so that alerts see a series for each.
var Statuses = []string{"updated", "failed", "invalid", "skipped", "pending"}

// endpoints are the API endpoints counted without locks; others fall back
// to a map under a mutex.
var endpoints = [...]string{"me", "password", "reset"}

// maxCode bounds the status codes counted without locks; index 0 is a
// transport error (no HTTP status).
const maxCode = 600

func endpointIndex(endpoint string) int {
	for i, e := range endpoints {
		if e == endpoint {
			return i
		}
	}
	return -1
}

type callKey struct {
	endpoint string
	code     int
}

// Run counts the API calls and retries of one run. It is safe for concurrent
// use; Call and Retry on the known endpoints ("me", "password", "reset") are
// a few atomic additions and never allocate.
type Run struct {
	calls   [len(endpoints)][maxCode]atomic.Int64
	retries [len(endpoints)]atomic.Int64

	totalCalls   atomic.Int64
	totalRetries atomic.Int64

	mu           sync.Mutex
	otherCalls   map[callKey]int64
	otherRetries map[string]int64
	deliveries   map[string]int64 // by outcome

	now func() time.Time
}

// NewRun returns a Run with every counter at zero.
func NewRun() *Run {
	return &Run{
		otherCalls:   map[callKey]int64{},
		otherRetries: map[string]int64{},
		deliveries:   map[string]int64{},
		now:          time.Now,
	}
}

// Call counts one HTTP attempt on endpoint ("me", "password" or "reset").
// httpStatus is the answer's status code, or 0 when no answer came (timeout,
// transport error): it is then counted with code "error". err is accepted so
// that callers can pass their attempt's outcome as is; the label depends on
// httpStatus alone.
func (r *Run) Call(endpoint string, httpStatus int, err error) {
	_ = err
	r.totalCalls.Add(1)
	if i := endpointIndex(endpoint); i >= 0 && httpStatus >= 0 && httpStatus < maxCode {
		r.calls[i][httpStatus].Add(1)
		return
	}
	r.mu.Lock()
	r.otherCalls[callKey{endpoint, httpStatus}]++
	r.mu.Unlock()
}

// Retry counts one retry on endpoint (an attempt after the first).
func (r *Run) Retry(endpoint string) {
	r.totalRetries.Add(1)
	if i := endpointIndex(endpoint); i >= 0 {
		r.retries[i].Add(1)
		return
	}
	r.mu.Lock()
	r.otherRetries[endpoint]++
	r.mu.Unlock()
}

// Delivery counts one target's delivery to a Kubernetes Secret (--deliver)
// by its outcome: delivered, refused, unreachable or canceled.
func (r *Run) Delivery(outcome string) {
	r.mu.Lock()
	r.deliveries[outcome]++
	r.mu.Unlock()
}

// Deliveries returns the deliveries counted so far with outcome.
func (r *Run) Deliveries(outcome string) int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.deliveries[outcome]
}

// Calls returns the number of HTTP attempts counted so far, all endpoints.
func (r *Run) Calls() int64 { return r.totalCalls.Load() }

// Retries returns the number of retries counted so far, all endpoints.
func (r *Run) Retries() int64 { return r.totalRetries.Load() }

// Answers returns the number of HTTP attempts answered with httpStatus so
// far, all endpoints (Answers(429): the calls the server rate-limited).
func (r *Run) Answers(httpStatus int) int64 {
	var n int64
	if httpStatus >= 0 && httpStatus < maxCode {
		for i := range r.calls {
			n += r.calls[i][httpStatus].Load()
		}
	}
	r.mu.Lock()
	for k, v := range r.otherCalls {
		if k.code == httpStatus {
			n += v
		}
	}
	r.mu.Unlock()
	return n
}

// Final is the outcome of a run, pushed along with the counters.
type Final struct {
	// Counts holds the records by status: updated, failed, invalid, skipped,
	// pending (and planned in a dry run).
	Counts map[string]int
	// Duration is the run's wall-clock duration.
	Duration time.Duration
	// AchievedRate is the API calls per second achieved over the run.
	AchievedRate float64
	// ExitCode is the process exit code.
	ExitCode int
	// Interrupted reports whether a signal stopped the run.
	Interrupted bool
	// Success reports exit code 0; only then is
	// pwrotate_last_success_timestamp_seconds pushed.
	Success bool
	// CompletedAt, when set, is when the rotation really ended (a re-run of
	// a complete folder pushes the folder's time, not now), for
	// pwrotate_last_success_timestamp_seconds.
	CompletedAt time.Time
	// APIKeys, with --rotate-api-keys, counts the API keys rotated and not
	// rotated (summary.json apiKeys); nil without it.
	APIKeys *APIKeys
}

// APIKeys counts a run's API key rotation, for Final.
type APIKeys struct {
	// Rotated counts the users whose new key is sealed.
	Rotated int
	// NotRotated counts the updated users whose key was not rotated.
	NotRotated int
	// ReadBacks counts the keys read back to settle a lost answer.
	ReadBacks int
	// GeneratesAvoided counts the read-backs that found the key replaced by
	// the one an unreadable key-generate answer held.
	GeneratesAvoided int
}

// Push sends the run's metrics to the Pushgateway at rawURL (http or https,
// the --pushgateway flag) under job and the grouping labels.
//
// Push uses the Pushgateway's POST ("Add") method, not PUT: POST replaces only
// the metric names it carries within the group. A failed or interrupted run
// does not push pwrotate_last_success_timestamp_seconds, so the value pushed by
// the last successful run stays in the gateway and "time since last success"
// alerts keep working.
//
// Credentials in the URL's userinfo are sent as HTTP basic auth (refused
// over plain http except to a loopback host) and never appear in an error. Push gives up when ctx is done, and after PushTimeout.
// On interruption, pass a context that is not the cancelled run context
// (for example context.WithoutCancel with a short timeout).
func (r *Run) Push(ctx context.Context, rawURL, job string, grouping map[string]string, f Final) error {
	base, user, err := parsePushURL(rawURL)
	if err != nil {
		return err
	}
	if job == "" {
		return errors.New("pushing metrics: job name is empty")
	}

	reg := prometheus.NewRegistry()
	if err := reg.Register(&counters{run: r}); err != nil {
		return fmt.Errorf("pushing metrics: registering counters: %w", err)
	}
	if err := r.registerFinal(reg, f); err != nil {
		return fmt.Errorf("pushing metrics: registering gauges: %w", err)
	}

	ctx, cancel := context.WithTimeout(ctx, PushTimeout)
	defer cancel()

	hc := &http.Client{Timeout: PushTimeout, Transport: pushTransport, CheckRedirect: checkPushRedirect}
	p := push.New(base, job).Gatherer(reg).Client(hc)
	names := make([]string, 0, len(grouping))
	for k := range grouping {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		p = p.Grouping(k, grouping[k])
	}
	if user != nil {
		pw, _ := user.Password()
		p = p.BasicAuth(user.Username(), pw)
	}
	if err := p.AddContext(ctx); err != nil {
		// The push error names the gateway URL, which carries no userinfo.
		return fmt.Errorf("pushing metrics: %w", err)
	}
	return nil
}

// pushTransport carries the pushes: the default transport, with the proxy
// from the environment except for a loopback host (Go's exempts only
// "localhost" and loopback IPs; basic auth to "LOCALHOST" over plain http
// would otherwise go to HTTP_PROXY in clear). Tests replace it to trust
// their TLS server.
var pushTransport http.RoundTripper = func() http.RoundTripper {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = func(req *http.Request) (*url.URL, error) {
		if isLoopback(req.URL.Hostname()) {
			return nil, nil
		}
		return http.ProxyFromEnvironment(req)
	}
	return t
}()

// maxPushRedirects bounds the redirects a push follows.
const maxPushRedirects = 10

// checkPushRedirect follows a redirect of a push only to the same host
// (name and port) and, from https, only to https: Go keeps the
// Authorization header on a redirect to the same host name, so a redirect
// from https to http would send the basic auth credentials in clear, and
// one to another host would send the metrics there.
func checkPushRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= maxPushRedirects {
		return fmt.Errorf("stopped after %d redirects", maxPushRedirects)
	}
	first := via[0].URL
	switch {
	case first.Scheme == "https" && req.URL.Scheme != "https":
		return fmt.Errorf("refusing a redirect from https to %s: it would send the credentials in clear", req.URL.Scheme)
	case !strings.EqualFold(req.URL.Host, first.Host):
		return fmt.Errorf("refusing a redirect to another host (%s, not %s)", req.URL.Host, first.Host)
	}
	return nil
}

// ValidateURL checks a --pushgateway URL without pushing anything: http or
// https, a host, no query or fragment, and credentials (user:password@)
// only over https or to a loopback host.
func ValidateURL(rawURL string) error {
	_, _, err := parsePushURL(rawURL)
	return err
}

// Redact returns rawURL without its userinfo, for logs.
func Redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "(invalid URL)"
	}
	return u.Redacted()
}

// parsePushURL checks rawURL and splits off its userinfo. The returned base
// carries no credentials; errors never quote rawURL (it may hold a password).
func parsePushURL(rawURL string) (base string, user *url.Userinfo, err error) {
	if rawURL == "" {
		return "", nil, errors.New("--pushgateway: empty URL")
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		// url.Parse errors quote the whole input: do not wrap them.
		return "", nil, errors.New("--pushgateway: not a valid URL")
	}
	user = u.User
	u.User = nil
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return "", nil, fmt.Errorf("--pushgateway %s: scheme must be http or https", u.Redacted())
	case u.Host == "":
		return "", nil, fmt.Errorf("--pushgateway %s: no host", u.Redacted())
	case u.RawQuery != "" || u.Fragment != "":
		u.RawQuery, u.Fragment = "", ""
		return "", nil, fmt.Errorf("--pushgateway %s: a query or fragment is not allowed", u.Redacted())
	case user != nil && u.Scheme == "http" && !isLoopback(u.Hostname()):
		// Basic auth over plain http crosses the network in clear, as
		// --base-url refuses for the API key.
		return "", nil, fmt.Errorf("--pushgateway %s: credentials (user:password@) are sent in clear over http: use https, or http only to a loopback host", u.Redacted())
	}
	return u.String(), user, nil
}

// isLoopback reports whether host is "localhost" or a loopback IP address
// (as --base-url allows plain http to).
func isLoopback(host string) bool {
	if strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// registerFinal registers the gauges that describe the run's outcome.
func (r *Run) registerFinal(reg *prometheus.Registry, f Final) error {
	records := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "pwrotate_records",
		Help: "Input records by status at the end of the run.",
	}, []string{"status"})
	for _, s := range Statuses {
		records.WithLabelValues(s).Set(0)
	}
	for s, n := range f.Counts {
		g, err := records.GetMetricWithLabelValues(s)
		if err != nil {
			return fmt.Errorf("record status %q: %w", s, err)
		}
		g.Set(float64(n))
	}

	now := r.now()
	stamp := float64(now.UnixNano()) / 1e9
	gauge := func(name, help string, v float64) prometheus.Gauge {
		g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
		g.Set(v)
		return g
	}
	cs := []prometheus.Collector{
		records,
		gauge("pwrotate_run_duration_seconds", "Wall-clock duration of the run.", f.Duration.Seconds()),
		gauge("pwrotate_achieved_rate_calls_per_second", "API calls per second achieved over the run.", f.AchievedRate),
		gauge("pwrotate_exit_code", "Exit code of the run.", float64(f.ExitCode)),
		gauge("pwrotate_interrupted", "1 if a signal interrupted the run, else 0.", boolFloat(f.Interrupted)),
		gauge("pwrotate_last_run_timestamp_seconds", "Unix time at which the run ended.", stamp),
	}
	if k := f.APIKeys; k != nil {
		keys := prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pwrotate_api_keys",
			Help: "API keys at the end of the run (--rotate-api-keys): rotated (sealed) or not_rotated (failed or owed).",
		}, []string{"state"})
		keys.WithLabelValues("rotated").Set(float64(k.Rotated))
		keys.WithLabelValues("not_rotated").Set(float64(k.NotRotated))
		cs = append(cs, keys,
			gauge("pwrotate_api_key_read_backs", "API keys read back to settle a lost key-generate answer, this run.", float64(k.ReadBacks)),
			gauge("pwrotate_api_key_generates_avoided", "Read-backs that found the key replaced by the one an unreadable key-generate answer held (a second generation avoided), this run.", float64(k.GeneratesAvoided)))
	}
	if f.Success {
		success := stamp
		if !f.CompletedAt.IsZero() {
			success = float64(f.CompletedAt.UnixNano()) / 1e9
		}
		cs = append(cs, gauge("pwrotate_last_success_timestamp_seconds",
			"Unix time at which the last successful run (exit code 0) ended.", success))
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

var (
	callsDesc = prometheus.NewDesc("pwrotate_api_calls_total",
		"HTTP attempts to the ECGrid API by endpoint and status code (\"error\": no answer).",
		[]string{"endpoint", "code"}, nil)
	retriesDesc = prometheus.NewDesc("pwrotate_retries_total",
		"Retries of ECGrid API calls by endpoint.",
		[]string{"endpoint"}, nil)
	deliveriesDesc = prometheus.NewDesc("pwrotate_deliveries_total",
		"Deliveries of new passwords to Kubernetes Secret keys (--deliver) by outcome: delivered, refused, unreachable, canceled.",
		[]string{"outcome"}, nil)
)

// counters exports a Run's atomic counters as Prometheus counters.
type counters struct{ run *Run }

// Describe implements prometheus.Collector.
func (c *counters) Describe(ch chan<- *prometheus.Desc) {
	ch <- callsDesc
	ch <- retriesDesc
	ch <- deliveriesDesc
}

// Collect implements prometheus.Collector.
func (c *counters) Collect(ch chan<- prometheus.Metric) {
	r := c.run
	for i, ep := range endpoints {
		for code := range r.calls[i] {
			if n := r.calls[i][code].Load(); n > 0 {
				ch <- constCounter(callsDesc, float64(n), ep, codeLabel(code))
			}
		}
		if n := r.retries[i].Load(); n > 0 {
			ch <- constCounter(retriesDesc, float64(n), ep)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, n := range r.otherCalls {
		ch <- constCounter(callsDesc, float64(n), k.endpoint, codeLabel(k.code))
	}
	for ep, n := range r.otherRetries {
		ch <- constCounter(retriesDesc, float64(n), ep)
	}
	for outcome, n := range r.deliveries {
		ch <- constCounter(deliveriesDesc, float64(n), outcome)
	}
}

func codeLabel(code int) string {
	if code == 0 {
		return "error"
	}
	return strconv.Itoa(code)
}

// constCounter builds a counter sample; an invalid label value (not UTF-8)
// becomes an invalid metric, which fails the push instead of panicking.
func constCounter(desc *prometheus.Desc, v float64, labels ...string) prometheus.Metric {
	m, err := prometheus.NewConstMetric(desc, prometheus.CounterValue, v, labels...)
	if err != nil {
		return prometheus.NewInvalidMetric(desc, err)
	}
	return m
}
