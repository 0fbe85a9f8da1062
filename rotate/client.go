// Package rotate holds the ECGrid REST v2 client used to change passwords
// (with retries, backoff and tolerant error decoding) and the generator and
// policy check for the passwords it sends.
//
// The client never logs, returns or follows anything that could carry a
// secret elsewhere: the API key goes only into the X-API-Key header of
// requests to the base URL (redirects are never followed), and a password
// only into the body of its change request. Error messages are one short
// line with any echo of the key or password removed.
package rotate

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"pwrotate/rotate/secret"
)

// Defaults of Config.
const (
	DefaultTimeout     = 30 * time.Second
	DefaultMaxAttempts = 5
	DefaultBackoffBase = 250 * time.Millisecond
	DefaultBackoffMax  = 30 * time.Second
	userAgent          = "pwrotate"
)

// Pacer spaces out the client's requests; one Pacer is shared by every
// caller of a run.
type Pacer interface {
	// Wait blocks until the next request may be sent. It is called once
	// before every attempt of every call (retries, resets and the
	// preflight count). An error (ctx cancelled) stops the call.
	Wait(ctx context.Context) error
	// Throttle reports a 429 or RateLimitExceeded answer, or a retryable
	// answer with a Retry-After header, with the Retry-After delay (0 if
	// none): the pacer slows every caller.
	Throttle(retryAfter time.Duration)
}

// Confirmer is a Pacer that also learns of every answer the server did not
// throttle (any status but a 429 or RateLimitExceeded, or a retryable
// answer with a Retry-After): the rate the server accepts, which an
// adaptive Pacer measures.
type Confirmer interface {
	Pacer
	// Confirm reports one such answer. It must not block.
	Confirm()
}

// Observer receives the client's metrics. Its methods must be safe for
// concurrent use and must not block.
type Observer interface {
	// Call reports one attempt at endpoint ("me", "password" or
	// "reset"): the HTTP status (0 if no answer) and the attempt's error
	// (nil on success), whose message is safe to print.
	Call(endpoint string, httpStatus int, err error)
	// Retry reports that a call to endpoint will be attempted again.
	Retry(endpoint string)
}

// Config configures a Client. Zero values take the documented defaults.
type Config struct {
	BaseURL     string        // API root, validated by ValidateBaseURL
	APIKey      string        // sent as X-API-Key; surrounding white space is trimmed
	HTTPClient  *http.Client  // nil: &http.Client{Transport: NewTransport(Workers)}; redirects are never followed either way
	Workers     int           // sizes the default transport's connection pool
	Timeout     time.Duration // one attempt, answer body included (default 30s)
	MaxAttempts int           // per call, the first included (default 5)
	BackoffBase time.Duration // full-jitter exponential backoff base (default 250ms)
	BackoffMax  time.Duration // backoff cap (default 30s)
	Pacer       Pacer         // nil: no pacing
	Observer    Observer      // nil: no metrics
	Logger      *slog.Logger  // nil: discard; retries are logged at Debug
}

// Client calls the ECGrid REST v2 API. It is safe for concurrent use.
type Client struct {
	base        *url.URL
	key         string
	hc          *http.Client
	timeout     time.Duration
	maxAttempts int
	backoffBase time.Duration
	backoffMax  time.Duration
	pacer       Pacer
	confirmer   Confirmer // pacer, when it is one
	obs         Observer
	log         *slog.Logger
	now         func() time.Time
	// Built once by New, so that a request does not build them again.
	urlMe       string      // the URL of GET /v2/users/me
	urlPassword string      // the URL of POST /v2/users/password
	hdrGet      http.Header // headers of a request without body
	hdrPost     http.Header // headers of a request with a JSON body
}

// Outcome is the result of one call, after its retries.
type Outcome struct {
	OK          bool   // the server confirmed the call
	Attempts    int    // requests sent (attempts made), retries included
	HTTPStatus  int    // status of the last answer received (0: none)
	ErrorCode   string // ECGrid errorCode or RFC 7807 title of the last answer, sanitized; "" if none
	Unknown     bool   // not OK, and some attempt may have been applied without us seeing the answer
	Fatal       bool   // 401/403, InvalidAPIKey/AccessDenied, or a server certificate that fails verification: the whole run must stop
	Interrupted bool   // ctx was cancelled before a final answer: record no final outcome
	Err         error  // nil when OK; one line of at most 200 bytes, never a secret or raw HTML
}

// New checks cfg and returns a Client.
func New(cfg Config) (*Client, error) {
	base, err := ValidateBaseURL(cfg.BaseURL)
	if err != nil {
		return nil, err
	}
	key := strings.TrimSpace(cfg.APIKey)
	if key == "" {
		return nil, errors.New("api key: empty")
	}
	if len(key) < MinAPIKeyLength {
		// A key this short cannot be kept out of messages: scrubbing it
		// would mangle every text that happens to contain it, and show it.
		return nil, fmt.Errorf("api key: %d characters, too short to be an ECGrid API key (at least %d)", len(key), MinAPIKeyLength)
	}
	for i := 0; i < len(key); i++ {
		if key[i] < 0x21 || key[i] > 0x7e {
			return nil, fmt.Errorf("api key: character %d is not printable ASCII", i+1)
		}
	}
	c := &Client{
		base:        base,
		key:         key,
		timeout:     cfg.Timeout,
		maxAttempts: cfg.MaxAttempts,
		backoffBase: cfg.BackoffBase,
		backoffMax:  cfg.BackoffMax,
		pacer:       cfg.Pacer,
		obs:         cfg.Observer,
		log:         cfg.Logger,
		now:         time.Now,
	}
	c.confirmer, _ = cfg.Pacer.(Confirmer)
	switch {
	case c.timeout < 0:
		return nil, fmt.Errorf("--timeout %s: must be positive", c.timeout)
	case c.timeout == 0:
		c.timeout = DefaultTimeout
	}
	switch {
	case c.maxAttempts < 0:
		return nil, fmt.Errorf("--max-attempts %d: must be at least 1", c.maxAttempts)
	case c.maxAttempts == 0:
		c.maxAttempts = DefaultMaxAttempts
	}
	if c.backoffBase < 0 || c.backoffMax < 0 {
		return nil, errors.New("backoff: durations must not be negative")
	}
	if c.backoffBase == 0 {
		c.backoffBase = DefaultBackoffBase
	}
	if c.backoffMax == 0 {
		c.backoffMax = max(DefaultBackoffMax, c.backoffBase)
	}
	if c.backoffMax < c.backoffBase {
		return nil, fmt.Errorf("backoff: max %s is below base %s", c.backoffMax, c.backoffBase)
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if cfg.HTTPClient != nil {
		hc := *cfg.HTTPClient
		c.hc = &hc
	} else {
		c.hc = &http.Client{Transport: NewTransport(cfg.Workers)}
	}
	// Never follow a redirect: the API key must not go to another host.
	c.hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	c.urlMe = c.endpointURL("/v2/users/me")
	c.urlPassword = c.endpointURL("/v2/users/password")
	c.hdrGet = http.Header{
		"X-Api-Key":  {c.key},
		"Accept":     {"application/json"},
		"User-Agent": {userAgent},
	}
	c.hdrPost = c.hdrGet.Clone()
	c.hdrPost["Content-Type"] = []string{"application/json"}
	return c, nil
}

// Timeout returns how long one attempt may take (Config.Timeout).
func (c *Client) Timeout() time.Duration { return c.timeout }

// MaxAttempts returns the attempts a call may make, the first included
// (Config.MaxAttempts).
func (c *Client) MaxAttempts() int { return c.maxAttempts }

// endpointURL returns the URL of the API path p under the base URL.
func (c *Client) endpointURL(p string) string {
	u := *c.base
	u.Path = strings.TrimSuffix(u.Path, "/") + p
	u.RawPath = ""
	return u.String()
}

// ValidateBaseURL checks a --base-url: an absolute https URL, or http to a
// loopback host (127.0.0.0/8, ::1, "localhost"), with no user info, query
// or fragment. The error names --base-url and never echoes user info.
func ValidateBaseURL(raw string) (*url.URL, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return nil, errors.New("--base-url: empty")
	}
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // url.Error repeats the whole URL
		}
		return nil, fmt.Errorf("--base-url: not a URL: %w", err)
	}
	if u.User != nil {
		return nil, errors.New("--base-url: must not hold user info (credentials); the API key comes from --api-key-file or ECGRID_API_KEY")
	}
	if u.Opaque != "" || u.Host == "" || u.Hostname() == "" {
		return nil, errors.New("--base-url: must be an absolute URL such as https://rest.ecgrid.io")
	}
	if u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return nil, fmt.Errorf("--base-url %s: must not have a query or fragment", u.Host)
	}
	switch strings.ToLower(u.Scheme) {
	case "https":
	case "http":
		if !isLoopback(u.Hostname()) {
			return nil, fmt.Errorf("--base-url: http is allowed only to a loopback host, not %q: use https", u.Hostname())
		}
	default:
		return nil, fmt.Errorf("--base-url: scheme %q: must be https", u.Scheme)
	}
	u.Scheme = strings.ToLower(u.Scheme)
	return u, nil
}

// isLoopback reports whether host is "localhost" or a loopback IP address.
func isLoopback(host string) bool {
	if strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// noProxyToLoopback returns proxy (an http.Transport's Proxy, such as
// http.ProxyFromEnvironment), except that a request to a loopback host, as
// --base-url allows plain http to, never goes through a proxy. Go's
// environment proxy exempts only "localhost" and loopback IPs: the aliases
// "localhost." and "LOCALHOST" would otherwise send the API key and the
// passwords in clear to HTTP_PROXY.
func noProxyToLoopback(proxy func(*http.Request) (*url.URL, error)) func(*http.Request) (*url.URL, error) {
	return func(req *http.Request) (*url.URL, error) {
		if req.URL != nil && isLoopback(req.URL.Hostname()) {
			return nil, nil
		}
		return proxy(req)
	}
}

// NewTransport returns an HTTP transport tuned for a pool of maxConns
// workers calling one host: that many idle connections kept per host, no
// cap on connections per host, keep-alives, HTTP/2 when offered, bounded
// dial and TLS handshake times, and the proxy from the environment, never
// for a loopback host (see noProxyToLoopback).
func NewTransport(maxConns int) *http.Transport {
	maxConns = max(maxConns, 1)
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:                 noProxyToLoopback(http.ProxyFromEnvironment),
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		TLSClientConfig:       &tls.Config{MinVersion: tls.VersionTLS12},
		MaxIdleConns:          max(100, 2*maxConns),
		MaxIdleConnsPerHost:   maxConns,
		MaxConnsPerHost:       0,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}

// Me returns the account that owns the API key (GET /v2/users/me).
func (c *Client) Me(ctx context.Context) (Caller, Outcome) {
	var caller Caller
	out := c.call(ctx, call{
		endpoint: endpointMe,
		method:   http.MethodGet,
		url:      c.urlMe,
		onOK: func(a answer) {
			caller, _ = parseCaller(a.data) // judge checked it parses
		},
	})
	return caller, out
}

// ChangePassword sets the password of userID (POST /v2/users/password).
// Every attempt sends the same password.
func (c *Client) ChangePassword(ctx context.Context, userID int, pw secret.Password) Outcome {
	if userID <= 0 {
		return Outcome{Err: fmt.Errorf("user id %d: must be positive", userID)}
	}
	if pw.Empty() {
		return Outcome{Err: errors.New("empty password: not sent")}
	}
	if !utf8.ValidString(pw.Reveal()) {
		// encoding/json would silently replace the invalid bytes, and the
		// server would get another password than the one sealed.
		return Outcome{Err: errors.New("password is not valid UTF-8: not sent")}
	}
	body := passwordBody(userID, pw.Reveal())
	// Zero this copy of the body when the call ends. The copies net/http
	// and crypto/tls make while sending it stay in their pooled buffers
	// until reused: that is out of our reach.
	defer clear(body)
	return c.call(ctx, call{
		endpoint: endpointPassword,
		method:   http.MethodPost,
		url:      c.urlPassword,
		body:     body,
		userID:   userID,
		secret:   pw.Reveal(),
	})
}

// ResetSessions invalidates the sessions of userID (POST
// /v2/users/reset/{id}, no body).
func (c *Client) ResetSessions(ctx context.Context, userID int) Outcome {
	if userID <= 0 {
		return Outcome{Err: fmt.Errorf("user id %d: must be positive", userID)}
	}
	return c.call(ctx, call{
		endpoint: endpointReset,
		method:   http.MethodPost,
		url:      c.endpointURL("/v2/users/reset/" + strconv.Itoa(userID)),
		userID:   userID,
	})
}

// call describes one API call.
type call struct {
	endpoint string
	method   string
	url      string // absolute, from endpointURL
	body     []byte // nil: no body
	userID   int    // for logs; 0 for Me
	secret   string // a password in body, scrubbed from messages
	onOK     func(answer)
	// once: an attempt that may have been applied is not retried; the
	// outcome is left Unknown for the caller to settle (a key generation,
	// which a second attempt would repeat with another key).
	once bool
	// check, when set, reads a confirmed answer's data; an error makes the
	// attempt a final failure (the answer is well formed but unusable).
	check func(answer) error
	// maxBody bounds the answer body (0: maxBody); with check set, a longer
	// answer is a final failure instead of being cut.
	maxBody int64
	// unread, when set, is given the body (read so far, at most maxBody)
	// of a 2xx answer that is not understood and may have been applied;
	// body is valid only during the call.
	unread func(body []byte)
}

// attemptResult is the result of one attempt.
type attemptResult struct {
	status     int
	v          verdict
	retryAfter time.Duration
	hasRA      bool
}

// call runs cl, retrying as the answers allow, and returns its outcome.
func (c *Client) call(ctx context.Context, cl call) Outcome {
	scrub := c.scrubber(cl.secret)
	var out Outcome
	var lastMsg string
	for attempt := 1; ; attempt++ {
		if err := c.wait(ctx); err != nil {
			return c.interrupted(out, lastMsg, err, scrub)
		}
		res := c.attempt(ctx, cl, scrub)
		// The parts of the message were scrubbed before they were joined
		// and cleaned; scrub the whole once more in case cleaning (white
		// space folding) rebuilt a secret.
		res.v.msg = clean(scrub(res.v.msg), maxMessage)
		out.Attempts++
		if res.status != 0 {
			out.HTTPStatus = res.status
			out.ErrorCode = res.v.code
		}
		if c.obs != nil {
			var err error
			if !res.v.ok {
				err = errors.New(res.v.msg)
			}
			c.obs.Call(cl.endpoint, res.status, err)
		}
		// A 429 or RateLimitExceeded slows every caller, and so does any
		// retryable answer that names a Retry-After.
		if c.pacer != nil && (res.v.throttle || res.hasRA && res.v.retry) {
			c.pacer.Throttle(res.retryAfter)
		} else if c.confirmer != nil && res.status != 0 {
			c.confirmer.Confirm()
		}
		if res.v.ok {
			out.OK, out.Unknown, out.Err = true, false, nil
			return out
		}
		out.Unknown = out.Unknown || res.v.unknown
		lastMsg = res.v.msg
		if res.v.fatal || !res.v.retry || attempt >= c.maxAttempts || cl.once && res.v.unknown {
			out.Fatal = res.v.fatal
			out.Err = errors.New(lastMsg)
			return out
		}
		if err := ctx.Err(); err != nil {
			return c.interrupted(out, lastMsg, err, scrub)
		}
		sleep := c.backoff(attempt - 1)
		if res.hasRA {
			sleep = max(sleep, res.retryAfter)
		}
		if c.obs != nil {
			c.obs.Retry(cl.endpoint)
		}
		c.log.LogAttrs(ctx, slog.LevelDebug, "retrying ECGrid call",
			slog.String("endpoint", cl.endpoint),
			slog.Int("user", cl.userID),
			slog.Int("attempt", attempt),
			slog.Int("status", res.status),
			slog.String("reason", lastMsg),
			slog.Duration("wait", sleep))
		if err := Sleep(ctx, sleep); err != nil {
			return c.interrupted(out, lastMsg, err, scrub)
		}
	}
}

// wait waits for the pacer, or checks ctx when there is none.
func (c *Client) wait(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if c.pacer == nil {
		return nil
	}
	return c.pacer.Wait(ctx)
}

// interrupted completes out for a call stopped by ctx (or by the pacer)
// before a final answer.
func (c *Client) interrupted(out Outcome, lastMsg string, cause error, scrub func(string) string) Outcome {
	out.Interrupted = true
	out.OK, out.Fatal = false, false
	msg := "interrupted: " + clean(scrub(cause.Error()), 60)
	if lastMsg != "" {
		msg += " (last: " + lastMsg + ")"
	}
	out.Err = &wrapped{msg: clean(msg, maxMessage), err: cause}
	return out
}

// wrapped is an error with a safe message that still unwraps to its cause
// (such as context.Canceled).
type wrapped struct {
	msg string
	err error
}

func (w *wrapped) Error() string { return w.msg }
func (w *wrapped) Unwrap() error { return w.err }

// backoff returns a full-jitter delay for retry n (0 for the first retry):
// uniform in [0, min(backoffMax, backoffBase*2^n)).
func (c *Client) backoff(n int) time.Duration {
	ceiling := c.backoffMax
	if n < 62 {
		if d := c.backoffBase << n; d > 0 && d>>n == c.backoffBase && d < ceiling {
			ceiling = d
		}
	}
	if ceiling <= 0 {
		return 0
	}
	return rand.N(ceiling)
}

// Sleep waits for d or until ctx is done, and returns ctx.Err() if it is.
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// attempt sends one request and judges its answer. The request runs on a
// context that ignores ctx's cancellation but ends at c.timeout, so an
// answer to a request already sent is still seen.
func (c *Client) attempt(ctx context.Context, cl call, scrub func(string) string) attemptResult {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.timeout)
	defer cancel()
	var wrote atomic.Bool
	actx = httptrace.WithClientTrace(actx, &httptrace.ClientTrace{
		WroteHeaders: func() { wrote.Store(true) },
	})
	var body io.Reader
	if cl.body != nil {
		body = bytes.NewReader(cl.body)
	}
	req, err := http.NewRequestWithContext(actx, cl.method, cl.url, body)
	if err != nil {
		return attemptResult{v: verdict{msg: clean("building the request: "+scrub(unwrapURLError(err).Error()), maxMessage)}}
	}
	// A copy: a request's headers are its own (one map and one slice).
	if cl.body != nil {
		req.Header = c.hdrPost.Clone()
	} else {
		req.Header = c.hdrGet.Clone()
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return attemptResult{v: c.transportVerdict(err, actx, wrote.Load(), isMutating(cl.endpoint), "", scrub)}
	}
	limit := int64(maxBody)
	if cl.maxBody > 0 {
		limit = cl.maxBody
	}
	buf := answerBufs.Get().(*bytes.Buffer)
	defer func() {
		if buf.Cap() <= maxPooledAnswer {
			answerBufs.Put(buf)
		}
	}()
	data, cut, readErr := readBounded(resp.Body, limit, buf)
	status := resp.StatusCode
	ra, hasRA := parseRetryAfter(resp.Header.Get("Retry-After"), c.now())
	res := attemptResult{status: status, retryAfter: ra, hasRA: hasRA}
	if readErr != nil && status >= 200 && status < 300 {
		// An unreadable success: the change may have been applied.
		v := c.transportVerdict(readErr, actx, true, isMutating(cl.endpoint), "HTTP "+strconv.Itoa(status)+": reading the answer: ", scrub)
		res.v = v
		return res
	}
	if cut && cl.check != nil && status >= 200 && status < 300 {
		res.v = verdict{msg: httpMessage(status, "", "answer larger than "+byteSize(limit)+": not read")}
		return res
	}
	a := decodeAnswer(status, resp.Header, data)
	res.v = judge(a, cl.endpoint, scrub)
	if res.v.ok && cl.check != nil {
		if err := cl.check(a); err != nil {
			res.v = verdict{msg: clean(scrub(err.Error()), maxMessage)}
			return res
		}
	}
	if res.v.ok && cl.onOK != nil {
		cl.onOK(a)
	}
	if !res.v.ok && res.v.unknown && cl.unread != nil && status >= 200 && status < 300 {
		cl.unread(data)
	}
	return res
}

// transportVerdict judges an attempt that got no (complete) answer. sent
// says whether the request may have reached the server.
func (c *Client) transportVerdict(err error, actx context.Context, sent, mutating bool, prefix string, scrub func(string) string) verdict {
	if msg, ok := certificateProblem(err); ok {
		// The server's certificate is not trusted (unknown authority, wrong
		// host name, expired): no request left, and every further call,
		// this one retried or another user's, would meet the same
		// certificate (or the same interception). Not retried, and the
		// whole run stops, as for a refused key.
		return verdict{fatal: true, msg: clean(prefix+"TLS certificate verification failed: "+scrub(msg)+" (request not sent; not retried)", maxMessage)}
	}
	v := verdict{retry: true, unknown: sent && mutating}
	var what string
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || actx.Err() != nil || (errors.As(err, &ne) && ne.Timeout()) {
		what = "timeout after " + c.timeout.String()
	} else {
		what = "transport error: " + scrub(unwrapURLError(err).Error())
	}
	msg := prefix + what
	if v.unknown {
		msg = "outcome unknown: " + msg
	} else if !sent {
		msg += " (request not sent)"
	}
	v.msg = clean(msg, maxMessage)
	return v
}

// certificateProblem reports whether err is a failure to verify the
// server's TLS certificate, and returns the verifier's own words (e.g.
// "x509: certificate signed by unknown authority").
func certificateProblem(err error) (string, bool) {
	var cve *tls.CertificateVerificationError
	if errors.As(err, &cve) && cve.Err != nil {
		return cve.Err.Error(), true
	}
	var (
		unknownCA x509.UnknownAuthorityError
		invalid   x509.CertificateInvalidError
		hostname  x509.HostnameError
	)
	switch {
	case errors.As(err, &unknownCA):
		return unknownCA.Error(), true
	case errors.As(err, &invalid):
		return invalid.Error(), true
	case errors.As(err, &hostname):
		return hostname.Error(), true
	}
	return "", false
}

// unwrapURLError drops the *url.Error wrapper, whose message repeats the
// method and URL.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) && ue.Err != nil {
		return ue.Err
	}
	return err
}

// readBounded reads at most limit bytes of body into buf, discards at most
// maxDrain more so the connection can be reused, and closes it. A body
// longer than limit is cut (cut is then true; past maxDrain the connection
// is closed, not reused). data is buf's bytes: valid until buf is reused.
func readBounded(body io.ReadCloser, limit int64, buf *bytes.Buffer) (data []byte, cut bool, err error) {
	defer body.Close()
	buf.Reset()
	_, err = buf.ReadFrom(io.LimitReader(body, limit+1))
	data = buf.Bytes()
	if int64(len(data)) > limit {
		data, cut = data[:limit], true
	}
	if err != nil {
		return data, cut, err
	}
	if cut {
		// Shorter answers ended at EOF: nothing to discard.
		_, _ = io.CopyN(io.Discard, body, maxDrain)
	}
	return data, cut, nil
}

// answerBufs holds the buffers answers are read into: a run reads one
// small answer per call, and decodeAnswer copies what it keeps.
var answerBufs = sync.Pool{New: func() any { return bytes.NewBuffer(make([]byte, 0, 1024)) }}

// maxPooledAnswer is the largest buffer put back in answerBufs (a user
// list's page can be megabytes).
const maxPooledAnswer = 64 << 10

// byteSize prints a size in bytes as "64 KiB" or "8 MiB".
func byteSize(n int64) string {
	if n >= 1<<20 && n%(1<<20) == 0 {
		return strconv.FormatInt(n>>20, 10) + " MiB"
	}
	if n >= 1<<10 && n%(1<<10) == 0 {
		return strconv.FormatInt(n>>10, 10) + " KiB"
	}
	return strconv.FormatInt(n, 10) + " bytes"
}

// MinAPIKeyLength is the shortest API key New accepts.
const MinAPIKeyLength = 16

// scrubber returns a function that replaces the API key and pw (if any)
// in a text with a marker. A text holding neither is returned as is; the
// replacer is built only for the first text that needs it. The function is
// for one call's goroutine: it is not safe for concurrent use.
func (c *Client) scrubber(pw string) func(string) string {
	key := c.key
	var r *strings.Replacer
	return func(s string) string {
		if !strings.Contains(s, key) && (pw == "" || !strings.Contains(s, pw)) {
			return s
		}
		if r == nil {
			pairs := []string{key, redactedMarker}
			if pw != "" {
				pairs = append(pairs, pw, redactedMarker)
			}
			r = strings.NewReplacer(pairs...)
		}
		return r.Replace(s)
	}
}

// passwordBody returns the JSON body {"userId":id,"newPassword":pw} of a
// password change, byte for byte what encoding/json writes for it. pw must
// be valid UTF-8 (ChangePassword refuses it otherwise).
func passwordBody(userID int, pw string) []byte {
	const head, mid, tail = `{"userId":`, `,"newPassword":`, `}`
	// An escape is at most 6 bytes for 1; one allocation, cleared by the
	// caller.
	b := make([]byte, 0, len(head)+20+len(mid)+2+6*len(pw)+len(tail))
	b = append(b, head...)
	b = strconv.AppendInt(b, int64(userID), 10)
	b = append(b, mid...)
	b = appendJSONString(b, pw)
	return append(b, tail...)
}

// appendJSONString appends s as a JSON string exactly as encoding/json
// writes it (with its HTML escaping): ", \ and control characters escaped,
// < > & U+2028 U+2029 as \u escapes, invalid UTF-8 as \ufffd.
func appendJSONString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if b := s[i]; b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' && b != '<' && b != '>' && b != '&' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '\\', '"':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[b>>4], hex[b&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
