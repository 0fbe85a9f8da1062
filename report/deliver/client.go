package deliver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/flowcontrol"
	"k8s.io/client-go/util/homedir"
)

// Access says how to reach the cluster, as kubectl finds it: Kubeconfig
// (--kubeconfig), else the KUBECONFIG environment variable, else the pod's
// ServiceAccount, else ~/.kube/config. Context (--kube-context) picks a
// context of the kubeconfig; with it, the ServiceAccount is not tried.
type Access struct {
	Kubeconfig string
	Context    string
}

// Options tune a Client; the zero value of each field takes its default.
type Options struct {
	// RunID is recorded with each rotation on the Secret.
	RunID string
	// UserAgent is sent with every request.
	UserAgent string
	// Timeout bounds one request (default 30s).
	Timeout time.Duration
	// QPS and Burst pace every request to the API server, retries and
	// preflight included: a limit of its own, not the ECGrid one (default
	// 50 a second, burst 100).
	QPS   float64
	Burst int
	// MaxAttempts is the attempts per request, the first included, when the
	// API server answers other requests (default 5). While it answers none,
	// a request is retried until OutageLimit.
	MaxAttempts int
	// OutageLimit is the longest outage ridden out (default 60s): after
	// that long without any request succeeding, deliveries give up and
	// WaitReady returns ErrOutage.
	OutageLimit time.Duration
	// Workers is the requests in flight at most in Preflight and Due
	// (default 8).
	Workers int
	// Logger gets the start and end of outages and each failed delivery
	// (never a password).
	Logger *slog.Logger
	// Observe, when set, is told the outcome of each target's delivery:
	// OutcomeDelivered, OutcomeRefused or OutcomeUnreachable.
	Observe func(outcome string)
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Outcomes of a target's delivery, for Options.Observe (metrics).
const (
	OutcomeDelivered   = "delivered"   // the target holds the new password
	OutcomeRefused     = "refused"     // the API server refused the patch (forbidden, not found, rejected)
	OutcomeUnreachable = "unreachable" // no answer, or only errors, until the retries or OutageLimit ran out
	OutcomeCanceled    = "canceled"    // the run was interrupted first
)

// Client delivers passwords to the Secrets of a Map. It is safe for
// concurrent use.
type Client struct {
	m      *Map
	rest   rest.Interface
	source string
	opts   Options
	lim    *rate.Limiter
	log    *slog.Logger
	health health
	// probe is the Secret WaitReady asks about during an outage (one that
	// passed the preflight); zero before.
	probeMu sync.Mutex
	probe   secretRef
	probing sync.Mutex // held by the one WaitReady that is asking
}

// ErrNoCluster means no way to reach a cluster was found.
var ErrNoCluster = errors.New("no Kubernetes cluster configured: give --kubeconfig, set KUBECONFIG, run in a pod with a ServiceAccount token, or create ~/.kube/config")

// New returns a Client for the targets of m on the cluster acc finds. It
// reads the configuration but sends nothing.
func New(m *Map, acc Access, opts Options) (*Client, error) {
	cfg, source, err := restConfig(acc)
	if err != nil {
		return nil, err
	}
	return newClient(m, cfg, source, opts)
}

func newClient(m *Map, cfg *rest.Config, source string, opts Options) (*Client, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = 30 * time.Second
	}
	if opts.QPS <= 0 {
		opts.QPS = 50
	}
	if opts.Burst <= 0 {
		opts.Burst = 100
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = 5
	}
	if opts.OutageLimit <= 0 {
		opts.OutageLimit = 60 * time.Second
	}
	if opts.Workers <= 0 {
		opts.Workers = 8
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Observe == nil {
		opts.Observe = func(string) {}
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	opts.RunID = cleanRunID(opts.RunID)
	cfg = rest.CopyConfig(cfg)
	cfg.Timeout = opts.Timeout
	// Pacing and retries are this package's (lim, retry): client-go's own
	// limiter would pace twice.
	cfg.RateLimiter = flowcontrol.NewFakeAlwaysRateLimiter()
	if opts.UserAgent != "" {
		cfg.UserAgent = opts.UserAgent
	}
	cfg.WarningHandler = rest.NoWarnings{}
	cfg.GroupVersion = &schema.GroupVersion{Version: "v1"}
	cfg.APIPath = "/api"
	cfg.NegotiatedSerializer = codecs().WithoutConversion()
	rc, err := rest.RESTClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client (%s): %w", source, err)
	}
	c := &Client{
		m: m, rest: rc, source: source, opts: opts,
		lim: rate.NewLimiter(rate.Limit(opts.QPS), opts.Burst),
		log: opts.Logger,
	}
	c.health.now = opts.Now
	return c, nil
}

// SetRunID sets the run recorded with each rotation (Options.RunID). Call it
// before any request: a resumed run takes the ID its first run recorded.
func (c *Client) SetRunID(id string) { c.opts.RunID = cleanRunID(id) }

// Source says where the cluster's configuration came from, for the plan:
// "kubeconfig FILE (context NAME)" or "in-cluster ServiceAccount".
func (c *Client) Source() string { return c.source }

// Map returns the client's targets.
func (c *Client) Map() *Map { return c.m }

// codecs decode what the client reads: the API server's Status answers
// (the rest is read raw).
// Made on first use: a run without --deliver does not pay for it.
var codecs = sync.OnceValue(func() serializer.CodecFactory {
	s := runtime.NewScheme()
	metav1.AddToGroupVersion(s, schema.GroupVersion{Version: "v1"})
	return serializer.NewCodecFactory(s)
})

// serviceAccountDir is where a pod's ServiceAccount token is mounted.
var serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// restConfig finds the cluster as Access says.
func restConfig(acc Access) (*rest.Config, string, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	var source string
	switch {
	case acc.Kubeconfig != "":
		rules.ExplicitPath = acc.Kubeconfig
		rules.Precedence = nil
		source = "kubeconfig " + acc.Kubeconfig
	case os.Getenv(clientcmd.RecommendedConfigPathEnvVar) != "":
		source = "kubeconfig from KUBECONFIG"
	case acc.Context == "" && os.Getenv("KUBERNETES_SERVICE_HOST") != "":
		if _, err := os.Stat(filepath.Join(serviceAccountDir, "token")); err != nil {
			return nil, "", fmt.Errorf("in a pod, but no ServiceAccount token at %s (automountServiceAccountToken false and no projected token?): %w", serviceAccountDir, err)
		}
		cfg, err := rest.InClusterConfig()
		if err != nil {
			return nil, "", fmt.Errorf("in-cluster ServiceAccount: %w", err)
		}
		return cfg, "in-cluster ServiceAccount", nil
	default:
		// Not clientcmd.RecommendedHomeFile: that is fixed when the
		// program starts.
		home := filepath.Join(homedir.HomeDir(), clientcmd.RecommendedHomeDir, clientcmd.RecommendedFileName)
		rules.Precedence = []string{home}
		source = "kubeconfig " + home
	}
	raw, err := rules.Load()
	if err != nil {
		return nil, "", fmt.Errorf("reading the %s: %w", source, err)
	}
	overrides := &clientcmd.ConfigOverrides{CurrentContext: acc.Context}
	context := acc.Context
	if context == "" {
		context = raw.CurrentContext
	}
	if context != "" {
		source += " (context " + context + ")"
	}
	cfg, err := clientcmd.NewNonInteractiveClientConfig(*raw, acc.Context, overrides, rules).ClientConfig()
	if err != nil {
		if clientcmd.IsEmptyConfig(err) {
			return nil, "", fmt.Errorf("%s: %w", source, ErrNoCluster)
		}
		return nil, "", fmt.Errorf("%s: %w", source, err)
	}
	return cfg, source, nil
}

// errKind is how a failed request is handled.
type errKind int

const (
	kindFinal     errKind = iota // the answer for this Secret: not retried
	kindConflict                 // 409: retried
	kindBusy                     // 429, 5xx: retried; the server is refusing
	kindDown                     // no answer (transport, timeout): retried; the server is unreachable
	kindAuth                     // 401: the credentials are refused
	kindForbidden                // 403: RBAC (or an authorization webhook) refuses
	kindCert                     // the server's certificate is not trusted: not retried
)

// classify sorts a request's error, and returns the delay the server asked
// for, if any.
func classify(err error) (errKind, time.Duration) {
	var st apierrors.APIStatus
	if errors.As(err, &st) {
		code := int(st.Status().Code)
		var after time.Duration
		if s, ok := apierrors.SuggestsClientDelay(err); ok && s > 0 {
			after = time.Duration(s) * time.Second
		}
		switch {
		case code == 401:
			return kindAuth, 0
		case code == 403:
			return kindForbidden, 0
		case code == 409:
			return kindConflict, after
		case code == 429 || code >= 500:
			return kindBusy, after
		case code == 0:
			return kindDown, after
		default:
			return kindFinal, 0
		}
	}
	var (
		unknownCA *x509.UnknownAuthorityError
		invalid   x509.CertificateInvalidError
		hostname  x509.HostnameError
		verify    *tls.CertificateVerificationError
	)
	if errors.As(err, &unknownCA) || errors.As(err, &invalid) || errors.As(err, &hostname) || errors.As(err, &verify) {
		return kindCert, 0
	}
	return kindDown, 0
}

// reason is a short, secret-free description of a refusal for the plan and
// results: "not found", "forbidden: ...", "rejected: ...".
func reason(err error) string {
	var st apierrors.APIStatus
	if errors.As(err, &st) {
		msg := oneLine(st.Status().Message)
		switch {
		case apierrors.IsNotFound(err):
			return "not found"
		case apierrors.IsForbidden(err):
			return "forbidden: " + msg
		case apierrors.IsUnauthorized(err):
			return "unauthorized: " + msg
		default:
			return fmt.Sprintf("rejected (HTTP %d): %s", st.Status().Code, msg)
		}
	}
	return oneLine(err.Error())
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

// backoff is the wait before retry attempt n (1 = the first retry):
// exponential with full jitter from 250ms, at most 4s, or the server's
// delay if it asked for one (at most 30s).
func backoff(n int, after time.Duration) time.Duration {
	if after > 0 {
		return min(after, 30*time.Second)
	}
	ceil := 250 * time.Millisecond << min(n-1, 5)
	ceil = min(ceil, 4*time.Second)
	return time.Duration(rand.Int64N(int64(ceil))) + 50*time.Millisecond
}

// call sends one request, paced, and retries it as classify says: 409,
// 429, 5xx and transport errors up to MaxAttempts, and while the API server
// is down (no request succeeds) until OutageLimit. It returns the last
// error and the attempts made.
//
// With passed set (a request the preflight has shown to be allowed), 401
// and 403 are the API server refusing as a whole, and retried like a 503:
// a restarted API server refuses requests until its authentication and
// RBAC caches are filled, and credentials or RBAC taken away mid-run refuse
// every further delivery. Without it (preflight, Due), they are answers.
func (c *Client) call(ctx context.Context, what string, passed bool, send func(ctx context.Context) error) (int, error) {
	for attempt := 1; ; attempt++ {
		if err := c.lim.Wait(ctx); err != nil {
			return attempt - 1, err
		}
		err := send(ctx)
		if err == nil {
			c.health.ok(c.log)
			return attempt, nil
		}
		if ctx.Err() != nil {
			return attempt, ctx.Err()
		}
		kind, after := classify(err)
		if passed && (kind == kindAuth || kind == kindForbidden) {
			kind = kindBusy
		}
		switch kind {
		case kindFinal, kindForbidden:
			// An answer about this Secret: the API server is up.
			c.health.ok(c.log)
			return attempt, err
		case kindCert, kindAuth:
			return attempt, err
		case kindBusy, kindDown:
			c.health.fail(c.log, err)
		}
		down := c.health.downFor()
		if down >= c.opts.OutageLimit {
			return attempt, fmt.Errorf("%w: %w", ErrOutage, err)
		}
		if attempt >= c.opts.MaxAttempts && down == 0 {
			return attempt, err
		}
		d := backoff(attempt, after)
		if down > 0 {
			// Give up when the outage reaches its limit, not a backoff later.
			d = min(d, c.opts.OutageLimit-down+10*time.Millisecond)
		}
		c.log.Debug("kubernetes API: retrying", "what", what, "attempt", attempt, "in", d, "err", reason(err))
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return attempt, ctx.Err()
		case <-t.C:
		}
	}
}

// patch sends a JSON merge patch to a Secret and asks only for its
// metadata back (the Secret's data never travels back to pwrotate).
func (c *Client) patch(ctx context.Context, ref secretRef, body []byte, dryRun bool) error {
	req := c.rest.Patch(types.MergePatchType).
		Namespace(ref.ns).Resource("secrets").Name(ref.name).
		SetHeader("Accept", metadataOnly).
		MaxRetries(0).
		Body(body)
	if dryRun {
		req = req.Param("dryRun", "All")
	}
	_, err := raw(req.Do(ctx))
	return err
}

// raw returns a result's body, or its error with the API server's Status
// (reason, message, Retry-After) when it sent one.
func raw(res rest.Result) ([]byte, error) {
	body, plain := res.Raw() // plain: the error client-go made from the status line and headers
	err := res.Error()
	if err == nil {
		return body, nil
	}
	// The Status in the body may lack the Retry-After the header gave.
	var st *apierrors.StatusError
	if errors.As(err, &st) {
		if _, ok := apierrors.SuggestsClientDelay(err); !ok {
			if s, ok := apierrors.SuggestsClientDelay(plain); ok {
				if st.ErrStatus.Details == nil {
					st.ErrStatus.Details = &metav1.StatusDetails{}
				}
				st.ErrStatus.Details.RetryAfterSeconds = int32(s)
			}
		}
	}
	return nil, err
}

// metadataOnly asks the API server for an object's metadata alone.
const metadataOnly = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"

// getMeta reads a Secret's metadata (not its data).
func (c *Client) getMeta(ctx context.Context, ref secretRef) ([]byte, error) {
	return raw(c.rest.Get().
		Namespace(ref.ns).Resource("secrets").Name(ref.name).
		SetHeader("Accept", metadataOnly).
		MaxRetries(0).
		Do(ctx))
}
