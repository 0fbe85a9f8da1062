// The net/http floor: a bare client sending the same calls to the same simulator, the baseline every pwrotate run is judged against.

package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"pwrotate/rotate"
)

type floorRun struct {
	requests int
	elapsed  time.Duration // the child's own time from first request to last answer
	cpu      time.Duration // user+sys of the whole child process
	maxRSS   float64       // MiB
}

// rps is the floor's requests per second over its request phase.
func (f floorRun) rps() float64 {
	if f.elapsed <= 0 {
		return 0
	}
	return float64(f.requests) / f.elapsed.Seconds()
}

// cpuPer10k is the floor's CPU seconds per 10,000 requests.
func (f floorRun) cpuPer10k() float64 {
	if f.requests <= 0 {
		return 0
	}
	return f.cpu.Seconds() / float64(f.requests) * 10_000
}

// floor runs the net/http floor child once, n requests with benchWorkers
// goroutines against a fresh simulator, and prints it with its ratio to
// wrk (informational: the targets use the floors beside each run).
func (b *bench) floor(ctx context.Context, n int, wrkRPS float64) error {
	load := loadAvg()
	r, err := b.measureFloor(ctx, n, "floor")
	if err != nil {
		return err
	}
	fmt.Fprintf(b.out, "\nnet/http floor: %d POST /v2/users/password, rotate.NewTransport(%d), %d goroutines, zero latency (load before: %s)\n",
		n, benchWorkers, benchWorkers, load)
	fmt.Fprintf(b.out, "  what:              a bare net/http client in its own process: same requests, no generation, sealing or results (informational, no target)\n")
	fmt.Fprintf(b.out, "  requests/s:        %.0f (%.2f s for %d requests)\n", r.rps(), r.elapsed.Seconds(), r.requests)
	if wrkRPS > 0 {
		fmt.Fprintf(b.out, "  ratio to wrk:      %.2f (the most a net/http client reaches here; target for pwrotate >= %.1f)\n", r.rps()/wrkRPS, minWrkRatio)
	}
	fmt.Fprintf(b.out, "  CPU:               %.2f s user+sys, %.3f s per 10k requests (target for pwrotate <= %.1f s per 10k users)\n",
		r.cpu.Seconds(), r.cpuPer10k(), maxCPUPer10k)
	fmt.Fprintf(b.out, "  peak RSS:          %.1f MiB\n", r.maxRSS)
	return nil
}

// floorBeside measures the floor with n requests right before and right
// after a pwrotate run of n users (run), and returns both pooled: the
// machine's speed drifts by 10-20% over a minute here, and a floor taken
// at another time and size would judge the drift, not pwrotate.
func (b *bench) floorBeside(ctx context.Context, n int, run func() error) (floorRun, error) {
	before, err := b.measureFloor(ctx, n, "floor-"+strconv.Itoa(n)+"-before")
	if err != nil {
		return floorRun{}, err
	}
	if err := run(); err != nil {
		return floorRun{}, err
	}
	after, err := b.measureFloor(ctx, n, "floor-"+strconv.Itoa(n)+"-after")
	if err != nil {
		return floorRun{}, err
	}
	fmt.Fprintf(b.out, "  floor beside it:   %.0f/s before, %.0f/s after (%d requests each); the floor targets use both\n",
		before.rps(), after.rps(), n)
	return floorRun{requests: before.requests + after.requests, elapsed: before.elapsed + after.elapsed,
		cpu: before.cpu + after.cpu, maxRSS: max(before.maxRSS, after.maxRSS)}, nil
}

// measureFloor runs the floor child with n requests against a new
// simulator; name names its CPU profile.
func (b *bench) measureFloor(ctx context.Context, n int, name string) (floorRun, error) {
	sim, url, stop, err := b.simulator()
	if err != nil {
		return floorRun{}, err
	}
	defer stop()
	self, err := os.Executable()
	if err != nil {
		return floorRun{}, fmt.Errorf("net/http floor: finding this binary: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, childTimeLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, self, floorArg, "--url", url, "--requests", strconv.Itoa(n),
		"--workers", strconv.Itoa(benchWorkers), "--first-id", strconv.Itoa(firstUserID))
	if b.opt.cpuProfile != "" {
		cmd.Args = append(cmd.Args, "--cpuprofile", filepath.Join(b.opt.cpuProfile, name+".pprof"))
	}
	cmd.Env = append(childEnv(), floorKeyEnv+"="+b.key)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	peak, runErr := runMeasured(cmd)
	var r floorRun
	if cmd.ProcessState != nil {
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			r.cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		}
	}
	r.maxRSS = peak
	if runErr != nil {
		return r, fmt.Errorf("net/http floor: %w: %s", runErr, strings.TrimSpace(stderr.String()))
	}
	r.requests, r.elapsed, err = parseFloorLine(stdout.String())
	if err != nil {
		return r, fmt.Errorf("net/http floor: %w", err)
	}
	if served := sim.Count("password"); r.requests != n || served != n {
		return r, fmt.Errorf("net/http floor: sent %d of %d requests, simulator saw %d", r.requests, n, served)
	}
	return r, nil
}

// overFloor compares a pwrotate run (its CPU seconds per 10k users and its
// apply-phase calls per second) with the floor, in two report lines.
func overFloor(jobCPUPer10k, applyRate float64, f floorRun) []string {
	fc := f.cpuPer10k()
	lines := []string{fmt.Sprintf("over the floor:    job CPU over the floor: %.3f s per 10k users (job %.3f, net/http floor %.3f)",
		jobCPUPer10k-fc, jobCPUPer10k, fc)}
	if fr := f.rps(); fr > 0 {
		lines = append(lines, fmt.Sprintf("rate vs floor:     apply phase at %.2fx the floor's rate (%.0f/s vs %.0f/s)",
			applyRate/fr, applyRate, fr))
	} else {
		lines = append(lines, "rate vs floor:     not measured")
	}
	return lines
}

// formatFloorLine is the floor child's one line of output.
func formatFloorLine(requests int, elapsed time.Duration) string {
	return fmt.Sprintf("%s requests=%d elapsed=%s\n", floorPrefix, requests, elapsed)
}

// parseFloorLine reads what formatFloorLine wrote, from the last line of
// out that starts with "floor:".
func parseFloorLine(out string) (int, time.Duration, error) {
	var line string
	for l := range strings.Lines(out) {
		if l = strings.TrimSpace(l); strings.HasPrefix(l, floorPrefix) {
			line = l
		}
	}
	if line == "" {
		return 0, 0, errors.New("no floor: line in the child's output")
	}
	var (
		requests          int
		elapsed           time.Duration
		haveReq, haveTime bool
	)
	for _, f := range strings.Fields(strings.TrimPrefix(line, floorPrefix)) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			return 0, 0, fmt.Errorf("bad field %q in %q", f, line)
		}
		switch k {
		case "requests":
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return 0, 0, fmt.Errorf("bad requests %q in %q", v, line)
			}
			requests, haveReq = n, true
		case "elapsed":
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return 0, 0, fmt.Errorf("bad elapsed %q in %q", v, line)
			}
			elapsed, haveTime = d, true
		}
	}
	if !haveReq || !haveTime {
		return 0, 0, fmt.Errorf("missing requests or elapsed in %q", line)
	}
	return requests, elapsed, nil
}

// floorOptions are the floor child's arguments.
type floorOptions struct {
	url      string
	requests int
	workers  int
	firstID  int
	profile  string
}

func parseFloorFlags(args []string, stderr io.Writer) (floorOptions, error) {
	fs := flag.NewFlagSet("bench "+floorArg, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o floorOptions
	fs.StringVar(&o.url, "url", "", "simulator base URL")
	fs.IntVar(&o.requests, "requests", floorDefault, "requests to send")
	fs.IntVar(&o.workers, "workers", benchWorkers, "goroutines and connections")
	fs.IntVar(&o.firstID, "first-id", firstUserID, "user ID of the first request")
	fs.StringVar(&o.profile, "cpuprofile", "", "write a CPU profile to this file")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch {
	case fs.NArg() > 0:
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	case o.url == "":
		return o, errors.New("--url is required")
	case o.requests < 1:
		return o, fmt.Errorf("--requests %d: must be 1 or more", o.requests)
	case o.workers < 1:
		return o, fmt.Errorf("--workers %d: must be 1 or more", o.workers)
	case o.firstID < 1:
		return o, fmt.Errorf("--first-id %d: must be 1 or more", o.firstID)
	}
	return o, nil
}

// floorMain is the floor child: it sends the requests and prints one
// formatFloorLine. The key comes from the environment, never argv.
func floorMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parseFloorFlags(args, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "bench %s: %v\n", floorArg, err)
		return 2
	}
	key := os.Getenv(floorKeyEnv)
	if key == "" {
		fmt.Fprintf(stderr, "bench %s: %s is not set\n", floorArg, floorKeyEnv)
		return 2
	}
	if o.profile != "" {
		f, err := os.Create(o.profile)
		if err != nil {
			fmt.Fprintf(stderr, "bench %s: %v\n", floorArg, err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(stderr, "bench %s: %v\n", floorArg, err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	hc := &http.Client{Transport: rotate.NewTransport(o.workers)}
	elapsed, err := sendFloor(ctx, hc, o, key)
	if err != nil {
		fmt.Fprintf(stderr, "bench %s: %v\n", floorArg, err)
		return 1
	}
	fmt.Fprint(stdout, formatFloorLine(o.requests, elapsed))
	return 0
}

// sendFloor sends o.requests password changes (user IDs from o.firstID on)
// with o.workers goroutines, reading and closing every body, and returns
// the time from the first request to the last answer. Any answer but 200
// stops it.
func sendFloor(ctx context.Context, hc *http.Client, o floorOptions, key string) (time.Duration, error) {
	url := strings.TrimSuffix(o.url, "/") + "/v2/users/password"
	hdr := http.Header{
		"X-Api-Key":    {key},
		"Accept":       {"application/json"},
		"User-Agent":   {"pwrotate"},
		"Content-Type": {"application/json"},
	}
	var next atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	start := time.Now()
	for range o.workers {
		g.Go(func() error {
			var body []byte
			for {
				i := int(next.Add(1)) - 1
				if i >= o.requests {
					return nil
				}
				body = floorBody(body[:0], o.firstID+i)
				req, err := http.NewRequestWithContext(gctx, http.MethodPost, url, bytes.NewReader(body))
				if err != nil {
					return fmt.Errorf("request %d: %w", i, err)
				}
				req.Header = hdr.Clone()
				resp, err := hc.Do(req)
				if err != nil {
					return fmt.Errorf("request %d: %w", i, err)
				}
				_, copyErr := io.Copy(io.Discard, resp.Body)
				closeErr := resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					return fmt.Errorf("request %d: HTTP %d", i, resp.StatusCode)
				}
				if err := errors.Join(copyErr, closeErr); err != nil {
					return fmt.Errorf("request %d: reading the answer: %w", i, err)
				}
			}
		})
	}
	err := g.Wait()
	return time.Since(start), err
}

// floorBody appends the JSON body of a password change for id to dst, the
// shape pwrotate sends ({"userId":N,"newPassword":"..."}) with a 24-character
// password for a 7-digit id that meets the simulator's policy.
func floorBody(dst []byte, id int) []byte {
	dst = append(dst, `{"userId":`...)
	dst = strconv.AppendInt(dst, int64(id), 10)
	dst = append(dst, `,"newPassword":"Fl-`...)
	dst = strconv.AppendInt(dst, int64(id), 10)
	return append(dst, `-pw!AbcdefXyz9"}`...)
}

// runMeasured runs cmd and returns its peak RSS in MiB and its error, read
// from /proc/PID/status (VmHWM) every 10 ms while it runs. The rusage of a
// child is no use here: Go starts children with vfork, and Linux carries
// the parent's RSS high-water mark into the child's ru_maxrss at exec, so
// every child would report at least this process's own peak (the
// simulator's, holding every user).
func runMeasured(cmd *exec.Cmd) (float64, error) {
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	status := fmt.Sprintf("/proc/%d/status", cmd.Process.Pid)
	done := make(chan struct{})
	peakKiB := make(chan int64, 1)
	go func() {
		var peak int64
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			if kib := vmHWM(status); kib > peak {
				peak = kib
			}
			select {
			case <-done:
				peakKiB <- peak
				return
			case <-tick.C:
			}
		}
	}()
	err := cmd.Wait()
	close(done)
	return float64(<-peakKiB) / 1024, err
}

// vmHWM returns the VmHWM line of a /proc/PID/status file in KiB, or 0.
func vmHWM(path string) int64 {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}
