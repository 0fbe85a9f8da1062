package console

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// HumanHandler is the slog.Handler of a person at a terminal: no timestamps,
// no key=value pairs, no Go syntax. Warnings and errors start with
// "pwrotate: warning:" and "pwrotate: error:"; the run's own messages
// (a failed record, the caller, a sealed file, progress) read as sentences;
// the "plan" record is not shown (the plan is printed in full on stdout).
//
// It is used only where a person reads (a terminal, --log-format auto): the
// JSON logs of machines never go through it.
type HumanHandler struct {
	w     io.Writer
	level slog.Leveler
	mu    *sync.Mutex
	attrs []slog.Attr
	group string
}

// NewHumanHandler returns a HumanHandler writing one Write per record to w
// (give it Progress.LogWriter so that lines and bar do not tangle).
func NewHumanHandler(w io.Writer, level slog.Leveler) *HumanHandler {
	return &HumanHandler{w: w, level: level, mu: &sync.Mutex{}}
}

// Enabled implements slog.Handler.
func (h *HumanHandler) Enabled(_ context.Context, l slog.Level) bool {
	return l >= h.level.Level()
}

// WithAttrs implements slog.Handler.
func (h *HumanHandler) WithAttrs(as []slog.Attr) slog.Handler {
	h2 := *h
	h2.attrs = append(append([]slog.Attr(nil), h.attrs...), h.qualify(as)...)
	return &h2
}

// WithGroup implements slog.Handler.
func (h *HumanHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	h2 := *h
	h2.group = h.group + name + "."
	return &h2
}

func (h *HumanHandler) qualify(as []slog.Attr) []slog.Attr {
	if h.group == "" {
		return as
	}
	out := make([]slog.Attr, len(as))
	for i, a := range as {
		out[i] = slog.Attr{Key: h.group + a.Key, Value: a.Value}
	}
	return out
}

// Handle implements slog.Handler.
func (h *HumanHandler) Handle(_ context.Context, r slog.Record) error {
	attrs := append([]slog.Attr(nil), h.attrs...)
	var own []slog.Attr
	r.Attrs(func(a slog.Attr) bool {
		own = append(own, a)
		return true
	})
	attrs = append(attrs, h.qualify(own)...)
	line, ok := humanLine(r.Level, r.Message, attrs)
	if !ok {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := io.WriteString(h.w, line+"\n")
	return err
}

// attrMap gives the attributes by key, values already made readable.
type attrMap struct {
	keys []string
	vals map[string]string
}

func newAttrMap(as []slog.Attr) attrMap {
	m := attrMap{vals: map[string]string{}}
	for _, a := range as {
		if a.Equal(slog.Attr{}) {
			continue
		}
		if _, seen := m.vals[a.Key]; !seen {
			m.keys = append(m.keys, a.Key)
		}
		m.vals[a.Key] = Readable(a.Value.Resolve())
	}
	return m
}

func (m attrMap) get(k string) string { return m.vals[k] }

// rest lists the attributes not named in used as "key value, key value".
func (m attrMap) rest(used ...string) string {
	var parts []string
	for _, k := range m.keys {
		skip := false
		for _, u := range used {
			skip = skip || k == u
		}
		if !skip {
			parts = append(parts, k+" "+m.vals[k])
		}
	}
	return strings.Join(parts, ", ")
}

// humanLine renders one record; ok is false for a record not shown.
func humanLine(level slog.Level, msg string, as []slog.Attr) (string, bool) {
	m := newAttrMap(as)
	switch msg {
	case "plan", "start", "summary", "demo: sealing to a fresh identity", "invalid record":
		// The plan is printed on stdout (with the first invalid
		// records); the start header (which names the demo's identity)
		// and the closing summary (with the records that need
		// attention) are written by WriteHeader and WriteSummary.
		return "", false
	case "preflight":
		return fmt.Sprintf("  caller:    user %s, AuthLevel %s", m.get("caller"), m.get("authLevel")), true
	case "sealed":
		return fmt.Sprintf("  sealed:    %s passwords (generation %s) in %s", m.get("passwords"), m.get("generation"), m.get("file")), true
	case "progress":
		return fmt.Sprintf("  progress:  %s of %s done, %s records/s, ETA %s, %s failed",
			m.get("done"), m.get("total"), m.get("rate"), m.get("eta"), m.get("failed")), true
	case "signal: no new requests; finishing those in flight (a second signal exits at once)":
		return fmt.Sprintf("pwrotate: %s received: no new requests; finishing those in flight (a second signal exits at once)", m.get("signal")), true
	case "run already complete: nothing to do":
		return fmt.Sprintf("  nothing to do: the run in %s is already complete; its summary follows", m.get("out")), true
	case "resuming":
		return fmt.Sprintf("  resuming:  the run in %s, %s outcomes already recorded", m.get("out"), m.get("recorded")), true
	case "record failed":
		attempts := m.get("attempts") + " attempts"
		if attempts == "1 attempts" {
			attempts = "1 attempt"
		}
		return fmt.Sprintf("  failed:    line %s, user %s: %s (%s)", m.get("line"), m.get("user"), m.get("reason"), attempts), true
	case "session reset failed":
		return fmt.Sprintf("  reset failed: line %s, user %s: %s", m.get("line"), m.get("user"), m.get("reason")), true
	}
	var b strings.Builder
	switch {
	case level >= slog.LevelError:
		b.WriteString("pwrotate: error: ")
	case level >= slog.LevelWarn:
		b.WriteString("pwrotate: warning: ")
	case level < slog.LevelInfo:
		b.WriteString("  debug: ")
	default:
		b.WriteString("  ")
	}
	b.WriteString(msg)
	if rest := m.rest(); rest != "" {
		b.WriteString(" (" + rest + ")")
	}
	return b.String(), true
}

// Readable renders a log value for a person: numbers and strings as they
// are, durations as "1.5s", lists as "a, b, c" and maps as "k v, k v"
// (sorted by key), never Go syntax.
func Readable(v slog.Value) string {
	switch v.Kind() {
	case slog.KindString:
		return v.String()
	case slog.KindInt64:
		return strconv.FormatInt(v.Int64(), 10)
	case slog.KindUint64:
		return strconv.FormatUint(v.Uint64(), 10)
	case slog.KindFloat64:
		return strconv.FormatFloat(v.Float64(), 'f', -1, 64)
	case slog.KindBool:
		if v.Bool() {
			return "yes"
		}
		return "no"
	case slog.KindDuration:
		return v.Duration().String()
	case slog.KindTime:
		return v.Time().UTC().Format(time.RFC3339)
	case slog.KindGroup:
		var parts []string
		for _, a := range v.Group() {
			parts = append(parts, a.Key+" "+Readable(a.Value.Resolve()))
		}
		return strings.Join(parts, ", ")
	}
	return readableAny(v.Any())
}

func readableAny(x any) string {
	switch t := x.(type) {
	case nil:
		return ""
	case error:
		return t.Error()
	case fmt.Stringer:
		return t.String()
	}
	rv := reflect.ValueOf(x)
	switch rv.Kind() {
	case reflect.Slice, reflect.Array:
		parts := make([]string, rv.Len())
		for i := range parts {
			parts[i] = readableAny(rv.Index(i).Interface())
		}
		return strings.Join(parts, ", ")
	case reflect.Map:
		keys := rv.MapKeys()
		parts := make([]string, 0, len(keys))
		for _, k := range keys {
			parts = append(parts, readableAny(k.Interface())+" "+readableAny(rv.MapIndex(k).Interface()))
		}
		sort.Strings(parts)
		return strings.Join(parts, ", ")
	case reflect.Pointer:
		if rv.IsNil() {
			return ""
		}
		return readableAny(rv.Elem().Interface())
	}
	return fmt.Sprint(x)
}
