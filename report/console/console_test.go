package console

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is a clock that moves only when told.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// lockedBuffer is a bytes.Buffer safe for a writer goroutine and a reader.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestNewLogger(t *testing.T) {
	tests := []struct {
		format   string
		terminal bool
		wantJSON bool
	}{
		{"auto", true, false},
		{"auto", false, true},
		{"text", false, false},
		{"text", true, false},
		{"json", true, true},
		{"json", false, true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s terminal=%v", tt.format, tt.terminal), func(t *testing.T) {
			var buf bytes.Buffer
			log, err := NewLogger(&buf, tt.format, tt.terminal, slog.LevelInfo)
			if err != nil {
				t.Fatalf("NewLogger: %v", err)
			}
			log.Debug("hidden")
			log.Info("hello", "user", 42)
			out := buf.String()
			if strings.Contains(out, "hidden") {
				t.Errorf("debug line logged at level info: %q", out)
			}
			if strings.Count(out, "\n") != 1 {
				t.Fatalf("want one line, got %q", out)
			}
			var rec map[string]any
			isJSON := json.Unmarshal([]byte(out), &rec) == nil
			if isJSON != tt.wantJSON {
				t.Fatalf("JSON = %v, want %v: %q", isJSON, tt.wantJSON, out)
			}
			if tt.wantJSON {
				if rec["msg"] != "hello" || rec["user"] != float64(42) {
					t.Errorf("record = %v", rec)
				}
			} else if !strings.Contains(out, "msg=hello user=42") {
				t.Errorf("text line = %q", out)
			}
		})
	}
}

func TestNewLoggerBadFormat(t *testing.T) {
	for _, format := range []string{"", "xml", "JSON "} {
		t.Run(format, func(t *testing.T) {
			_, err := NewLogger(&bytes.Buffer{}, format, true, slog.LevelInfo)
			if err == nil || !strings.Contains(err.Error(), "--log-format") {
				t.Errorf("error = %v, want one naming --log-format", err)
			}
		})
	}
}

func TestIsTerminal(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if IsTerminal(f) {
		t.Error("a regular file is a terminal")
	}
	if IsTerminal(nil) {
		t.Error("nil is a terminal")
	}
}

func TestProgressMode(t *testing.T) {
	tests := []struct {
		mode     string
		terminal bool
		wantBar  bool
		wantErr  bool
	}{
		{"auto", true, true, false},
		{"auto", false, false, false},
		{"", true, true, false},
		{"always", false, true, false},
		{"never", true, false, false},
		{"sometimes", true, false, true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s terminal=%v", tt.mode, tt.terminal), func(t *testing.T) {
			var out, logs bytes.Buffer
			p, err := NewProgress(ProgressConfig{
				Out: &out, Mode: tt.mode, Terminal: tt.terminal, Total: 2,
				Logger: slog.New(slog.NewTextHandler(&logs, nil)), Interval: time.Hour, Redraw: time.Hour,
			})
			if tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), "--progress") {
					t.Fatalf("error = %v, want one naming --progress", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewProgress: %v", err)
			}
			p.Start(context.Background())
			p.Done(false)
			p.Stop()
			gotBar := strings.Contains(out.String(), "] 1/2")
			if gotBar != tt.wantBar {
				t.Errorf("bar shown = %v, want %v; out %q", gotBar, tt.wantBar, out.String())
			}
			gotLog := strings.Contains(logs.String(), "msg=progress")
			if gotLog == tt.wantBar {
				t.Errorf("progress log line = %v, want %v; logs %q", gotLog, !tt.wantBar, logs.String())
			}
		})
	}
}

func TestBarRendering(t *testing.T) {
	tests := []struct {
		name          string
		total         int
		done, failed  int
		elapsed       time.Duration
		want          string
		checkMaxWidth bool
	}{
		{
			name: "known state", total: 5000, done: 1234, failed: 3, elapsed: 3 * time.Second,
			want: "[====>               ] 1234/5000  24%  411/s  ETA 9s  failed 3",
		},
		{
			name: "nothing yet", total: 10, elapsed: 0,
			want: "[>                   ] 0/10  0%  --/s  ETA --  failed 0",
		},
		{
			name: "slow", total: 100, done: 2, failed: 0, elapsed: 4 * time.Second,
			want: "[>                   ] 2/100  2%  0.5/s  ETA 3m16s  failed 0",
		},
		{
			name: "complete", total: 40, done: 40, failed: 40, elapsed: 2 * time.Second,
			want: "[====================] 40/40  100%  20/s  ETA 0s  failed 40",
		},
		{
			name: "unknown total", total: 0, done: 12, failed: 1, elapsed: 2 * time.Second,
			want: "12 done  6.0/s  ETA --  failed 1",
		},
		{
			name: "huge", total: 10_000_000, done: 9_999_999, failed: 9_999_999, elapsed: 1500 * time.Second,
			checkMaxWidth: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock()
			var out bytes.Buffer
			p, err := NewProgress(ProgressConfig{
				Out: &out, Mode: "always", Total: tt.total, Redraw: time.Hour, Now: clock.Now,
			})
			if err != nil {
				t.Fatal(err)
			}
			p.Start(context.Background())
			if tt.done > 100_000 {
				// Too many for Done under -race; set the counters directly.
				p.done.Store(int64(tt.done))
				p.failed.Store(int64(tt.failed))
			} else {
				for i := range tt.done {
					p.Done(i < tt.failed)
				}
			}
			clock.Advance(tt.elapsed)
			p.Stop()

			got := out.String()
			if !strings.HasSuffix(got, "\n") {
				t.Fatalf("output does not end the bar's line: %q", got)
			}
			parts := strings.Split(strings.TrimSuffix(got, "\n"), clearLine)
			if len(parts) != 3 || parts[0] != "" {
				t.Fatalf("want two draws each starting with %q, got %q", clearLine, got)
			}
			last := parts[2]
			t.Logf("bar: %s", last)
			if tt.want != "" && last != tt.want {
				t.Errorf("final bar\n got %q\nwant %q", last, tt.want)
			}
			if len(last) >= 80 {
				t.Errorf("bar is %d columns, want < 80: %q", len(last), last)
			}
			if tt.checkMaxWidth && !strings.Contains(last, "9999999/10000000") {
				t.Errorf("huge bar lost its counts: %q", last)
			}
		})
	}
}

func TestLogWriterClearsAndRedraws(t *testing.T) {
	clock := newFakeClock()
	var out bytes.Buffer
	p, err := NewProgress(ProgressConfig{Out: &out, Mode: "always", Total: 10, Redraw: time.Hour, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	log, err := NewLogger(p.LogWriter(), "text", true, slog.LevelInfo)
	if err != nil {
		t.Fatal(err)
	}
	p.Start(context.Background())
	p.Done(false)
	p.Done(true)
	p.Done(false)
	clock.Advance(time.Second)
	out.Reset()

	log.Info("hello", "user", 42)
	got := out.String()
	re := regexp.MustCompile(`^` + regexp.QuoteMeta(clearLine) + `(time=\S+ level=INFO msg=hello user=42\n)` +
		regexp.QuoteMeta(clearLine) + `(\[[=> ]{20}\] 3/10  30%  3\.0/s  ETA 2s  failed 1)$`)
	if !re.MatchString(got) {
		t.Fatalf("log write = %q, want clear, the log line intact, clear, the bar", got)
	}

	p.Stop()
	out.Reset()
	log.Info("after")
	if got := out.String(); strings.Contains(got, clearLine) || !strings.HasSuffix(got, "msg=after\n") {
		t.Errorf("after Stop, log write = %q, want the plain line", got)
	}
}

func TestPeriodicLogLine(t *testing.T) {
	var out bytes.Buffer
	var logs lockedBuffer
	p, err := NewProgress(ProgressConfig{
		Out: &out, Mode: "auto", Terminal: false, Total: 10,
		Logger: slog.New(slog.NewJSONHandler(&logs, nil)), Interval: 10 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		p.Done(i == 0)
	}
	p.Start(context.Background())
	defer p.Stop()

	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), `"msg":"progress"`) {
		if time.Now().After(deadline) {
			t.Fatalf("no progress line logged within 10s; logs %q", logs.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	line, _, _ := strings.Cut(logs.String(), "\n")
	var rec struct {
		Msg    string  `json:"msg"`
		Done   int     `json:"done"`
		Total  int     `json:"total"`
		Failed int     `json:"failed"`
		Rate   float64 `json:"rate"`
		ETA    *string `json:"eta"`
	}
	if err := json.Unmarshal([]byte(line), &rec); err != nil {
		t.Fatalf("progress line %q: %v", line, err)
	}
	if rec.Msg != "progress" || rec.Done != 6 || rec.Total != 10 || rec.Failed != 1 || rec.ETA == nil {
		t.Errorf("progress line = %q", line)
	}
	if out.Len() != 0 {
		t.Errorf("periodic mode wrote to Out: %q", out.String())
	}
}

func TestStopIdempotent(t *testing.T) {
	t.Run("started", func(t *testing.T) {
		var out bytes.Buffer
		p, err := NewProgress(ProgressConfig{Out: &out, Mode: "always", Total: 3, Redraw: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		p.Start(context.Background())
		p.Done(false)
		p.Stop()
		first := out.String()
		if strings.Count(first, "\n") != 1 || !strings.HasSuffix(first, "\n") {
			t.Fatalf("after Stop, output = %q, want the bar ended by one newline", first)
		}
		p.Stop()
		p.Start(context.Background())
		time.Sleep(20 * time.Millisecond) // a restarted redraw loop would write by now
		if out.String() != first {
			t.Errorf("output changed after Stop: %q", strings.TrimPrefix(out.String(), first))
		}
	})
	t.Run("never started", func(t *testing.T) {
		var out bytes.Buffer
		p, err := NewProgress(ProgressConfig{Out: &out, Mode: "always", Total: 3})
		if err != nil {
			t.Fatal(err)
		}
		p.Stop()
		p.Stop()
		if out.Len() != 0 {
			t.Errorf("Stop without Start wrote %q", out.String())
		}
	})
	t.Run("context cancelled", func(t *testing.T) {
		var out bytes.Buffer
		p, err := NewProgress(ProgressConfig{Out: &out, Mode: "always", Total: 3, Redraw: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		p.Start(ctx)
		cancel()
		p.Done(false)
		p.Stop()
		p.Stop()
		if !regexp.MustCompile(`\] 1/3  33%  \S+/s  ETA \S+  failed 0\n$`).MatchString(out.String()) {
			t.Errorf("final bar missing after cancelled context: %q", out.String())
		}
	})
}

func TestConcurrentDoneAndLogs(t *testing.T) {
	var out lockedBuffer
	const workers, each, loggers, lines = 8, 1000, 4, 50
	p, err := NewProgress(ProgressConfig{Out: &out, Mode: "always", Total: workers * each, Redraw: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	log, err := NewLogger(p.LogWriter(), "text", true, slog.LevelInfo)
	if err != nil {
		t.Fatal(err)
	}
	p.Start(context.Background())
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range each {
				p.Done(i%7 == 0)
			}
		})
	}
	for g := range loggers {
		wg.Go(func() {
			for i := range lines {
				log.Info("line", "g", g, "i", i)
			}
		})
	}
	wg.Wait()
	p.Stop()

	bar := regexp.MustCompile(`^\[[=> ]{20}\] \d+/8000  \d+%  \S+/s  ETA \S+  failed \d+$`)
	logLine := regexp.MustCompile(`^time=\S+ level=INFO msg=line g=\d i=\d+\n$`)
	got := out.String()
	if !strings.HasSuffix(got, "\n") {
		t.Fatal("output does not end with a newline")
	}
	pieces := strings.Split(strings.TrimSuffix(got, "\n"), clearLine)
	nLogs := 0
	for _, piece := range pieces[1:] {
		switch {
		case logLine.MatchString(piece):
			nLogs++
		case bar.MatchString(piece):
		default:
			t.Fatalf("tangled output piece %q", piece)
		}
	}
	if nLogs != loggers*lines {
		t.Errorf("log lines = %d, want %d", nLogs, loggers*lines)
	}
	wantFailed := workers * ((each + 6) / 7)
	if last := pieces[len(pieces)-1]; !strings.Contains(last, "] 8000/8000  100%  ") ||
		!strings.HasSuffix(last, fmt.Sprintf("failed %d", wantFailed)) {
		t.Errorf("final bar = %q, want 8000/8000 and failed %d", last, wantFailed)
	}
}

func BenchmarkDone(b *testing.B) {
	p, err := NewProgress(ProgressConfig{Out: &bytes.Buffer{}, Mode: "never", Total: 1})
	if err != nil {
		b.Fatal(err)
	}
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			p.Done(i%16 == 0)
			i++
		}
	})
}
