package main

// Hostile input and flags at the command line, for what a test script
// cannot express: bytes that are not text, a 50 MB line, a TLS server, a
// real SSH private key, an environment variable holding a newline (issue 6).

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"golang.org/x/crypto/ssh"
)

// hostileBound is a generous upper bound on one command: longer is a hang.
const hostileBound = 30 * time.Second

// runMain runs Main in-process and fails the test if it does not return
// within hostileBound.
func runMain(t *testing.T, stdin io.Reader, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	done := make(chan int, 1)
	go func() { done <- Main(args, stdin, &out, &errb) }()
	select {
	case code = <-done:
	case <-time.After(hostileBound):
		t.Fatalf("pwrotate %s did not return within %s: it hangs", strings.Join(args, " "), hostileBound)
	}
	return code, out.String(), errb.String()
}

// testOnlySSHKey returns a fresh OpenSSH private key, PEM-encoded.
func testOnlySSHKey(t *testing.T) string {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	blk, err := ssh.MarshalPrivateKey(priv, "TEST-ONLY")
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(blk))
}

func TestHostileCLI(t *testing.T) {
	sim := newSim(1000, 10)
	srv := serveSim(t, sim)
	tlsSrv := httptest.NewUnstartedServer(sim)
	tlsSrv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes
	tlsSrv.StartTLS()
	t.Cleanup(tlsSrv.Close)
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	recipient := id.Recipient().String()
	sshKey := testOnlySSHKey(t)
	sshBody := strings.Split(sshKey, "\n")[2] // a line of the key's base64

	dir := t.TempDir()
	file := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	bin := []byte("userId\n1000\n")
	for i := range 2048 {
		bin = append(bin, byte(i*131+7))
	}
	huge := append(append([]byte("userId\n"), bytes.Repeat([]byte("9"), 50<<20)...), "\n1000\n"...)
	users := file("users.csv", []byte("userId\n1000\n1001\n"))

	cases := []struct {
		name  string
		env   map[string]string
		stdin string
		args  []string
		want  int
		errIn []string // substrings of stderr
		never []string // never in stdout or stderr
	}{
		{name: "binary file", args: []string{"--input", file("bin.csv", bin)}, want: 1,
			errIn: []string{"bin.csv", "line ", "binary"}},
		{name: "header not UTF-8", args: []string{"--input", file("latin1.csv", []byte("\xfcserId\n1000\n"))}, want: 1,
			errIn: []string{"latin1.csv", "line 1", "UTF-8"}},
		{name: "userId not UTF-8", args: []string{"--input", file("badid.csv", []byte("userId\n1000\n\xff\xfe\n"))}, want: 2,
			errIn: []string{`"line":3`, "not valid UTF-8"}},
		{name: "50 MB line", args: []string{"--input", file("huge.csv", huge)}, want: 1,
			errIn: []string{"huge.csv", "line 2", "64 KiB"}},
		{name: "stdin with data", stdin: "userId\n1000\n1001\n", args: []string{"--input", "-"}, want: 0,
			errIn: []string{`"input":"-"`}},
		{name: "stdin empty", stdin: "", args: []string{"--input", "-"}, want: 1,
			errIn: []string{"reading input stdin: input has no"}},
		{name: "untrusted TLS certificate", args: []string{"--input", users, "--base-url", tlsSrv.URL, "--max-attempts", "2"}, want: 1,
			errIn: []string{"preflight", "certificate"}},
		{name: "ssh private key as --recipient", args: []string{"--input", users, "--out", filepath.Join(dir, "o1"), "--recipient", sshKey}, want: 1,
			errIn: []string{"--recipient", "secret key"}, never: []string{sshBody, "PRIVATE KEY"}},
		{name: "ssh private key in --recipients-file", args: []string{"--input", users, "--out", filepath.Join(dir, "o2"),
			"--recipients-file", file("recipients.txt", []byte(recipient+"\n"+sshKey))}, want: 1,
			errIn: []string{"recipients.txt", "secret key"}, never: []string{sshBody, "PRIVATE KEY"}},
		{name: "ECGRID_API_KEY with a newline inside", env: map[string]string{"ECGRID_API_KEY": "halfkey-7c1d\notherhalf-22ab"},
			args: []string{"--input", users}, want: 1, errIn: []string{"ECGRID_API_KEY"}, never: []string{"halfkey", "otherhalf"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("ECGRID_API_KEY", scriptKey)
			for k, v := range c.env {
				t.Setenv(k, v)
			}
			before := sim.Count("password")
			args := append([]string{"run", "--log-format", "json", "--progress", "never", "--base-url", srv.URL}, c.args...)
			if !containsArg(c.args, "--out") {
				args = append(args, "--apply", "--out", filepath.Join(t.TempDir(), "out"))
			}
			args = append(args, "--recipient", recipient, "--rate", "0")
			code, stdout, stderr := runMain(t, strings.NewReader(c.stdin), args...)
			if code != c.want {
				t.Fatalf("exit %d, want %d\nstderr:\n%s", code, c.want, stderr)
			}
			for _, s := range c.errIn {
				if !strings.Contains(stderr, s) {
					t.Errorf("stderr does not say %q:\n%s", s, stderr)
				}
			}
			for _, s := range append(c.never, scriptKey, scriptPw) {
				if strings.Contains(stdout+stderr, s) {
					t.Errorf("the output echoes a secret (%.12s…)", s)
				}
			}
			if c.want == 1 {
				if n := sim.Count("password") - before; n != 0 {
					t.Errorf("%d password calls on exit 1", n)
				}
			}
		})
	}
}

func containsArg(args []string, name string) bool {
	for _, a := range args {
		if a == name {
			return true
		}
	}
	return false
}
