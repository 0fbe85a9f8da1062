// Package deliver puts each new password into the Kubernetes Secrets its
// consumers read (run --deliver).
//
// A map (ReadMap) names, for each user, the Secret keys that hold its
// password. A Client reaches the cluster as kubectl would (Access), and
// needs nothing but get and patch on the mapped Secrets. It speaks to the
// API server through client-go's REST client with a codec for the API
// server's Status answers alone: no generated clientset, whose scheme
// registers every API group (a binary 25 MB larger, and every run, with
// --deliver or not, would pay for their registration at start):
//
//   - Preflight: a server-side dry-run patch (dryRun=All) of every Secret of
//     the run proves each exists and may be patched; every refusal is named.
//   - Deliver: a JSON merge patch of data.<key> of each target, plus the
//     annotation AnnotationName(key) recording when and in which run
//     pwrotate rotated it. Nothing else of the Secret is sent, so other
//     keys, labels and annotations stay, and users sharing a Secret never
//     overwrite each other; there is no read-modify-write.
//   - Due: the rotation history those annotations keep (--older-than).
//   - WaitReady and Down: the outage detector, so that a run stops changing
//     passwords while their delivery cannot land.
//
// Every request is paced by the Client's own limiter and retried on 409,
// 429, 5xx and transport errors. Passwords are secret.Password: the only
// place one is written is the patch body; the API server is asked to answer
// with the Secret's metadata alone.
package deliver

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"pwrotate/rotate/secret"
)

// Result is the outcome of delivering one user's password.
type Result struct {
	Targets   int // the user's targets
	Delivered int // targets that now hold the password
	Attempts  int // patch requests sent
	// Err says why some target does not hold the password (each such
	// target and its reason); nil when every one does.
	Err error
}

// OK reports whether the user has targets and every one holds the
// password.
func (r Result) OK() bool { return r.Targets > 0 && r.Delivered == r.Targets }

// TargetError is the failure of one target's delivery.
type TargetError struct {
	Target Target
	Reason string // secret-free: "forbidden: ...", "not found", ...
	Err    error  // the cause; its text is not shown (it may quote the request)
}

func (e *TargetError) Error() string { return e.Target.String() + ": " + e.Reason }
func (e *TargetError) Unwrap() error { return e.Err }

// Deliver patches data.<key> of each target of userID with pw, and records
// the rotation in the key's annotation. It returns once every target was
// patched or gave up (refused, unreachable past the retries and
// OutageLimit, or ctx done).
func (c *Client) Deliver(ctx context.Context, userID int, pw secret.Password) Result {
	targets := c.m.Targets(userID)
	res := Result{Targets: len(targets)}
	if len(targets) == 0 {
		return res
	}
	raw := []byte(pw.Reveal())
	enc := make([]byte, base64.StdEncoding.EncodedLen(len(raw)))
	base64.StdEncoding.Encode(enc, raw)
	defer clear(enc)
	clear(raw)
	var errs []error
	for _, t := range targets {
		body := c.patchBody(t.Key, enc)
		n, err := c.call(ctx, t.String(), true, func(ctx context.Context) error {
			return redact(c.patch(ctx, t.ref(), body, false), pw, enc)
		})
		clear(body)
		res.Attempts += n
		if err != nil {
			te := &TargetError{Target: t, Reason: scrub(reason(err), pw, enc), Err: err}
			errs = append(errs, te)
			c.opts.Observe(outcome(ctx, err))
			c.log.Warn("delivery failed", "user", userID, "target", t.String(), "reason", te.Reason)
			continue
		}
		res.Delivered++
		c.opts.Observe(OutcomeDelivered)
	}
	res.Err = errors.Join(errs...)
	return res
}

// outcome is the Options.Observe outcome of a failed delivery.
func outcome(ctx context.Context, err error) string {
	if ctx.Err() != nil {
		return OutcomeCanceled
	}
	switch k, _ := classify(err); k {
	case kindBusy, kindDown, kindConflict:
		return OutcomeUnreachable
	}
	return OutcomeRefused
}

// patchBody is the merge patch that sets data.<key> to the base64 password
// enc and records the rotation: nothing else of the Secret is named, so
// nothing else changes. The caller zeroes it after use.
func (c *Client) patchBody(key string, enc []byte) []byte {
	k, _ := json.Marshal(key)
	name, _ := json.Marshal(AnnotationName(key))
	value, _ := json.Marshal(annotationValue(c.opts.Now(), c.opts.RunID))
	b := make([]byte, 0, 64+len(k)+len(name)+len(value)+len(enc))
	b = append(b, `{"metadata":{"annotations":{`...)
	b = append(b, name...)
	b = append(b, ':')
	b = append(b, value...)
	b = append(b, `}},"data":{`...)
	b = append(b, k...)
	b = append(b, `:"`...)
	b = append(b, enc...)
	b = append(b, `"}}`...)
	return b
}

// scrub removes the password, raw or base64, from a message the API server
// (an admission webhook) might have built from the request: whole, or any
// part of it scrubMin characters long or more (a webhook that quotes the
// request cut short).
func scrub(msg string, pw secret.Password, enc []byte) string {
	raw := []byte(pw.Reveal())
	defer clear(raw)
	m := []byte(msg)
	var b strings.Builder
	for i := 0; i < len(m); {
		n := max(quoted(m[i:], raw), quoted(m[i:], enc))
		if n == 0 {
			b.WriteByte(m[i])
			i++
			continue
		}
		b.WriteString(secret.Redacted)
		i += n
	}
	return b.String()
}

// scrubMin is the shortest part of a password that scrub removes (all of
// a shorter password).
const scrubMin = 8

// quoted returns the length of the longest prefix of msg that is a part of
// s at least min(scrubMin, len(s)) long, or 0.
func quoted(msg, s []byte) int {
	least := min(scrubMin, len(s))
	if least == 0 || len(msg) < least || !bytes.Contains(s, msg[:least]) {
		return 0
	}
	n := least
	for n < len(msg) && bytes.Contains(s, msg[:n+1]) {
		n++
	}
	return n
}

// redact scrubs the password from the API server's Status in err, in
// place, before anything logs or keeps its text.
func redact(err error, pw secret.Password, enc []byte) error {
	var st *apierrors.StatusError
	if errors.As(err, &st) {
		st.ErrStatus.Message = scrub(st.ErrStatus.Message, pw, enc)
		if d := st.ErrStatus.Details; d != nil {
			for i := range d.Causes {
				d.Causes[i].Message = scrub(d.Causes[i].Message, pw, enc)
				d.Causes[i].Field = scrub(d.Causes[i].Field, pw, enc)
			}
		}
	}
	return err
}

// String describes a Result for a log line or results.csv: "2/2
// delivered" or the failures.
func (r Result) String() string {
	if r.Err == nil {
		return fmt.Sprintf("%d/%d delivered", r.Delivered, r.Targets)
	}
	var parts []string
	var te *TargetError
	for _, e := range unwrapJoined(r.Err) {
		if errors.As(e, &te) {
			parts = append(parts, te.Error())
		}
	}
	return fmt.Sprintf("%d/%d delivered; %s", r.Delivered, r.Targets, strings.Join(parts, "; "))
}

func unwrapJoined(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}
