package console

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Default intervals of ProgressConfig.
const (
	DefaultInterval = 10 * time.Second
	DefaultRedraw   = 200 * time.Millisecond
)

// Terminal control sequences: carriage return, then erase to end of line.
const clearLine = "\r\x1b[K"

// maxWidth bounds the rendered bar line (it stays under 80 columns).
const maxWidth = 79

// barWidth is the width of the bar between the brackets when room allows.
const barWidth = 20

// ProgressConfig configures NewProgress.
type ProgressConfig struct {
	// Out receives the bar (usually stderr); nil means os.Stderr.
	Out io.Writer
	// Mode is the --progress flag: "auto" (bar if Terminal, else periodic
	// log lines), "always" (bar), "never" (periodic log lines only). An
	// empty Mode means "auto"; anything else is an error.
	Mode string
	// Terminal reports whether Out is a terminal.
	Terminal bool
	// Total is the number of records expected; 0 or less means unknown
	// (no percentage, no ETA).
	Total int
	// Logger receives the periodic "progress" line; nil means slog.Default().
	Logger *slog.Logger
	// Interval is the period of the log line; 0 means DefaultInterval.
	Interval time.Duration
	// Redraw is the period of the bar redraw; 0 means DefaultRedraw.
	Redraw time.Duration
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
}

// sample is the done count at an instant, for the recent rate.
type sample struct {
	t    time.Time
	done int64
}

// Progress counts finished records and shows them: a bar redrawn in place on
// a terminal, or a "progress" log line every Interval. Done is safe to call
// from any goroutine; the display runs between Start and Stop.
type Progress struct {
	done   atomic.Int64
	failed atomic.Int64

	out      io.Writer
	bar      bool
	total    atomic.Int64
	logger   atomic.Pointer[slog.Logger]
	tick     time.Duration
	window   time.Duration
	now      func() time.Time
	quit     chan struct{}
	exited   chan struct{}
	startOne sync.Once
	stopOne  sync.Once

	// mu serializes every write to out and guards the fields below.
	mu      sync.Mutex
	buf     []byte
	start   time.Time
	base    int64 // done at Start
	samples []sample
	shown   bool // the bar is on screen, without a trailing newline
	running bool // between Start and Stop
}

// NewProgress checks cfg and returns a Progress that shows nothing until
// Start.
func NewProgress(cfg ProgressConfig) (*Progress, error) {
	p := &Progress{
		out:    cfg.Out,
		now:    cfg.Now,
		quit:   make(chan struct{}),
		exited: make(chan struct{}),
	}
	switch cfg.Mode {
	case "auto", "":
		p.bar = cfg.Terminal
	case "always":
		p.bar = true
	case "never":
		p.bar = false
	default:
		return nil, fmt.Errorf("--progress %q: want auto, always or never", cfg.Mode)
	}
	if p.out == nil {
		p.out = os.Stderr
	}
	p.total.Store(int64(max(cfg.Total, 0)))
	p.SetLogger(cfg.Logger)
	if p.now == nil {
		p.now = time.Now
	}
	interval, redraw := cfg.Interval, cfg.Redraw
	if interval <= 0 {
		interval = DefaultInterval
	}
	if redraw <= 0 {
		redraw = DefaultRedraw
	}
	p.tick = interval
	if p.bar {
		p.tick = redraw
	}
	// The rate is measured over the last few seconds, and over at least
	// a few ticks so that a slow periodic line still sees a recent rate.
	p.window = max(5*time.Second, 3*p.tick)
	p.start = p.now()
	return p, nil
}

// Done counts one finished record; failed counts it also as a failure
// (failed or invalid). It is two atomic operations at most.
func (p *Progress) Done(failed bool) {
	p.done.Add(1)
	if failed {
		p.failed.Add(1)
	}
}

// Start shows the bar (or starts the periodic line) and runs the redraw
// goroutine until Stop or until ctx is done; after ctx is done the bar stays
// on screen, frozen, until Stop draws it a last time. Only the first call has
// an effect, and none after Stop.
func (p *Progress) Start(ctx context.Context) {
	p.startOne.Do(func() {
		p.mu.Lock()
		now := p.now()
		p.start, p.base = now, p.done.Load()
		p.samples = append(p.samples[:0], sample{now, p.base})
		p.running = true
		if p.bar {
			p.draw(now, "")
		}
		p.mu.Unlock()
		go p.loop(ctx)
	})
}

func (p *Progress) loop(ctx context.Context) {
	defer close(p.exited)
	t := time.NewTicker(p.tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.quit:
			return
		case <-t.C:
			p.update()
		}
	}
}

// update records a rate sample and redraws the bar or logs the line.
func (p *Progress) update() {
	p.mu.Lock()
	if !p.running {
		p.mu.Unlock()
		return
	}
	now := p.now()
	p.addSample(now)
	if p.bar {
		p.draw(now, "")
		p.mu.Unlock()
		return
	}
	st := p.state(now)
	p.mu.Unlock()
	// Log without holding mu: the logger may write through LogWriter.
	p.logLine(st)
}

// Stop draws the bar a last time and ends its line (or logs a last
// "progress" line), and stops the goroutine. It is idempotent; after Stop,
// SetTotal sets the number of records expected (known once the plan is made).
func (p *Progress) SetTotal(n int) { p.total.Store(int64(max(n, 0))) }

// SetLogger sets the logger of the periodic progress line (nil: slog.Default).
// The logger may write through LogWriter.
func (p *Progress) SetLogger(l *slog.Logger) {
	if l == nil {
		l = slog.Default()
	}
	p.logger.Store(l)
}

// LogWriter passes lines through untouched.
func (p *Progress) Stop() {
	p.stopOne.Do(func() {
		close(p.quit)
		p.startOne.Do(func() { close(p.exited) }) // never started
		<-p.exited

		p.mu.Lock()
		wasRunning := p.running
		p.running = false
		now := p.now()
		if !wasRunning {
			p.mu.Unlock()
			return
		}
		if p.bar {
			p.draw(now, "\n")
			p.shown = false
			p.mu.Unlock()
			return
		}
		st := p.state(now)
		p.mu.Unlock()
		p.logLine(st)
	})
}

// LogWriter returns the writer to give NewLogger. While the bar is shown,
// each write clears the bar's line, writes the log line (a newline is added
// if missing) and draws the bar again below it, all in one write under the
// same lock as the redraws, so that lines never interleave with the bar.
// Without a bar, writes go to Out under that lock.
func (p *Progress) LogWriter() io.Writer { return logWriter{p} }

type logWriter struct{ p *Progress }

// Write implements io.Writer; one call should carry whole lines.
func (w logWriter) Write(b []byte) (int, error) {
	p := w.p
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.shown {
		if _, err := p.out.Write(b); err != nil {
			return 0, err
		}
		return len(b), nil
	}
	p.buf = append(p.buf[:0], clearLine...)
	p.buf = append(p.buf, b...)
	if len(b) > 0 && b[len(b)-1] != '\n' {
		p.buf = append(p.buf, '\n')
	}
	p.buf = append(p.buf, clearLine...)
	p.buf = p.appendBar(p.buf, p.state(p.now()))
	if _, err := p.out.Write(p.buf); err != nil {
		return 0, err
	}
	return len(b), nil
}

// draw writes the bar over the current line, followed by suffix. Call with
// mu held. A write error is ignored: progress is best effort.
func (p *Progress) draw(now time.Time, suffix string) {
	p.buf = append(p.buf[:0], clearLine...)
	p.buf = p.appendBar(p.buf, p.state(now))
	p.buf = append(p.buf, suffix...)
	_, _ = p.out.Write(p.buf)
	p.shown = true
}

// addSample records the done count at now and forgets samples older than the
// rate window. Call with mu held.
func (p *Progress) addSample(now time.Time) {
	p.samples = append(p.samples, sample{now, p.done.Load()})
	i := 0
	for i < len(p.samples)-1 && now.Sub(p.samples[i].t) > p.window {
		i++
	}
	if i > 0 {
		p.samples = append(p.samples[:0], p.samples[i:]...)
	}
}

// progressState is a snapshot of the counts and derived figures.
type progressState struct {
	done, failed, total int64
	rate                float64 // records per second; 0 when unknown
	eta                 time.Duration
	etaKnown            bool
}

// state computes the snapshot at now. Call with mu held.
func (p *Progress) state(now time.Time) progressState {
	st := progressState{done: p.done.Load(), failed: p.failed.Load(), total: p.total.Load()}

	// Recent rate: since the oldest sample inside the window if it spans
	// at least a second, else the overall rate since Start.
	from := sample{p.start, p.base}
	if len(p.samples) > 0 {
		if age := now.Sub(p.samples[0].t); age >= time.Second && age <= p.window {
			from = p.samples[0]
		}
	}
	if span := now.Sub(from.t).Seconds(); span > 0 && st.done >= from.done {
		st.rate = float64(st.done-from.done) / span
	}
	switch {
	case st.total <= 0:
	case st.done >= st.total:
		st.etaKnown = true
	case st.rate > 0:
		secs := float64(st.total-st.done) / st.rate
		if secs < float64(math.MaxInt64/int64(time.Second)) {
			st.eta = time.Duration(secs * float64(time.Second))
			st.etaKnown = true
		}
	}
	return st
}

// appendBar appends the bar line for st, at most maxWidth columns:
// "[=========>          ] 1234/5000  24%  412/s  ETA 9s  failed 3".
func (p *Progress) appendBar(b []byte, st progressState) []byte {
	var tail strings.Builder
	if st.total > 0 {
		pct := min(st.done*100/st.total, 100)
		fmt.Fprintf(&tail, " %d/%d  %d%%", st.done, st.total, pct)
	} else {
		fmt.Fprintf(&tail, " %d done", st.done)
	}
	fmt.Fprintf(&tail, "  %s  ETA %s  failed %d", formatRate(st.rate), formatETA(st), st.failed)

	width := min(barWidth, maxWidth-tail.Len()-2)
	if st.total > 0 && width >= 5 {
		filled := int(min(int64(width)*st.done/st.total, int64(width)))
		b = append(b, '[')
		b = append(b, strings.Repeat("=", filled)...)
		if filled < width {
			b = append(b, '>')
			b = append(b, strings.Repeat(" ", width-filled-1)...)
		}
		b = append(b, ']')
	}
	line := tail.String()
	if st.total <= 0 || width < 5 {
		line = strings.TrimPrefix(line, " ")
	}
	if len(line) > maxWidth {
		line = line[:maxWidth]
	}
	return append(b, line...)
}

// logLine logs the periodic "progress" line.
func (p *Progress) logLine(st progressState) {
	p.logger.Load().Info("progress",
		"done", st.done,
		"total", st.total,
		"rate", math.Round(st.rate*10)/10,
		"eta", formatETA(st),
		"failed", st.failed)
}

// formatRate prints records per second: "412/s", "2.5/s", "--/s" if unknown.
func formatRate(r float64) string {
	switch {
	case r <= 0:
		return "--/s"
	case r < 10:
		return strconv.FormatFloat(r, 'f', 1, 64) + "/s"
	default:
		return strconv.FormatFloat(r, 'f', 0, 64) + "/s"
	}
}

// formatETA prints the time left: "9s", "4m05s", "2h07m", or "--".
func formatETA(st progressState) string {
	if !st.etaKnown {
		return "--"
	}
	d := st.eta.Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	default:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
}
