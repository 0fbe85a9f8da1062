// Command bench measures pwrotate against the performance targets of
// issue 4: throughput against wrk, rate accuracy, peak memory and CPU per
// user.
//
// It hosts the ECGrid simulator in its own process on 127.0.0.1 and runs
// the job as a child process (a pwrotate binary it builds first, or the one
// given by --binary), so that the child's rusage measures the job alone:
//
//	go run ./job/bench                       # from the repository root
//	go run ./job/bench --users 20000 --skip-wrk
//
// It installs nothing: without wrk on PATH it says how to get it and skips
// the throughput ratio. It exits 1 when a target fails, 2 when it cannot
// measure.
//
// Before the pwrotate runs it measures a baseline, the "net/http floor": a
// child process (this binary again, with the hidden first argument
// __floor) that sends the same POST /v2/users/password requests with
// rotate.NewTransport and nothing else, so that the job's CPU and
// throughput can be judged against what Go's net/http client costs on the
// machine. The floor is informational: it has no target.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"filippo.io/age"

	"pwrotate/report"
	"pwrotate/rotate/ecgridsim"
)

// Targets of issue 4.
const (
	minWrkRatio        = 0.7  // users/s of the whole run over wrk's requests/s
	minRateAccuracy    = 0.98 // achieved over configured rate
	maxRSS200k         = 64   // MiB at 200,000 users
	maxRSSGrowth       = 3.0  // RSS(200k) / RSS(20k)
	maxCPUPer10k       = 0.3  // CPU seconds (user+sys) per 10,000 users
	callerID           = 1    // the API key's owner, never in the input
	firstUserID        = 1_000_000
	benchWorkers       = 64
	rateWorkers        = 32
	rateLimit          = 300
	rateBurst          = 1
	rateLatencyMin     = 20 * time.Millisecond
	rateLatencyMax     = 50 * time.Millisecond
	throttleLimit      = 300  // the throttled server's calls a second by default (one second of burst, then 429 Retry-After: 1)
	minFloorRatio20k   = 0.75 // whole process users/s over the floor's requests/s, 20k users (issue 11)
	minFloorRatio200k  = 0.85 // the same at 200k users
	maxFloorCPU        = 1.5  // CPU per 10k users over the floor's per 10k requests
	throttleLatencyMin = 20 * time.Millisecond
	throttleLatencyMax = 40 * time.Millisecond
	maxThrottleTime    = 1.15
	maxThrottleShare   = 0.01
	childTimeLimit     = 10 * time.Minute
	wrkConnections     = 64
	wrkThreads         = 2
	wrkInstallHint     = "apt-get install -y wrk"
	summaryFileName    = report.SummaryName
	floorArg           = "__floor"           // hidden first argument: run as the floor child
	floorKeyEnv        = "PWBENCH_FLOOR_KEY" // the simulator key, for the floor child
	floorPrefix        = "floor:"            // the floor child's one line of output
	floorDefault       = 100_000
)

type options struct {
	users          []int
	rateUsers      int
	skipWrk        bool
	binary         string
	wrkDur         time.Duration
	keep           bool
	skipFloor      bool
	floorReqs      int
	throttleUsers  int
	throttleRates  []int
	throttleLimits []int  // the throttled servers' limits, calls a second
	export         bool   // inputs with the columns of 'pwrotate users', and a login glob to protect
	cpuProfile     string // folder for CPU profiles of every child (pwrotate built with -tags pprof)
	groups         int    // networks in the sealing-per-group runs (0 skips them)
	groupUsers     int    // users in each of those runs
	repeat         int    // throughput runs per user count; targets judged on the medians
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == floorArg {
		os.Exit(floorMain(context.Background(), os.Args[2:], os.Stdout, os.Stderr))
	}
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	opt, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 2
	}
	b, err := newBench(ctx, opt, stdout)
	if err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 2
	}
	defer b.close()
	ok, err := b.all(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 2
	}
	if !ok {
		return 1
	}
	return 0
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	users := fs.String("users", "20000,200000", "comma-separated user counts for the throughput, memory and CPU runs")
	rateUsers := fs.Int("rate-users", 6000, "users in the --rate 300 accuracy run (6000 is about 20 s)")
	skipWrk := fs.Bool("skip-wrk", false, "do not run wrk (no throughput ratio)")
	binary := fs.String("binary", "", "pwrotate binary to measure (default: build one from the module root)")
	wrkDur := fs.Duration("wrk-duration", 10*time.Second, "how long wrk runs")
	keep := fs.Bool("keep", false, "keep the temporary folder (inputs, outputs, logs)")
	skipFloor := fs.Bool("skip-floor", false, "do not measure the net/http floor (a bare client sending the same requests)")
	floorReqs := fs.Int("floor-requests", floorDefault, "requests the net/http floor sends")
	throttleUsers := fs.Int("throttle-users", 9000, "users in each throttled-server run (0 skips them)")
	throttleRates := fs.String("throttle-rates", "400,1000", "comma-separated --rate settings for the throttled-server runs")
	throttleLimits := fs.String("throttle-limits", strconv.Itoa(throttleLimit), "comma-separated limits of the throttled servers, calls a second; each run has --throttle-users scaled to 30 s of the limit at the default 9000")
	export := fs.Bool("export-input", false, "inputs with the columns of 'pwrotate users' (login, authLevel, ...) and --protect with a login glob that matches nobody: the cost of keeping logins and levels")
	repeat := fs.Int("repeat", 3, "throughput runs per --users count, each beside its own floor; the targets are judged on the medians")
	groups := fs.Int("groups", 0, "also compare runs sealed per group: --group-users users in this many networks, each with its own recipient (--recipients-map), against the same users in one network, --repeat pairs, every other one run the other way round (0 skips them)")
	groupUsers := fs.Int("group-users", 20000, "users in each --groups run")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of every child to this folder (NAME.pprof; pwrotate is built with -tags pprof, so not with --binary)")
	if err := fs.Parse(args); err != nil {
		return options{}, err
	}
	if fs.NArg() > 0 {
		return options{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	opt := options{rateUsers: *rateUsers, skipWrk: *skipWrk, binary: *binary, wrkDur: *wrkDur, keep: *keep,
		skipFloor: *skipFloor, floorReqs: *floorReqs, throttleUsers: *throttleUsers, export: *export, cpuProfile: *cpuProfile, repeat: *repeat,
		groups: *groups, groupUsers: *groupUsers}
	if opt.groups < 0 || opt.groups > 100_000 || (opt.groups > 0 && (opt.groupUsers < opt.groups || opt.groupUsers > 10_000_000)) {
		return options{}, fmt.Errorf("--groups %d --group-users %d: groups must be between 0 (skip) and 100000, and users between the groups and 10000000", opt.groups, opt.groupUsers)
	}
	if opt.repeat < 1 || opt.repeat > 99 {
		return options{}, fmt.Errorf("--repeat %d: must be between 1 and 99", opt.repeat)
	}
	if opt.cpuProfile != "" && opt.binary != "" {
		return options{}, errors.New("--cpuprofile builds its own pwrotate (with -tags pprof): drop --binary")
	}
	var err error
	if opt.throttleLimits, err = parseCounts("--throttle-limits", *throttleLimits); err != nil {
		return options{}, err
	}
	if opt.throttleRates, err = parseCounts("--throttle-rates", *throttleRates); err != nil {
		return options{}, err
	}
	if opt.throttleUsers < 0 || opt.throttleUsers > 10_000_000 {
		return options{}, fmt.Errorf("--throttle-users %d: must be between 0 (skip) and 10000000", opt.throttleUsers)
	}
	if opt.users, err = parseCounts("--users", *users); err != nil {
		return options{}, err
	}
	if opt.rateUsers < 0 {
		return options{}, fmt.Errorf("--rate-users %d: must be 0 (skip) or more", opt.rateUsers)
	}
	if opt.floorReqs < 1 || opt.floorReqs > 10_000_000 {
		return options{}, fmt.Errorf("--floor-requests %d: must be between 1 and 10000000 (--skip-floor skips it)", opt.floorReqs)
	}
	return opt, nil
}

// parseCounts reads flag's list such as "20000,200000".
func parseCounts(flag, s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 || n > 10_000_000 {
			return nil, fmt.Errorf("%s: %q is not a count between 1 and 10000000", flag, f)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: empty list", flag)
	}
	return out, nil
}

// bench holds what every scenario shares.
type bench struct {
	opt       options
	out       io.Writer
	dir       string
	binary    string
	key       string
	recipient string
	failed    []string
	runs      int // child runs so far: each has its own output folder
}

func newBench(ctx context.Context, opt options, out io.Writer) (*bench, error) {
	dir, err := os.MkdirTemp("", "pwbench-")
	if err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	b := &bench{opt: opt, out: out, dir: dir, binary: opt.binary}
	var kb [16]byte
	_, _ = rand.Read(kb[:])
	b.key = "bench-" + hex.EncodeToString(kb[:]) // a throw-away key for the simulator
	id, err := age.GenerateX25519Identity()
	if err != nil {
		b.close()
		return nil, fmt.Errorf("age identity: %w", err)
	}
	b.recipient = id.Recipient().String()
	if b.binary == "" {
		if b.binary, err = buildBinary(ctx, dir, opt.cpuProfile != ""); err != nil {
			b.close()
			return nil, err
		}
	}
	return b, nil
}

func (b *bench) close() {
	if b.opt.keep {
		fmt.Fprintf(b.out, "kept %s\n", b.dir)
		return
	}
	_ = os.RemoveAll(b.dir)
}

// buildBinary builds pwrotate from the module root into dir.
func buildBinary(ctx context.Context, dir string, pprofTag bool) (string, error) {
	root, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(root))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the pwrotate module: run from the repository root, or pass --binary")
	}
	bin := filepath.Join(dir, "pwrotate")
	args := []string{"build", "-o", bin}
	if pprofTag {
		args = append(args, "-tags", "pprof")
	}
	cmd := exec.CommandContext(ctx, "go", append(args, ".")...)
	cmd.Dir = filepath.Dir(mod)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %w\n%s", err, out)
	}
	return bin, nil
}

func (b *bench) all(ctx context.Context) (bool, error) {
	b.machine(ctx)

	var wrkRPS float64
	if b.opt.skipWrk {
		fmt.Fprintf(b.out, "\nwrk: skipped (--skip-wrk): no throughput ratio\n")
	} else if _, err := exec.LookPath("wrk"); err != nil {
		fmt.Fprintf(b.out, "\nwrk: not found on PATH; install it (Debian: %s) for the throughput ratio; skipping it\n", wrkInstallHint)
	} else {
		rps, err := b.wrk(ctx)
		if err != nil {
			return false, err
		}
		wrkRPS = rps
	}

	if b.opt.skipFloor {
		fmt.Fprintf(b.out, "\nnet/http floor: skipped (--skip-floor)\n")
	} else if err := b.floor(ctx, b.opt.floorReqs, wrkRPS); err != nil {
		return false, err
	}

	rss := map[int]float64{}
	for _, n := range b.opt.users {
		var runs []tpRun
		for k := range b.opt.repeat {
			r, err := b.throughput(ctx, n, k+1, wrkRPS)
			if err != nil {
				return false, err
			}
			runs = append(runs, r)
		}
		rss[n] = b.judgeThroughput(n, runs)
	}
	b.memoryScaling(rss)

	if b.opt.groups > 0 {
		if err := b.sealingPerGroup(ctx); err != nil {
			return false, err
		}
	}

	if b.opt.rateUsers > 0 {
		if err := b.rateAccuracy(ctx, b.opt.rateUsers); err != nil {
			return false, err
		}
	}

	if b.opt.throttleUsers > 0 {
		for _, limit := range b.opt.throttleLimits {
			for _, r := range b.opt.throttleRates {
				n := b.opt.throttleUsers * limit / throttleLimit
				if err := b.throttled(ctx, n, r, limit); err != nil {
					return false, err
				}
			}
		}
	}

	fmt.Fprintln(b.out)
	if len(b.failed) > 0 {
		fmt.Fprintf(b.out, "RESULT: FAIL (%s)\n", strings.Join(b.failed, "; "))
		return false, nil
	}
	fmt.Fprintln(b.out, "RESULT: PASS (every target measured here was met)")
	return true, nil
}

func (b *bench) machine(ctx context.Context) {
	fmt.Fprintln(b.out, "pwrotate performance (issue 4)")
	fmt.Fprintf(b.out, "machine: %d CPUs (nproc), %s, %s/%s\n", runtime.NumCPU(), cpuModel(), runtime.GOOS, runtime.GOARCH)
	goVersion := runtime.Version()
	if out, err := exec.CommandContext(ctx, b.binary, "version").Output(); err == nil {
		goVersion += "; binary: " + strings.TrimSpace(string(out))
	}
	fmt.Fprintf(b.out, "go: %s\n", goVersion)
	fmt.Fprintf(b.out, "load average before: %s\n", loadAvg())
}

// cpuModel returns the first "model name" of /proc/cpuinfo.
func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// simulator starts a fresh simulator on loopback.
func (b *bench) simulator() (*ecgridsim.Server, string, func(), error) {
	sim := ecgridsim.New()
	sim.SetAutoCreate(true)
	sim.AddKey(b.key, callerID, "NetworkAdmin")
	sim.SetCallLimit(0)
	url, srv, err := sim.ListenLoopback()
	if err != nil {
		return nil, "", nil, err
	}
	stop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}
	return sim, url, stop, nil
}

// wrkScript is the Lua script that makes wrk change a password per request,
// a new user each time (the simulator auto-creates users).
const wrkScript = `local n = 0
local headers = {["Content-Type"] = "application/json", ["X-API-Key"] = %q}
request = function()
  n = n + 1
  local body = string.format('{"userId":%%d,"newPassword":"Wrk-%%d-pw!x"}', %d + n, n)
  return wrk.format("POST", "/v2/users/password", headers, body)
end
`

type childRun struct {
	wall    time.Duration
	cpu     time.Duration // user+sys
	maxRSS  float64       // MiB
	summary report.Summary
	logPath string
}

// runChild runs pwrotate run --apply on n users against url.
func (b *bench) runChild(ctx context.Context, name string, n int, url string, flags ...string) (childRun, error) {
	input := filepath.Join(b.dir, name+".csv")
	if err := writeInput(input, n, b.opt.export); err != nil {
		return childRun{}, err
	}
	if b.opt.export {
		protect := filepath.Join(b.dir, name+"-protect.txt")
		if err := os.WriteFile(protect, []byte("svc-*\n"), 0o600); err != nil {
			return childRun{}, fmt.Errorf("writing %s: %w", protect, err)
		}
		flags = append(flags, "--protect", protect)
	}
	return b.runChildOn(ctx, name, input, n, url, flags...)
}

// runChildOn is runChild on an input already written, of n users.
func (b *bench) runChildOn(ctx context.Context, name, input string, n int, url string, flags ...string) (childRun, error) {
	// Each run writes a folder of its own, kept until the bench ends: on
	// ext4 without a journal, creating a file skips every inode freed in the
	// last minute or more, one buffer lookup each (recently_deleted in
	// perf), so removing a run's 1,000 sealed files would slow the next
	// run's creates (docs/performance.md).
	b.runs++
	out := filepath.Join(b.dir, fmt.Sprintf("%s-out-%d", name, b.runs))
	logPath := filepath.Join(b.dir, name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return childRun{}, fmt.Errorf("creating %s: %w", logPath, err)
	}
	defer logFile.Close()
	args := append([]string{"run", "--apply", "--input", input, "--out", out, "--recipient", b.recipient,
		"--base-url", url, "--log-format", "json", "--progress", "never"}, flags...)
	ctx, cancel := context.WithTimeout(ctx, childTimeLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, b.binary, args...)
	cmd.Env = append(childEnv(), "ECGRID_API_KEY="+b.key)
	if b.opt.cpuProfile != "" {
		cmd.Env = append(cmd.Env, "PWROTATE_CPUPROFILE="+filepath.Join(b.opt.cpuProfile, name+".pprof"))
	}
	cmd.Stdout, cmd.Stderr = io.Discard, logFile
	start := time.Now()
	peak, runErr := runMeasured(cmd)
	wall := time.Since(start)
	r := childRun{wall: wall, logPath: logPath}
	if cmd.ProcessState != nil {
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			r.cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		}
	}
	r.maxRSS = peak
	if runErr != nil {
		return r, fmt.Errorf("pwrotate (%s): %w; log: %s", name, runErr, tail(logPath, 5))
	}
	if r.summary, err = report.ReadSummary(filepath.Join(out, summaryFileName)); err != nil {
		return r, fmt.Errorf("pwrotate (%s): %w", name, err)
	}
	if got := r.summary.Counts[string(report.Updated)]; got != n || r.summary.ExitCode != 0 {
		return r, fmt.Errorf("pwrotate (%s): %d of %d users updated, exit code %d; log: %s", name, got, n, r.summary.ExitCode, tail(logPath, 5))
	}
	return r, nil
}

// childEnv is the environment without PWROTATE_* settings, which would
// change the flags measured.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PWROTATE_") || strings.HasPrefix(kv, "ECGRID_API_KEY=") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// tail returns the last n lines of a file, one line.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log)"
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// tpRun is one throughput run, with the floor measured beside it.
type tpRun struct {
	usersPerSec float64
	cpuPer10k   float64
	maxRSS      float64 // MiB
	wrkRatio    float64 // 0: wrk not measured
	wholeRatio  float64 // users/s over the floor's requests/s; 0: no floor
	cpuRatio    float64 // CPU per 10k over the floor's; 0: no floor
}

// throughput runs pwrotate once on n users at full speed (and the floor
// beside it, unless --skip-floor) and prints the run's numbers; the
// targets are judged by judgeThroughput, over every repeat.
func (b *bench) throughput(ctx context.Context, n, k int, wrkRPS float64) (tpRun, error) {
	_, url, stop, err := b.simulator()
	if err != nil {
		return tpRun{}, err
	}
	defer stop()
	load := loadAvg()
	var r childRun
	job := func() error {
		var err error
		r, err = b.runChild(ctx, "users-"+strconv.Itoa(n), n, url,
			"--rate", "0", "--workers", strconv.Itoa(benchWorkers))
		return err
	}
	fmt.Fprintf(b.out, "\nthroughput: %d users, --rate 0 --workers %d, zero latency, run %d of %d (load before: %s)\n",
		n, benchWorkers, k, b.opt.repeat, load)
	var beside floorRun
	if !b.opt.skipFloor {
		beside, err = b.floorBeside(ctx, n, job)
	} else {
		err = job()
	}
	if err != nil {
		return tpRun{}, err
	}
	t := tpRun{usersPerSec: float64(n) / r.wall.Seconds(), cpuPer10k: r.cpu.Seconds() / float64(n) * 10_000, maxRSS: r.maxRSS}
	callsPerSec := float64(r.summary.APICalls) / r.wall.Seconds()
	fmt.Fprintf(b.out, "  wall time:         %.2f s (whole process: plan, seal, apply, results)\n", r.wall.Seconds())
	fmt.Fprintf(b.out, "  users/s:           %.0f\n", t.usersPerSec)
	fmt.Fprintf(b.out, "  API calls/s:       %.0f over the process, %.0f in the apply phase (%d calls, %d retries)\n",
		callsPerSec, r.summary.AchievedRate, r.summary.APICalls, r.summary.Retries)
	if wrkRPS > 0 {
		t.wrkRatio = t.usersPerSec / wrkRPS
		fmt.Fprintf(b.out, "  ratio to wrk:      %.2f (apply phase alone %.2f)\n", t.wrkRatio, r.summary.AchievedRate/wrkRPS)
	} else {
		fmt.Fprintf(b.out, "  ratio to wrk:      not measured\n")
	}
	fmt.Fprintf(b.out, "  peak RSS:          %.1f MiB\n", r.maxRSS)
	fmt.Fprintf(b.out, "  CPU:               %.2f s user+sys, %.3f s per 10k users\n", r.cpu.Seconds(), t.cpuPer10k)
	if !b.opt.skipFloor {
		for _, line := range overFloor(t.cpuPer10k, r.summary.AchievedRate, beside) {
			fmt.Fprintf(b.out, "  %s\n", line)
		}
		if fr, fc := beside.rps(), beside.cpuPer10k(); fr > 0 && fc > 0 {
			t.wholeRatio, t.cpuRatio = t.usersPerSec/fr, t.cpuPer10k/fc
			fmt.Fprintf(b.out, "  whole vs floor:    %.2fx the floor's rate (%.0f users/s vs %.0f/s)\n", t.wholeRatio, t.usersPerSec, fr)
			fmt.Fprintf(b.out, "  CPU vs floor:      %.2fx the floor's CPU per 10k\n", t.cpuRatio)
		}
	}
	return t, nil
}

// median returns the median of v (the mean of the middle two for an even
// count), sorting v.
func median(v []float64) float64 {
	slices.Sort(v)
	if len(v)%2 == 0 {
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return v[len(v)/2]
}

// judgeThroughput judges the targets at n users on the medians of the
// runs (peak RSS: the largest), and returns that peak RSS.
func (b *bench) judgeThroughput(n int, runs []tpRun) float64 {
	pick := func(f func(tpRun) float64) (med float64, all string) {
		var v []float64
		var parts []string
		for _, r := range runs {
			v = append(v, f(r))
			parts = append(parts, fmt.Sprintf("%.2f", f(r)))
		}
		return median(v), strings.Join(parts, ", ")
	}
	what := "one run"
	if len(runs) > 1 {
		what = fmt.Sprintf("median of %d runs", len(runs))
	}
	fmt.Fprintf(b.out, "\nthroughput at %d users, %s (each run's value in brackets):\n", n, what)
	rss := 0.0
	for _, r := range runs {
		rss = max(rss, r.maxRSS)
	}
	fmt.Fprintf(b.out, "  peak RSS:          %.1f MiB, the largest", rss)
	if n == 200_000 {
		fmt.Fprintf(b.out, "  target <= %d MiB: %s", maxRSS200k, b.verdict(rss <= maxRSS200k, fmt.Sprintf("peak RSS %.1f MiB at 200000", rss)))
	}
	fmt.Fprintln(b.out)
	if runs[0].wrkRatio > 0 {
		m, all := pick(func(r tpRun) float64 { return r.wrkRatio })
		fmt.Fprintf(b.out, "  ratio to wrk:      %.2f (%s)  target >= %.1f: %s\n", m, all, minWrkRatio,
			b.verdict(m >= minWrkRatio, fmt.Sprintf("throughput %d users: %.2f of wrk", n, m)))
	}
	m, all := pick(func(r tpRun) float64 { return r.cpuPer10k })
	fmt.Fprintf(b.out, "  CPU per 10k users: %.3f s (%s)  target <= %.1f: %s\n", m, all, maxCPUPer10k,
		b.verdict(m <= maxCPUPer10k, fmt.Sprintf("CPU %.3f s/10k at %d", m, n)))
	if runs[0].wholeRatio == 0 {
		return rss
	}
	want := minFloorRatio20k
	if n >= 200_000 {
		want = minFloorRatio200k
	}
	m, all = pick(func(r tpRun) float64 { return r.wholeRatio })
	fmt.Fprintf(b.out, "  whole vs floor:    %.2fx (%s)  target >= %.2f: %s\n", m, all, want,
		b.verdict(m >= want, fmt.Sprintf("%d users: %.2fx the floor", n, m)))
	m, all = pick(func(r tpRun) float64 { return r.cpuRatio })
	fmt.Fprintf(b.out, "  CPU vs floor:      %.2fx (%s)  target <= %.2f: %s\n", m, all, maxFloorCPU,
		b.verdict(m <= maxFloorCPU, fmt.Sprintf("%d users: CPU %.2fx the floor's", n, m)))
	return rss
}

// memoryScaling compares the peak RSS at 200k users with that at 20k.
func (b *bench) memoryScaling(rss map[int]float64) {
	small, ok1 := rss[20_000]
	big, ok2 := rss[200_000]
	if !ok1 || !ok2 || small == 0 {
		return
	}
	g := big / small
	fmt.Fprintf(b.out, "\nmemory scaling: peak RSS %.1f MiB at 200000 / %.1f MiB at 20000 = %.2fx  target <= %.0fx: %s\n",
		big, small, g, maxRSSGrowth, b.verdict(g <= maxRSSGrowth, fmt.Sprintf("RSS grows %.2fx from 20k to 200k", g)))
}

func (b *bench) rateAccuracy(ctx context.Context, n int) error {
	sim, url, stop, err := b.simulator()
	if err != nil {
		return err
	}
	defer stop()
	sim.SetCallLimit(-1)
	sim.SetLatency(rateLatencyMin, rateLatencyMax)
	load := loadAvg()
	r, err := b.runChild(ctx, "rate", n, url, "--rate", strconv.Itoa(rateLimit), "--burst", strconv.Itoa(rateBurst),
		"--workers", strconv.Itoa(rateWorkers))
	if err != nil {
		return err
	}
	calls := sim.Calls()
	times := make([]time.Time, len(calls))
	var pool []time.Time // the apply phase: every call but the preflight
	for i, c := range calls {
		times[i] = c.At
		if c.Endpoint != "me" {
			pool = append(pool, c.At)
		}
	}
	// The preflight comes before reading and sealing; the rate is judged
	// over the pool's calls (retries and resets included).
	achieved := achievedRate(pool)
	peak, at := maxInWindow(times, time.Second)
	limit := rateLimit + rateBurst
	fmt.Fprintf(b.out, "\nrate accuracy: %d users, --rate %d --burst %d --workers %d, latency %s-%s (load before: %s)\n",
		n, rateLimit, rateBurst, rateWorkers, rateLatencyMin, rateLatencyMax, load)
	fmt.Fprintf(b.out, "  wall time:         %.2f s\n", r.wall.Seconds())
	fmt.Fprintf(b.out, "  calls seen:        %d (simulator; summary says %d calls, %d retries)\n", len(calls), r.summary.APICalls, r.summary.Retries)
	fmt.Fprintf(b.out, "  achieved rate:     %.1f/s first to last call of the apply phase (summary: %.1f/s); configured %d/s  target >= %.0f: %s\n",
		achieved, r.summary.AchievedRate, rateLimit, minRateAccuracy*rateLimit,
		b.verdict(achieved >= minRateAccuracy*rateLimit, fmt.Sprintf("achieved rate %.1f/s", achieved)))
	fmt.Fprintf(b.out, "  max in 1 s window: %d calls (window starting %.3f s into the run)  target <= %d: %s\n",
		peak, at.Sub(times[0]).Seconds(), limit, b.verdict(peak <= limit, fmt.Sprintf("%d calls in one second", peak)))
	fmt.Fprintf(b.out, "  peak RSS:          %.1f MiB; CPU %.2f s (%.3f s per 10k users)\n", r.maxRSS, r.cpu.Seconds(), r.cpu.Seconds()/float64(n)*10_000)
	return nil
}

// throttled runs n users with --rate rate against a simulator that allows
// limit calls a second (a token bucket with one second of burst, then 429
// with Retry-After: 1) and compares the wall time with the ideal,
// (n − limit) / limit seconds.
func (b *bench) throttled(ctx context.Context, n, rate, limit int) error {
	sim, url, stop, err := b.simulator()
	if err != nil {
		return err
	}
	defer stop()
	sim.SetCallLimit(-1)
	sim.SetLatency(throttleLatencyMin, throttleLatencyMax)
	sim.SetRateLimit(limit)
	load := loadAvg()
	r, err := b.runChild(ctx, "throttled-"+strconv.Itoa(limit)+"-"+strconv.Itoa(rate), n, url, "--rate", strconv.Itoa(rate), "--burst", strconv.Itoa(rateBurst),
		"--workers", strconv.Itoa(rateWorkers))
	if err != nil {
		return err
	}
	calls := sim.Calls()
	times := make([]time.Time, len(calls))
	limited := 0
	for i, c := range calls {
		times[i] = c.At
		if c.Status == http.StatusTooManyRequests {
			limited++
		}
	}
	ideal := float64(n-limit) / float64(limit)
	ratio := r.wall.Seconds() / ideal
	share := float64(limited) / float64(max(len(calls), 1))
	peak, _ := maxInWindow(times, time.Second)
	fmt.Fprintf(b.out, "\nthrottled server: %d users, --rate %d --burst %d --workers %d, latency %s-%s; server allows %d/s (1 s burst, then 429 Retry-After: 1) (load before: %s)\n",
		n, rate, rateBurst, rateWorkers, throttleLatencyMin, throttleLatencyMax, limit, load)
	fmt.Fprintf(b.out, "  wall time:         %.2f s = %.3fx the ideal %.1f s (whole process)  target <= %.2f: %s\n",
		r.wall.Seconds(), ratio, ideal, maxThrottleTime,
		b.verdict(ratio <= maxThrottleTime, fmt.Sprintf("throttled %d/s, --rate %d: %.3fx the ideal", limit, rate, ratio)))
	fmt.Fprintf(b.out, "  429s:              %d of %d calls = %.2f%%  target <= %.0f%%: %s\n",
		limited, len(calls), share*100, maxThrottleShare*100,
		b.verdict(share <= maxThrottleShare, fmt.Sprintf("throttled --rate %d: %.2f%% 429s", rate, share*100)))
	fmt.Fprintf(b.out, "  max in 1 s window: %d calls  target <= %d: %s\n", peak, rate+rateBurst,
		b.verdict(peak <= rate+rateBurst, fmt.Sprintf("throttled --rate %d: %d calls in one second", rate, peak)))
	return nil
}

// verdict returns "PASS" or "FAIL", remembering what failed.
func (b *bench) verdict(ok bool, what string) string {
	if ok {
		return "PASS"
	}
	b.failed = append(b.failed, what)
	return "FAIL"
}

// achievedRate is the calls per second between the first and the last
// call: (n-1) intervals over that span. Fewer than two calls give 0.
func achievedRate(times []time.Time) float64 {
	if len(times) < 2 {
		return 0
	}
	t := slices.Clone(times)
	slices.SortFunc(t, func(a, b time.Time) int { return a.Compare(b) })
	span := t[len(t)-1].Sub(t[0])
	if span <= 0 {
		return 0
	}
	return float64(len(t)-1) / span.Seconds()
}

// maxInWindow returns the most calls in any half-open window [t, t+w) and
// the start of the first such window. Every window that holds a maximum
// can be moved to start at a call, so only those are tried.
func maxInWindow(times []time.Time, w time.Duration) (int, time.Time) {
	if len(times) == 0 {
		return 0, time.Time{}
	}
	t := slices.Clone(times)
	slices.SortFunc(t, func(a, b time.Time) int { return a.Compare(b) })
	best, bestAt := 0, t[0]
	j := 0
	for i := range t {
		if j < i {
			j = i
		}
		for j < len(t) && t[j].Sub(t[i]) < w {
			j++
		}
		if n := j - i; n > best {
			best, bestAt = n, t[i]
		}
	}
	return best, bestAt
}

// floorRun is what the net/http floor child did and used.
