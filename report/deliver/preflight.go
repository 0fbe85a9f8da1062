package deliver

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
)

// Refusal is a target the API server will not let pwrotate write (or read,
// for Due), with the reason.
type Refusal struct {
	Target Target
	Reason string // "not found", "forbidden: ...", "rejected (HTTP 422): ..."
}

// String names the target, where the map names it, and the reason.
func (r Refusal) String() string {
	return fmt.Sprintf("%s (%s line %d): %s", r.Target, r.Target.File, r.Target.Line, r.Reason)
}

// Verdict is the outcome of a preflight.
type Verdict struct {
	Secrets  int // Secrets checked
	Targets  int // targets checked
	Refusals []Refusal
}

// OK reports whether every target may be patched.
func (v Verdict) OK() bool { return len(v.Refusals) == 0 }

// String is the verdict for the plan.
func (v Verdict) String() string {
	if v.OK() {
		return fmt.Sprintf("ok: %d targets in %d Secrets may be patched", v.Targets, v.Secrets)
	}
	return fmt.Sprintf("refused: %d of %d targets", len(v.Refusals), v.Targets)
}

// ownRun marks, in Due, a record of this very run.
var ownRun = time.Unix(1, 0)

// placeholder is the value the dry-run patch sets (never stored).
var placeholder = []byte("cHdyb3RhdGUtcHJlZmxpZ2h0") // base64("pwrotate-preflight")

// Preflight sends a server-side dry-run patch (dryRun=All) of every Secret
// holding a target of users, setting their keys and annotations as Deliver
// would: it proves that each Secret exists and that the API server, its
// RBAC and its admission would accept the patch, and changes nothing. The
// refusals name each target and why. An error means the API server could
// not be asked (unreachable past the retries, credentials refused,
// untrusted certificate, ctx done).
func (c *Client) Preflight(ctx context.Context, users []int) (Verdict, error) {
	bySecret, order := c.group(users)
	v := Verdict{Secrets: len(order)}
	var mu sync.Mutex
	err := c.forEach(ctx, order, func(ctx context.Context, ref secretRef) error {
		targets := bySecret[ref]
		body := c.dryRunBody(targets)
		_, err := c.call(ctx, "preflight "+ref.ns+"/"+ref.name, false, func(ctx context.Context) error {
			return c.patch(ctx, ref, body, true)
		})
		mu.Lock()
		defer mu.Unlock()
		v.Targets += len(targets)
		if err == nil {
			c.probeMu.Lock()
			if c.probe == (secretRef{}) {
				c.probe = ref
			}
			c.probeMu.Unlock()
			return nil
		}
		if fatalErr(err) != nil {
			return fatalErr(err)
		}
		for _, t := range targets {
			v.Refusals = append(v.Refusals, Refusal{Target: t, Reason: reason(err)})
		}
		return nil
	})
	sortRefusals(v.Refusals)
	return v, err
}

// fatalErr returns err, described, when it stops a preflight or Due (no
// answer about this Secret in particular); nil when it is a refusal of this
// Secret.
func fatalErr(err error) error {
	kind, _ := classify(err)
	switch {
	case errors.Is(err, context.Canceled):
		return err
	case kind == kindAuth:
		return fmt.Errorf("kubernetes API: credentials refused (%s)", reason(err))
	case kind == kindCert:
		return fmt.Errorf("kubernetes API: %w", err)
	case kind == kindFinal, kind == kindForbidden:
		return nil
	default:
		return fmt.Errorf("kubernetes API: %s: %w", reason(err), ErrOutage)
	}
}

func sortRefusals(rs []Refusal) {
	slices.SortFunc(rs, func(a, b Refusal) int {
		return cmp.Or(cmp.Compare(a.Target.File, b.Target.File), cmp.Compare(a.Target.Line, b.Target.Line))
	})
}

// group returns the targets of users by Secret, and the Secrets in the order
// of their first target in the map.
func (c *Client) group(users []int) (map[secretRef][]Target, []secretRef) {
	by := map[secretRef][]Target{}
	var order []secretRef
	seen := map[int]bool{}
	var all []Target
	for _, u := range users {
		if seen[u] {
			continue
		}
		seen[u] = true
		all = append(all, c.m.Targets(u)...)
	}
	slices.SortFunc(all, func(a, b Target) int {
		return cmp.Or(cmp.Compare(a.File, b.File), cmp.Compare(a.Line, b.Line))
	})
	for _, t := range all {
		r := t.ref()
		if _, ok := by[r]; !ok {
			order = append(order, r)
		}
		by[r] = append(by[r], t)
	}
	return by, order
}

// dryRunBody is the merge patch a preflight sends for the targets of one
// Secret: every key with a placeholder value, and its annotation.
func (c *Client) dryRunBody(targets []Target) []byte {
	ann := map[string]string{}
	data := map[string]json.RawMessage{}
	for _, t := range targets {
		ann[AnnotationName(t.Key)] = annotationValue(c.opts.Now(), c.opts.RunID)
		data[t.Key] = json.RawMessage(`"` + string(placeholder) + `"`)
	}
	b, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": ann}, "data": data})
	return b
}

// forEach calls f for each Secret, Options.Workers at a time; the first
// error stops the rest and is returned.
func (c *Client) forEach(ctx context.Context, refs []secretRef, f func(context.Context, secretRef) error) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(c.opts.Workers)
	for _, r := range refs {
		g.Go(func() error {
			if ctx.Err() != nil {
				return nil
			}
			return f(ctx, r)
		})
	}
	return g.Wait()
}

// Due is whether a user's password is due for rotation under --older-than.
type Due struct {
	Due bool
	// Reason: when not due, "rotated 12d ago, due in 78d"; when due, why
	// ("no rotation recorded on ns/secret[key]", "rotated 95d ago").
	Reason string
	// Last is the oldest of the last rotations of its targets (zero when
	// some target has none).
	Last time.Time
}

// Due reads the rotation records of the Secrets of users (their metadata
// only) and tells, for each user with targets, whether it is due: when any
// of its targets shows no pwrotate rotation, or one at least olderThan ago,
// or one made by this very run (Options.RunID: a resumed run finishes what
// it started). Users without targets are not in the map (always due).
// Secrets the API server will not let pwrotate read are refusals; an error
// means it could not be asked.
func (c *Client) Due(ctx context.Context, users []int, olderThan time.Duration) (map[int]Due, []Refusal, error) {
	bySecret, order := c.group(users)
	now := c.opts.Now()
	last := map[Target]time.Time{} // by target without user, file, line; zero: none
	var refusals []Refusal
	var mu sync.Mutex
	err := c.forEach(ctx, order, func(ctx context.Context, ref secretRef) error {
		var raw []byte
		_, err := c.call(ctx, "read "+ref.ns+"/"+ref.name, false, func(ctx context.Context) error {
			var err error
			raw, err = c.getMeta(ctx, ref)
			return err
		})
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			if fatalErr(err) != nil {
				return fatalErr(err)
			}
			for _, t := range bySecret[ref] {
				refusals = append(refusals, Refusal{Target: t, Reason: reason(err)})
			}
			return nil
		}
		var meta struct {
			Metadata struct {
				Annotations map[string]string `json:"annotations"`
			} `json:"metadata"`
		}
		if err := json.Unmarshal(raw, &meta); err != nil {
			return fmt.Errorf("kubernetes API: reading %s/%s: %w", ref.ns, ref.name, err)
		}
		for _, t := range bySecret[ref] {
			var when time.Time
			if v, ok := meta.Metadata.Annotations[AnnotationName(t.Key)]; ok {
				var run string
				when, run, _ = parseAnnotation(v) // unreadable: no record, due
				if run != "" && run == c.opts.RunID {
					when = ownRun
				}
			}
			last[Target{Namespace: t.Namespace, Secret: t.Secret, Key: t.Key}] = when
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	sortRefusals(refusals)
	out := map[int]Due{}
	for _, u := range users {
		targets := c.m.Targets(u)
		if len(targets) == 0 {
			continue
		}
		d := Due{}
		known := 0
		for _, t := range targets {
			when, ok := last[Target{Namespace: t.Namespace, Secret: t.Secret, Key: t.Key}]
			if !ok {
				continue // refused: the caller stops
			}
			known++
			if when.IsZero() {
				d = Due{Due: true, Reason: "no rotation recorded on " + t.String()}
				break
			}
			if when.Equal(ownRun) {
				d = Due{Due: true, Reason: "rotated by this run before it stopped, on " + t.String()}
				break
			}
			if d.Last.IsZero() || when.Before(d.Last) {
				d.Last = when
			}
		}
		if known == 0 {
			d = Due{Due: true, Reason: "no rotation record could be read"}
		}
		if !d.Due && !d.Last.IsZero() {
			age := max(now.Sub(d.Last), 0)
			if age >= olderThan {
				d.Due, d.Reason = true, "rotated "+FormatAge(age)+" ago"
			} else {
				d.Reason = "rotated " + FormatAge(age) + " ago, due in " + FormatAge(olderThan-age)
			}
		}
		out[u] = d
	}
	return out, refusals, nil
}
