package main

import (
	"context"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestTLSCertificates runs the real binary against the simulator over TLS
// (issue 9 point 8). A certificate the process does not trust ends the run
// at the preflight, after one TLS handshake, exit 1, naming the problem;
// the same server trusted through SSL_CERT_FILE (how an operator adds a
// private CA) completes the run.
func TestTLSCertificates(t *testing.T) {
	w := newCrashWorld(t, 5)
	var handshakes atomic.Int32
	srv := httptest.NewUnstartedServer(w.sim)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes
	srv.TLS = &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		handshakes.Add(1)
		return nil, nil
	}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	w.url = srv.URL

	ca := filepath.Join(w.dir, "test-ca.pem") // the httptest CA: a test fixture, no secret
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(t *testing.T, out string, env ...string) (int, string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd, stderr := w.command(ctx, out, "", "--max-attempts", "5")
		cmd.Env = append(cmd.Env, env...)
		err := cmd.Run()
		var ee *exec.ExitError
		switch {
		case errors.As(err, &ee):
			return ee.ExitCode(), stderr.String()
		case err != nil:
			t.Fatal(err)
		}
		return 0, stderr.String()
	}

	t.Run("untrusted CA", func(t *testing.T) {
		handshakes.Store(0)
		before := w.sim.Count("me") + w.sim.Count("password")
		// SSL_CERT_FILE names an empty bundle and SSL_CERT_DIR an empty
		// folder: trust nothing, whatever the machine's own roots.
		noCA := t.TempDir()
		empty := filepath.Join(noCA, "no-ca.pem")
		if err := os.WriteFile(empty, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		code, stderr := run(t, filepath.Join(w.dir, "out-untrusted"), "SSL_CERT_FILE="+empty, "SSL_CERT_DIR="+noCA)
		if code != 1 {
			t.Errorf("exit %d, want 1\n%s", code, stderr)
		}
		if n := handshakes.Load(); n != 1 {
			t.Errorf("the server saw %d TLS handshakes, want 1: a certificate error is not retried", n)
		}
		if !strings.Contains(stderr, "preflight") || !strings.Contains(stderr, "TLS certificate verification failed: x509: certificate signed by unknown authority") {
			t.Errorf("stderr does not name the certificate problem at the preflight:\n%s", stderr)
		}
		if n := w.sim.Count("me") + w.sim.Count("password"); n != before {
			t.Errorf("the simulator served %d requests through an untrusted certificate", n-before)
		}
	})

	t.Run("CA trusted through SSL_CERT_FILE", func(t *testing.T) {
		handshakes.Store(0)
		out := filepath.Join(w.dir, "out-trusted")
		code, stderr := run(t, out, "SSL_CERT_FILE="+ca)
		if code != 0 {
			t.Fatalf("exit %d, want 0\n%s", code, stderr)
		}
		if handshakes.Load() == 0 {
			t.Error("no TLS handshake: the run did not go through the TLS server")
		}
		w.check(out) // every user updated; the live password is the sealed one
	})
}
