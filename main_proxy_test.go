package main

import (
	"bytes"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"filippo.io/age"
)

// TestLoopbackNeverProxied: with HTTP_PROXY set, a plain-http --base-url to
// a loopback host, in any of the spellings --base-url accepts, reaches the
// server directly; the proxy never sees the API key or a password body, nor
// the basic auth of a --pushgateway on that loopback host. Go's
// environment proxy exempts only "localhost" and loopback IPs, so
// "localhost." and "LOCALHOST" went through the proxy in clear. The run is
// a child process: Go reads the proxy variables once per process.
func TestLoopbackNeverProxied(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Method+" "+r.URL.String())
		mu.Unlock()
		http.Error(w, "recording proxy", http.StatusBadGateway)
	}))
	t.Cleanup(proxy.Close)
	var pushes atomic.Int64
	gateway := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); ok && u == "ops" && p == "gw-pass" {
			pushes.Add(1)
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(gateway.Close)
	gwPort := strconv.Itoa(gateway.Listener.Addr().(*net.TCPAddr).Port)
	sim := newSim(1000, 2)
	srv := serveSim(t, sim)
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	users := filepath.Join(t.TempDir(), "users.csv")
	if err := os.WriteFile(users, []byte("userId\n1000\n1001\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"localhost.", "LOCALHOST", "LocalHost.", "127.0.0.1", "localhost"} {
		t.Run(host, func(t *testing.T) {
			base := (&url.URL{Scheme: "http", Host: net.JoinHostPort(host, strconv.Itoa(port))}).String()
			gw := "http://ops:gw-pass@" + net.JoinHostPort(host, gwPort)
			before, pushedBefore := sim.Count("password"), pushes.Load()
			cmd := exec.Command(os.Args[0], "run", "--input", users, "--apply", "--out", filepath.Join(t.TempDir(), "out"),
				"--recipient", id.Recipient().String(), "--base-url", base, "--rate", "0", "--max-attempts", "1",
				"--log-format", "json", "--progress", "never", "--pushgateway", gw)
			cmd.Env = append(os.Environ(), "PWROTATE_TEST_AS_MAIN=1", "ECGRID_API_KEY="+scriptKey,
				"HTTP_PROXY="+proxy.URL, "http_proxy="+proxy.URL, "HTTPS_PROXY="+proxy.URL, "https_proxy="+proxy.URL,
				"NO_PROXY=", "no_proxy=", "REQUEST_METHOD=")
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			mu.Lock()
			got := seen
			seen = nil
			mu.Unlock()
			if len(got) > 0 {
				t.Errorf("the proxy received %d requests (%s): nothing for a loopback host may go through it", len(got), strings.Join(got, "; "))
			}
			if err != nil && strings.Contains(stderr.String(), "lookup "+host+" ") && strings.HasSuffix(host, ".") {
				// This resolver does not know "localhost." (systemd-resolved
				// does): the call was not sent anywhere, which is the point.
				t.Logf("%s does not resolve here: nothing sent", host)
				return
			}
			if err != nil {
				t.Fatalf("run with --base-url %s: %v\nstderr:\n%s", base, err, stderr.String())
			}
			if n := sim.Count("password") - before; n != 2 {
				t.Errorf("%d password changes reached the server, want 2", n)
			}
			if n := pushes.Load() - pushedBefore; n != 1 {
				t.Errorf("%d pushes reached the gateway, want 1\nstderr:\n%s", n, stderr.String())
			}
		})
	}
}
