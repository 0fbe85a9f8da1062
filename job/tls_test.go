package job_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"pwrotate/job"
	"pwrotate/report"
	"pwrotate/rotate"
)

// untrustedCert returns a self-signed certificate for 127.0.0.1 that no
// client of these tests trusts.
func untrustedCert(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "TEST-ONLY interceptor"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestCertificateChangeMidRunStopsEverything: the preflight goes through a
// trusted certificate, then the server presents one that fails
// verification (an interception): no password call is retried or sent,
// the run stops with exit 1 naming the certificate, and once the
// certificate is right again --resume completes the run.
func TestCertificateChangeMidRunStopsEverything(t *testing.T) {
	w := newWorld(t, 20)
	bad := untrustedCert(t)
	var handshakes atomic.Int32
	var intercept atomic.Bool
	srv := httptest.NewUnstartedServer(w.sim)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes
	srv.TLS = &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		handshakes.Add(1)
		if intercept.Load() {
			return &tls.Config{Certificates: []tls.Certificate{bad}}, nil
		}
		return nil, nil // httptest's certificate, which the client trusts
	}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	tr := srv.Client().Transport.(*http.Transport).Clone()
	tr.DisableKeepAlives = true // one handshake per request
	const workers = 4
	client := w.client(testKey, func(c *rotate.Config) {
		c.BaseURL = srv.URL
		c.HTTPClient = &http.Client{Transport: tr}
	})
	out := filepath.Join(t.TempDir(), "out")
	cfg := w.config(users(span(firstUser, 20)...), out)
	cfg.Client, cfg.Endpoint, cfg.Workers = client, srv.URL, workers
	cfg.Hook = func(point string, n int) {
		if point == "sealed" {
			intercept.Store(true) // after the preflight, before the first change
		}
	}
	sum, err := job.New(cfg).Run(context.Background())
	if sum.ExitCode != report.ExitFatal || err == nil || !strings.Contains(err.Error(), "TLS certificate verification failed") {
		t.Fatalf("exit %d (%v), want 1 naming the certificate", sum.ExitCode, err)
	}
	if n := w.sim.Count("password"); n != 0 {
		t.Errorf("%d password calls went through the untrusted certificate", n)
	}
	// The preflight's handshake, then at most one per worker in flight
	// when the first refusal stopped the run: none retried.
	if n := handshakes.Load(); n < 2 || n > 1+workers {
		t.Errorf("%d TLS handshakes, want 2..%d (one attempt per call, then stop)", n, 1+workers)
	}
	w.checkInvariant(out)

	// The certificate is right again: --resume completes the run.
	intercept.Store(false)
	cfg.Hook, cfg.Resume = nil, true
	sum, err = job.New(cfg).Run(context.Background())
	if sum.ExitCode != report.ExitOK {
		t.Fatalf("resume: exit %d (%v)", sum.ExitCode, err)
	}
	if byUser := w.checkInvariant(out); len(byUser) != 20 {
		t.Errorf("%d users recorded, want 20", len(byUser))
	}
}
