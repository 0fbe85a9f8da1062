package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/creack/pty"

	"pwrotate/rotate/ecgridsim"
)

// update rewrites the golden screens: go test -run TestScreens -update
var update = flag.Bool("update", false, "rewrite the golden screens in testdata/screens")

// screen runs pwrotate (this test binary as main) with args in dir under a
// pseudo-terminal, stdout and stderr both on it, as a person would see it,
// and returns what the terminal shows at the end and the exit code.
func screen(t *testing.T, dir string, env []string, args ...string) (string, int) {
	t.Helper()
	return screenWith(t, dir, env, nil, args...)
}

// terminalOut is what a terminal received so far.
type terminalOut struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	more chan struct{} // closed and replaced on every write
}

func (o *terminalOut) Write(b []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.buf.Write(b)
	close(o.more)
	o.more = make(chan struct{})
	return len(b), nil
}

// waitFor blocks until the terminal received s.
func (o *terminalOut) waitFor(s string) {
	for {
		o.mu.Lock()
		has, more := strings.Contains(o.buf.String(), s), o.more
		o.mu.Unlock()
		if has {
			return
		}
		<-more
	}
}

// screenWith is screen, with during run beside the command once it started.
func screenWith(t *testing.T, dir string, env []string, during func(p *os.Process, out *terminalOut), args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PWROTATE_TEST_AS_MAIN=1")
	cmd.Env = append(cmd.Env, env...)
	tty, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 60, Cols: 100})
	if err != nil {
		t.Fatal(err)
	}
	out := &terminalOut{more: make(chan struct{})}
	if during != nil {
		go during(cmd.Process, out)
	}
	_, err = io.Copy(out, tty)
	// Linux answers EIO once the child has closed its side.
	if err != nil && !errors.Is(err, syscall.EIO) {
		t.Fatalf("reading the terminal: %v", err)
	}
	_ = tty.Close()
	code := 0
	if err := cmd.Wait(); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatal(err)
		}
		code = ee.ExitCode()
	}
	out.mu.Lock()
	defer out.mu.Unlock()
	return render(out.buf.Bytes()), code
}

// render plays the bytes a terminal received and returns the lines it
// shows: "\r" goes back to the start of the line, "ESC [K" erases to its
// end, "\n" starts a new line. (The progress bar redraws itself this way:
// only its last state stays.)
func render(raw []byte) string {
	lines := [][]rune{{}}
	col := 0
	s := string(raw)
	for i := 0; i < len(s); {
		if strings.HasPrefix(s[i:], "\x1b[K") {
			cur := lines[len(lines)-1]
			if col < len(cur) {
				lines[len(lines)-1] = cur[:col]
			}
			i += 3
			continue
		}
		r := []rune(s[i:])[0]
		i += len(string(r))
		switch r {
		case '\r':
			col = 0
		case '\n':
			lines = append(lines, []rune{})
			col = 0
		default:
			cur := lines[len(lines)-1]
			for len(cur) < col {
				cur = append(cur, ' ')
			}
			if col < len(cur) {
				cur[col] = r
			} else {
				cur = append(cur, r)
			}
			lines[len(lines)-1] = cur
			col++
		}
	}
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = strings.TrimRight(string(l), " ")
	}
	return strings.TrimRight(strings.Join(out, "\n"), "\n") + "\n"
}

// normalise replaces what changes from run to run: ports, durations and
// rates.
var normalise = []struct {
	re  *regexp.Regexp
	new string
}{
	{regexp.MustCompile(`127\.0\.0\.1:\d+`), "127.0.0.1:PORT"},
	{regexp.MustCompile(`\b\d+(\.\d+)?/s\b`), "N/s"},
	{regexp.MustCompile(`ETA \S+`), "ETA T"},
	{regexp.MustCompile(`\bin \d+(\.\d+)?(ms|s)\b|\bin \d+m\d+s\b`), "in ELAPSED"},
}

func normal(s string) string {
	for _, n := range normalise {
		s = n.re.ReplaceAllString(s, n.new)
	}
	return s
}

// golden compares got with testdata/screens/name.txt (-update rewrites it).
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", "screens", name+".txt")
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to write it)", err)
	}
	if string(want) != got {
		t.Errorf("the screen differs from %s (run with -update to accept it):\n--- got ---\n%s--- want ---\n%s", path, got, want)
	}
}

// noGoSyntax fails when a person's screen shows Go's formatting of a map,
// a slice or a struct, or slog's key=value pairs.
func noGoSyntax(t *testing.T, s string) {
	t.Helper()
	for _, bad := range []*regexp.Regexp{
		regexp.MustCompile(`map\[`), regexp.MustCompile(`\[\S+ \S+\]`), regexp.MustCompile(`&\{`),
		regexp.MustCompile(`level=|msg=|time=`),
	} {
		if m := bad.FindString(s); m != "" {
			t.Errorf("the screen shows %q:\n%s", m, s)
		}
	}
}

// screenSim is an ECGrid simulator for the screens: users 1000-1009 exist,
// the key belongs to NetworkAdmin user 7.
func screenSim(t *testing.T) string {
	t.Helper()
	return serveSim(t, newSim(1000, 10)).URL
}

// TestScreens compares what a person sees at a terminal with the golden
// screens in testdata/screens: the demo run, failed starts, a run with
// failures, and the help.
func TestScreens(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary under a pseudo-terminal")
	}
	needPTY(t)
	t.Run("demo", func(t *testing.T) {
		dir := t.TempDir()
		got, code := screen(t, dir, nil, "run", "--demo", "--apply", "--out", "demo-out", "--rate", "0")
		if code != 0 {
			t.Errorf("exit %d, want 0:\n%s", code, got)
		}
		noGoSyntax(t, got)
		golden(t, "demo", normal(got))
	})
	t.Run("demo-dry-run", func(t *testing.T) {
		got, code := screen(t, t.TempDir(), nil, "run", "--demo")
		if code != 0 {
			t.Errorf("exit %d, want 0:\n%s", code, got)
		}
		noGoSyntax(t, got)
		golden(t, "demo-dry-run", normal(got))
	})
	t.Run("failed-start", func(t *testing.T) {
		dir := t.TempDir()
		writeFile(t, dir, "users.csv", "userId\n1000\n1001\n")
		url := screenSim(t)
		got, code := screen(t, dir, []string{"ECGRID_API_KEY=" + scriptKey},
			"run", "--input", "users.csv", "--apply", "--out", "out", "--base-url", url)
		if code != 1 {
			t.Errorf("exit %d, want 1:\n%s", code, got)
		}
		noGoSyntax(t, got)
		golden(t, "failed-start", normal(got))
	})
	t.Run("bad-flag", func(t *testing.T) {
		got, code := screen(t, t.TempDir(), nil, "run", "--input", "users.csv", "--rate", "fast")
		if code != 1 {
			t.Errorf("exit %d, want 1:\n%s", code, got)
		}
		golden(t, "bad-flag", normal(got))
	})
	t.Run("failures", func(t *testing.T) {
		dir := t.TempDir()
		var in strings.Builder
		in.WriteString("userId\n")
		for id := 1000; id < 1005; id++ {
			fmt.Fprintf(&in, "%d\n", id)
		}
		// Unknown users (404: final), bad IDs and a repeat: 13 problems.
		for id := 5000; id < 5007; id++ {
			fmt.Fprintf(&in, "%d\n", id)
		}
		in.WriteString("abc\n-4\n1000\n7\n")
		in.WriteString("99999999999\n2x\n")
		writeFile(t, dir, "users.csv", in.String())
		writeFile(t, dir, "key.txt", "")
		url := screenSim(t)
		got, code := screen(t, dir, []string{"ECGRID_API_KEY=" + scriptKey},
			"run", "--input", "users.csv", "--apply", "--out", "out", "--base-url", url,
			"--recipient", "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p",
			"--workers", "1", "--rate", "0", "--max-attempts", "1")
		if code != 2 {
			t.Errorf("exit %d, want 2:\n%s", code, got)
		}
		noGoSyntax(t, got)
		golden(t, "failures", normal(got))
	})
	t.Run("interrupted", func(t *testing.T) {
		// The third password call waits until the run has seen Ctrl-C:
		// the call in flight finishes, the rest stays for --resume. (The
		// run logs the signal line just before it stops dispatching; the
		// call is released after that line, and its answer has a loopback
		// round trip to make before the worker could take another user.)
		dir := t.TempDir()
		writeFile(t, dir, "users.csv", "userId\n1000\n1001\n1002\n1003\n1004\n1005\n")
		sim := ecgridsim.New()
		sim.AddKey(scriptKey, scriptOwner, "NetworkAdmin")
		for id := 1000; id < 1010; id++ {
			sim.AddUser(id, scriptPw)
		}
		var calls atomic.Int32
		reached, release := make(chan struct{}), make(chan struct{})
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/v2/users/password" && calls.Add(1) == 3 {
				close(reached)
				<-release
			}
			sim.ServeHTTP(w, r)
		}))
		defer srv.Close()
		got, code := screenWith(t, dir, []string{"ECGRID_API_KEY=" + scriptKey}, func(p *os.Process, out *terminalOut) {
			<-reached
			_ = p.Signal(syscall.SIGINT)
			out.waitFor("signal")
			close(release)
		}, "run", "--input", "users.csv", "--apply", "--out", "out", "--base-url", srv.URL,
			"--recipient", "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p",
			"--workers", "1", "--rate", "0")
		if code != 3 {
			t.Errorf("exit %d, want 3:\n%s", code, got)
		}
		noGoSyntax(t, got)
		golden(t, "interrupted", normal(got))
	})
	t.Run("help-run", func(t *testing.T) {
		got, code := screen(t, t.TempDir(), nil, "help", "run")
		if code != 0 {
			t.Errorf("exit %d, want 0", code)
		}
		same, _ := screen(t, t.TempDir(), nil, "run", "--help")
		if same != got {
			t.Errorf("'pwrotate run --help' differs from 'pwrotate help run'")
		}
		golden(t, "help-run", got)
	})
}

// TestScreensJSONStays: with --log-format json, a terminal gets the JSON
// log lines it always got, not the screens.
func TestScreensJSONStays(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary under a pseudo-terminal")
	}
	needPTY(t)
	dir := t.TempDir()
	writeFile(t, dir, "users.csv", "userId\n1000\n")
	url := screenSim(t)
	got, code := screen(t, dir, []string{"ECGRID_API_KEY=" + scriptKey},
		"run", "--input", "users.csv", "--apply", "--out", "out", "--base-url", url, "--log-format", "json")
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	if strings.Contains(got, "pwrotate: error") {
		t.Errorf("--log-format json shows the screen:\n%s", got)
	}
	var last map[string]any
	for _, l := range strings.Split(strings.TrimSpace(got), "\n") {
		if err := json.Unmarshal([]byte(l), &last); err != nil {
			t.Fatalf("not a JSON line: %q", l)
		}
	}
	if last["msg"] != "cannot start" || last["exitCode"] != float64(1) {
		t.Errorf("last line %v, want the cannot start line with exitCode 1", last)
	}
}

// needPTY skips a test on a system that cannot open a pseudo-terminal.
func needPTY(t *testing.T) {
	t.Helper()
	p, tty, err := pty.Open()
	if err != nil {
		t.Skipf("no pseudo-terminal here: %v", err)
	}
	_ = tty.Close()
	_ = p.Close()
}

func writeFile(t *testing.T, dir, name, body string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}
