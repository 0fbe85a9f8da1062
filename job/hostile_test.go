package job_test

// Hostile input, hostile answers and hostile disks, end to end through the
// real job (issue 6). The harness (world, users, span, checkInvariant,
// checkNoSecrets) is the one of run_test.go.

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"filippo.io/age"

	"pwrotate/job"
	"pwrotate/report"
	"pwrotate/rotate"
	"pwrotate/rotate/ecgridsim"
)

// hangBound is a generous upper bound on any single run below: a run that
// takes longer is hanging, not slow.
const hangBound = 30 * time.Second

// runBounded runs cfg and fails the test if the run does not return within
// limit. A panic in the run fails the test through the normal path.
func runBounded(t *testing.T, cfg job.Config, limit time.Duration) (report.Summary, error, time.Duration) {
	t.Helper()
	type result struct {
		sum report.Summary
		err error
	}
	done := make(chan result, 1)
	start := time.Now()
	go func() {
		sum, err := job.New(cfg).Run(context.Background())
		done <- result{sum, err}
	}()
	select {
	case r := <-done:
		return r.sum, r.err, time.Since(start)
	case <-time.After(limit):
		t.Fatalf("the run did not return within %s: it hangs", limit)
		return report.Summary{}, nil, 0
	}
}

// sealedFiles lists the sealed files in out.
func sealedFiles(out string) []string {
	m, _ := filepath.Glob(filepath.Join(out, "*.age"))
	return m
}

// binaryInput is a deterministic blob of random bytes after a header and a
// good record, with a NUL on line 3 or later.
func binaryInput() []byte {
	r := rand.New(rand.NewChaCha8([32]byte{6}))
	b := []byte("userId\n1000\n")
	for range 4096 {
		c := byte(r.Uint32())
		if c == 0 {
			c = 1
		}
		b = append(b, c)
	}
	b[len(b)/2] = 0
	return b
}

// writeHugeLine writes a CSV whose second line is one n-byte field.
func writeHugeLine(t *testing.T, path string, header bool, n int) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if header {
		if _, err := f.WriteString("userId\n"); err != nil {
			t.Fatal(err)
		}
	}
	chunk := bytes.Repeat([]byte("1"), 1<<20)
	for n > 0 {
		k := min(n, len(chunk))
		if _, err := f.Write(chunk[:k]); err != nil {
			t.Fatal(err)
		}
		n -= k
	}
	if _, err := f.WriteString("\n1001\n"); err != nil {
		t.Fatal(err)
	}
}

// failingReader returns data, then err: a stdin whose writer died.
type failingReader struct {
	data []byte
	err  error
}

func (r *failingReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

// TestHostileInput feeds broken inputs to a real --apply run: each is exit 1
// naming the input (and the line where one applies), or `invalid` rows; no
// password call is made for a broken record, nothing is sealed on exit 1.
func TestHostileInput(t *testing.T) {
	type tc struct {
		name string
		// file writes the input into dir and returns --input; nil: stdin.
		file  func(t *testing.T, dir string) string
		stdin func() io.Reader
		want  int      // exit code
		errIn []string // substrings of the run's error (exit 1)
		// invalid maps input line -> a substring of the invalid reason
		// (exit 2).
		invalid map[int]string
		updated int // exit 0/2: users updated
	}
	write := func(name string, data []byte) func(*testing.T, string) string {
		return func(t *testing.T, dir string) string {
			p := filepath.Join(dir, name)
			if err := os.WriteFile(p, data, 0o600); err != nil {
				t.Fatal(err)
			}
			return p
		}
	}
	cases := []tc{
		{name: "binary file with NUL", file: write("binary.csv", binaryInput()), want: report.ExitFatal,
			errIn: []string{"binary.csv", "line ", "NUL"}},
		{name: "only random bytes", file: write("noise.csv", binaryInput()[12:]), want: report.ExitFatal,
			errIn: []string{"noise.csv"}},
		{name: "header not UTF-8", file: write("latin1.csv", []byte("user\xe9Id\n1000\n")), want: report.ExitFatal,
			errIn: []string{"latin1.csv", "line 1", "UTF-8"}},
		{name: "userId not UTF-8", file: write("badid.csv", []byte("userId\n1000\n10\xff\xfe01\n1001\n")), want: report.ExitIncomplete,
			invalid: map[int]string{3: "UTF-8"}, updated: 2},
		{name: "password not UTF-8", file: write("badpw.csv", []byte("userId,password\n1000,Ab1!\xff\xfeXyzzy-99\n1001,\n")), want: report.ExitIncomplete,
			invalid: map[int]string{2: "UTF-8"}, updated: 1},
		{name: "quote never closes", file: write("quote.csv", []byte("userId,comment\n1000,ok\n1001,\"never closed\n1002,x\n1003,y\n")), want: report.ExitFatal,
			errIn: []string{"quote.csv", "line 3", "quote"}},
		{name: "50 MB line after the header", file: func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "huge.csv")
			writeHugeLine(t, p, true, 50<<20)
			return p
		}, want: report.ExitFatal, errIn: []string{"huge.csv", "line 2", "64 KiB"}},
		{name: "50 MB header line", file: func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "hugehead.csv")
			writeHugeLine(t, p, false, 50<<20)
			return p
		}, want: report.ExitFatal, errIn: []string{"hugehead.csv", "line 1"}},
		{name: "header only", file: write("header.csv", []byte("userId,password\r\n\r\n\n")), want: report.ExitFatal,
			errIn: []string{"header.csv", "input has no records"}},
		{name: "empty file", file: write("empty.csv", nil), want: report.ExitFatal, errIn: []string{"empty.csv"}},
		{name: "BOM only", file: write("bom.csv", []byte("\ufeff")), want: report.ExitFatal, errIn: []string{"bom.csv"}},
		{name: "a directory", file: func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "adir")
			if err := os.Mkdir(p, 0o700); err != nil {
				t.Fatal(err)
			}
			return p
		}, want: report.ExitFatal, errIn: []string{"adir", "directory"}},
		{name: "missing path", file: func(t *testing.T, dir string) string { return filepath.Join(dir, "nope.csv") },
			want: report.ExitFatal, errIn: []string{"nope.csv", "no such file"}},
		{name: "stdin with data", stdin: func() io.Reader { return strings.NewReader("userId\r\n1000\r\n1001\r\n") },
			want: report.ExitOK, updated: 2},
		{name: "stdin empty", stdin: func() io.Reader { return strings.NewReader("") }, want: report.ExitFatal,
			errIn: []string{"stdin"}},
		{name: "stdin header only", stdin: func() io.Reader { return strings.NewReader("userId\n") }, want: report.ExitFatal,
			errIn: []string{"stdin", "input has no records"}},
		{name: "stdin closed mid-quote", stdin: func() io.Reader { return strings.NewReader("userId,c\n1000,\"cut") },
			want: report.ExitFatal, errIn: []string{"stdin", "line 2"}},
		{name: "stdin read error", stdin: func() io.Reader {
			return &failingReader{data: []byte("userId\n1000\n10"), err: errors.New("read /dev/stdin: input/output error")}
		}, want: report.ExitFatal, errIn: []string{"stdin", "line 3", "input/output error"}},
		{name: "stdin pipe closed early", stdin: func() io.Reader {
			pr, pw := io.Pipe()
			go func() {
				_, _ = pw.Write([]byte("userId\n1000\n"))
				pw.CloseWithError(io.ErrUnexpectedEOF)
			}()
			return pr
		}, want: report.ExitFatal, errIn: []string{"stdin", "unexpected EOF"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld(t, 5)
			dir := t.TempDir()
			out := filepath.Join(dir, "out")
			cfg := w.config("", out)
			cfg.InputData, cfg.InputName = nil, ""
			if c.file != nil {
				cfg.InputPath = c.file(t, dir)
			} else {
				cfg.InputPath, cfg.Stdin = "-", c.stdin()
			}
			sum, err, _ := runBounded(t, cfg, hangBound)
			if sum.ExitCode != c.want {
				t.Fatalf("exit %d (%v), want %d", sum.ExitCode, err, c.want)
			}
			if c.want == report.ExitFatal {
				if err == nil {
					t.Fatal("exit 1 without an error")
				}
				for _, s := range c.errIn {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q does not say %q", err, s)
					}
				}
				if n := w.sim.Count("password"); n != 0 {
					t.Errorf("%d password calls for a broken input", n)
				}
				if m := sealedFiles(out); len(m) != 0 {
					t.Errorf("sealed %v for a broken input", m)
				}
				if len(err.Error()) > 400 || strings.ContainsAny(err.Error(), "\x00\n") {
					t.Errorf("error is not one short line: %q", err)
				}
				return
			}
			byUser := w.checkInvariant(out)
			w.checkNoSecrets(out)
			rows, rerr := report.ReadResults(filepath.Join(out, report.ResultsName))
			if rerr != nil {
				t.Fatal(rerr)
			}
			updated := 0
			for _, r := range rows {
				switch r.Status {
				case report.Updated:
					updated++
				case report.Invalid:
					want, ok := c.invalid[r.Line]
					if !ok {
						t.Errorf("line %d invalid (%s), not expected", r.Line, r.Error)
					} else if !strings.Contains(r.Error, want) {
						t.Errorf("line %d: reason %q does not say %q", r.Line, r.Error, want)
					}
					if strings.ContainsRune(r.Error, '\ufffd') || strings.Contains(r.Error, "Xyzzy") {
						t.Errorf("line %d: reason %q echoes the bad cell", r.Line, r.Error)
					}
				}
			}
			if updated != c.updated {
				t.Errorf("%d updated, want %d (%v)", updated, c.updated, byUser)
			}
			if n := w.sim.Count("password"); n != c.updated {
				t.Errorf("%d password calls, want %d: a broken record reached the API", n, c.updated)
			}
			if c.stdin != nil && sum.Input != "stdin" {
				t.Errorf("summary input %q, want stdin", sum.Input)
			}
		})
	}
}

// keyWatcher is a second server that must never be called with the key.
type keyWatcher struct {
	calls, withKey, withBody atomic.Int64
}

func (k *keyWatcher) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	k.calls.Add(1)
	if r.Header.Get("X-API-Key") != "" {
		k.withKey.Add(1)
	}
	if b, _ := io.ReadAll(r.Body); len(b) > 0 {
		k.withBody.Add(1)
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"success":true,"data":true}`)
}

// closedPort returns a loopback address nobody listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// TestHostileAnswers runs the real job against answers that are broken,
// huge, endless, misdirected or missing: a per-record failure with a
// reason, or exit 1 for a systemic preflight failure; never a panic or a
// hang, and the invariant holds.
func TestHostileAnswers(t *testing.T) {
	const victim = firstUser + 1
	watcher := &keyWatcher{}
	other := httptest.NewServer(watcher)
	t.Cleanup(other.Close)

	type tc struct {
		name   string
		faults []ecgridsim.Fault
		// client returns the base URL and HTTP client to use (nil: the
		// world's); may start servers.
		base    func(t *testing.T, w *world) (string, *http.Client)
		timeout time.Duration // per call; 0: 2s
		want    int
		errIn   []string // exit 1: substrings of the run's error (any of them)
		reason  []string // exit 2: substrings of the victim's error (any of them)
		bound   time.Duration
	}
	many := 100 // a fault that hits every attempt
	cases := []tc{
		{name: "200 with invalid JSON", faults: []ecgridsim.Fault{{Endpoint: "password", UserID: victim, Kind: ecgridsim.InvalidJSON, Times: many}},
			want: report.ExitIncomplete, reason: []string{"JSON", "unreadable"}},
		{name: "200 with data false", faults: []ecgridsim.Fault{{Endpoint: "password", UserID: victim, Kind: ecgridsim.DataFalse, Times: many}},
			want: report.ExitIncomplete, reason: []string{"data"}},
		{name: "200 with 20 MiB body", faults: []ecgridsim.Fault{{Endpoint: "password", UserID: victim, Kind: ecgridsim.HugeBody, Times: many}},
			want: report.ExitIncomplete, reason: []string{"200"}},
		{name: "slow drip past the timeout", faults: []ecgridsim.Fault{{Endpoint: "password", UserID: victim, Kind: ecgridsim.SlowDrip, Hold: 20 * time.Second, Times: many}},
			timeout: 400 * time.Millisecond, want: report.ExitIncomplete, reason: []string{"timeout"},
			bound: 2*400*time.Millisecond + 8*time.Second},
		{name: "redirect to another host", faults: []ecgridsim.Fault{{Endpoint: "password", UserID: victim, Kind: ecgridsim.Redirect, Location: other.URL + "/v2/users/password", Times: many}},
			want: report.ExitIncomplete, reason: []string{"redirect"}},
		{name: "preflight redirect to another host", faults: []ecgridsim.Fault{{Endpoint: "me", Kind: ecgridsim.Redirect, Location: other.URL + "/v2/users/me", Times: many}},
			want: report.ExitFatal, errIn: []string{"redirect"}},
		{name: "preflight 200 invalid JSON", faults: []ecgridsim.Fault{{Endpoint: "me", Kind: ecgridsim.InvalidJSON, Times: many}},
			want: report.ExitFatal, errIn: []string{"preflight"}},
		{name: "preflight 20 MiB body", faults: []ecgridsim.Fault{{Endpoint: "me", Kind: ecgridsim.HugeBody, Times: many}},
			want: report.ExitFatal, errIn: []string{"preflight"}},
		{name: "preflight slow drip", faults: []ecgridsim.Fault{{Endpoint: "me", Kind: ecgridsim.SlowDrip, Hold: 20 * time.Second, Times: many}},
			timeout: 400 * time.Millisecond, want: report.ExitFatal, errIn: []string{"timeout"},
			bound: 2*400*time.Millisecond + 8*time.Second},
		{name: "untrusted TLS certificate", base: func(t *testing.T, w *world) (string, *http.Client) {
			srv := httptest.NewUnstartedServer(w.sim)
			srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes
			srv.StartTLS()
			t.Cleanup(srv.Close)
			return srv.URL, nil // the default transport does not trust the test CA
		}, want: report.ExitFatal, errIn: []string{"certificate", "x509", "tls"}},
		{name: "connection refused", base: func(t *testing.T, w *world) (string, *http.Client) {
			return "http://" + closedPort(t), nil
		}, want: report.ExitFatal, errIn: []string{"refused"}},
		{name: "DNS failure", base: func(t *testing.T, w *world) (string, *http.Client) {
			return "https://pwrotate-hostile-test.invalid", nil
		}, want: report.ExitFatal, errIn: []string{"no such host", "lookup", "server misbehaving", "proxy"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld(t, 6)
			for _, f := range c.faults {
				w.sim.Inject(f)
			}
			before := watcher.withKey.Load()
			beforeBody := watcher.withBody.Load()
			out := filepath.Join(t.TempDir(), "out")
			cfg := w.config(users(span(firstUser, 6)...), out)
			base, hc := w.url, (*http.Client)(nil)
			if c.base != nil {
				base, hc = c.base(t, w)
			}
			timeout := c.timeout
			if timeout == 0 {
				timeout = 2 * time.Second
			}
			const attempts = 2
			cfg.Client = w.client(testKey, func(rc *rotate.Config) {
				rc.BaseURL, rc.HTTPClient, rc.Timeout, rc.MaxAttempts = base, hc, timeout, attempts
			})
			bound := c.bound
			if bound == 0 {
				bound = hangBound
			}
			sum, err, took := runBounded(t, cfg, hangBound)
			if took > bound {
				t.Errorf("the run took %s, more than %s (timeout %s × %d attempts + slack): something waits past --timeout", took, bound, timeout, attempts)
			}
			if sum.ExitCode != c.want {
				t.Fatalf("exit %d (%v), want %d", sum.ExitCode, err, c.want)
			}
			if n := watcher.withKey.Load() - before; n != 0 {
				t.Errorf("the other host received %d requests carrying X-API-Key", n)
			}
			if n := watcher.withBody.Load() - beforeBody; n != 0 {
				t.Errorf("the other host received %d request bodies (a password)", n)
			}
			if c.want == report.ExitFatal {
				if !containsAny(strings.ToLower(err.Error()), c.errIn) {
					t.Errorf("error %q names none of %q", err, c.errIn)
				}
				if strings.Contains(err.Error(), testKey) {
					t.Error("the error shows the API key")
				}
				if n := w.sim.Count("password"); n != 0 {
					t.Errorf("%d password calls after a failed preflight", n)
				}
				if m := sealedFiles(out); len(m) != 0 {
					t.Errorf("sealed %v before a failed preflight", m)
				}
				return
			}
			byUser := w.checkInvariant(out)
			w.checkNoSecrets(out)
			for id := firstUser; id < firstUser+6; id++ {
				r := byUser[id]
				if id != victim {
					if r.Status != report.Updated {
						t.Errorf("user %d: %s (%s): a fault of another user spilled over", id, r.Status, r.Error)
					}
					continue
				}
				if r.Status != report.Failed {
					t.Errorf("user %d: %s, want failed", id, r.Status)
				}
				if r.Error == "" || len(r.Error) > 300 || strings.ContainsAny(r.Error, "\r\n<>") {
					t.Errorf("user %d: reason %q is not one short, plain line", id, r.Error)
				}
				if !containsAny(strings.ToLower(r.Error), c.reason) {
					t.Errorf("user %d: reason %q names none of %q", id, r.Error, c.reason)
				}
				if r.Attempts < 1 || r.Attempts > attempts {
					t.Errorf("user %d: %d attempts, want 1..%d", id, r.Attempts, attempts)
				}
			}
		})
	}
}

func containsAny(s string, subs []string) bool {
	for _, x := range subs {
		if strings.Contains(s, strings.ToLower(x)) {
			return true
		}
	}
	return false
}

// TestHostileOutFolder: an output folder that cannot be made is exit 1
// before any call.
func TestHostileOutFolder(t *testing.T) {
	cases := []struct {
		name  string
		out   func(t *testing.T, dir string) string
		errIn string
	}{
		{name: "a file where the folder should be", out: func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "out")
			if err := os.WriteFile(p, []byte("not a folder\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			return p
		}, errIn: "not a directory"},
		{name: "under a regular file", out: func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "file")
			if err := os.WriteFile(p, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			return filepath.Join(p, "sub")
		}, errIn: "not a directory"},
		{name: "parent not writable", out: func(t *testing.T, dir string) string {
			if os.Geteuid() == 0 {
				t.Skip("running as root: permissions are not enforced (the regular-file case covers it)")
			}
			p := filepath.Join(dir, "ro")
			if err := os.Mkdir(p, 0o500); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = os.Chmod(p, 0o700) })
			return filepath.Join(p, "out")
		}, errIn: "permission denied"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld(t, 3)
			out := c.out(t, t.TempDir())
			cfg := w.config(users(span(firstUser, 3)...), out)
			sum, err, _ := runBounded(t, cfg, hangBound)
			if sum.ExitCode != report.ExitFatal || err == nil {
				t.Fatalf("exit %d (%v), want 1", sum.ExitCode, err)
			}
			if !strings.Contains(err.Error(), out) || !strings.Contains(err.Error(), c.errIn) {
				t.Errorf("error %q does not name %s and say %q", err, out, c.errIn)
			}
			if n := len(w.sim.Calls()); n != 0 {
				t.Errorf("%d API calls before the output folder was usable", n)
			}
		})
	}
}

// mountTmpfs mounts a small tmpfs at dir, or skips the test.
func mountTmpfs(t *testing.T, dir, size string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs to fill a disk needs root")
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0700", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs (%v: %s): skipping the full-disk test", err, bytes.TrimSpace(out))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
}

// fillDisk writes a file in dir until the file system is full.
func fillDisk(dir string) error {
	f, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		return err
	}
	defer f.Close()
	chunk := make([]byte, 4096)
	for {
		if _, err := f.Write(chunk); err != nil {
			return nil // full
		}
	}
}

// TestHostileFullDisk fills the output folder's disk at several steps of a
// run: before sealing, before the invalid rows are recorded, in the middle
// of the updates (the run must stop dispatching at once), and at the final
// rewrite. Each is exit 1 with nothing lost; once space is back, --resume
// completes with exit 0 and the invariant holds.
func TestHostileFullDisk(t *testing.T) {
	const (
		n       = 600
		workers = 4
	)
	cases := []struct {
		name  string
		point string // Config.Hook point at which the disk fills
		at    int
		// maxCalls bounds the password calls of the failed run.
		maxCalls int
	}{
		{name: "before sealing", point: "manifest", at: 1, maxCalls: 0},
		// The rows that still fit in the results file's last page (tmpfs)
		// are written; dispatch stops at the first row that is refused
		// (checked below against the calls made by then).
		{name: "before recording invalid rows", point: "sealed", at: 1, maxCalls: n - 1},
		{name: "mid-run while recording results", point: "recorded", at: 200, maxCalls: n - 1},
		{name: "at the final rewrite", point: "complete", at: 1, maxCalls: n},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mnt := t.TempDir()
			mountTmpfs(t, mnt, "2m")
			w := newWorld(t, n)
			out := filepath.Join(mnt, "out")
			input := users(span(firstUser, n)...) + "not-a-number\n"
			cfg := w.config(input, out)
			cfg.Workers = workers
			var once, failedOnce sync.Once
			var fillErr error
			callsAtFill, callsAtFailure := -1, -1
			cfg.Hook = func(point string, k int) {
				if point == c.point && k == c.at {
					once.Do(func() {
						callsAtFill = w.sim.Count("password")
						fillErr = fillDisk(mnt)
					})
				}
				if point == "record-failed" {
					failedOnce.Do(func() { callsAtFailure = w.sim.Count("password") })
				}
			}
			sum, err, _ := runBounded(t, cfg, hangBound)
			if fillErr != nil {
				t.Fatal(fillErr)
			}
			if callsAtFill < 0 {
				t.Fatalf("the disk was never filled: exit %d (%v)", sum.ExitCode, err)
			}
			if sum.ExitCode != report.ExitFatal || err == nil {
				t.Fatalf("disk full: exit %d (%v), want 1", sum.ExitCode, err)
			}
			if !strings.Contains(err.Error(), "no space left") {
				t.Errorf("error %q does not say the disk is full", err)
			}
			calls := w.sim.Count("password")
			t.Logf("password calls: %d when the disk filled, %d in all", callsAtFill, calls)
			if calls > c.maxCalls {
				t.Errorf("%d password calls (%d when the disk filled): dispatch went on after the output could not be written (limit %d)", calls, callsAtFill, c.maxCalls)
			}
			// Stop dispatching at once: after the first refused row, only
			// the requests already in flight may still reach the server.
			if callsAtFailure >= 0 && calls > callsAtFailure+workers {
				t.Errorf("%d password calls, %d when the first row was refused: dispatch went on (at most %d in flight)", calls, callsAtFailure, workers)
			}
			if c.point == "recorded" && callsAtFailure < 0 {
				t.Errorf("no results row was refused mid-run")
			}
			if c.point == "recorded" && calls >= n {
				t.Fatalf("every user was sent a password: the disk filled too late to test anything")
			}
			w.checkInvariant(out)

			// Space is back: --resume finishes the run.
			if err := os.Remove(filepath.Join(mnt, "filler")); err != nil {
				t.Fatal(err)
			}
			cfg.Resume, cfg.Hook = true, nil
			sum, err, _ = runBounded(t, cfg, hangBound)
			if sum.ExitCode != report.ExitIncomplete {
				t.Fatalf("resume after the disk was freed: exit %d (%v), want 2 (one invalid record)", sum.ExitCode, err)
			}
			byUser := w.checkInvariant(out)
			w.checkNoSecrets(out)
			rows, rerr := report.ReadResults(filepath.Join(out, report.ResultsName))
			if rerr != nil {
				t.Fatal(rerr)
			}
			if len(rows) != n+1 {
				t.Errorf("%d results rows, want %d (one per record)", len(rows), n+1)
			}
			for i := 1; i < len(rows); i++ {
				if rows[i].Line <= rows[i-1].Line {
					t.Fatalf("results not sorted by line at row %d", i)
				}
			}
			for _, id := range span(firstUser, n) {
				if byUser[id].Status != report.Updated {
					t.Errorf("user %d: %s (%s) after resume", id, byUser[id].Status, byUser[id].Error)
				}
			}
			if got, err := report.ReadSummary(filepath.Join(out, report.SummaryName)); err != nil || !got.Complete {
				t.Errorf("summary after resume: complete %v, err %v", got.Complete, err)
			}
			// Every user the server changed has its live password sealed:
			// nobody is locked out by the lost rows.
			open, oerr := report.Open([]string{out}, []age.Identity{w.id}, false)
			if oerr != nil {
				t.Fatal(oerr)
			}
			live := map[int]bool{}
			for _, r := range open {
				if pw, _ := w.sim.Password(r.UserID); pw == r.Password.Reveal() {
					live[r.UserID] = true
				}
			}
			for _, id := range span(firstUser, n) {
				if !live[id] {
					t.Errorf("user %d: open does not give its live password", id)
				}
			}
		})
	}
}

// TestHostileInputFIFOInterruptible: --input naming a FIFO that nobody
// writes (or a stdin that never ends) blocks reading; the first signal
// (ctx cancelled) must still end the run promptly, before any call.
func TestHostileInputFIFOInterruptible(t *testing.T) {
	w := newWorld(t, 2)
	dir := t.TempDir()
	fifo := filepath.Join(dir, "users.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	// Unblock the reader at the end, whatever happened.
	t.Cleanup(func() {
		if f, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			f.Close()
		}
	})
	cfg := w.config("", filepath.Join(dir, "out"))
	cfg.InputData, cfg.InputName, cfg.InputPath = nil, "", fifo
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	done := make(chan report.Summary, 1)
	go func() {
		sum, _ := job.New(cfg).Run(ctx)
		done <- sum
	}()
	select {
	case sum := <-done:
		if sum.ExitCode != report.ExitInterrupted {
			t.Errorf("exit %d, want 3 (interrupted)", sum.ExitCode)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the run ignores cancellation while reading the input")
	}
	if n := len(w.sim.Calls()); n != 0 {
		t.Errorf("%d API calls", n)
	}
}
