// Package kubetest runs a real Kubernetes API server for tests: etcd and
// kube-apiserver on 127.0.0.1, over TLS with certificates made at test time,
// RBAC authorization, and kubeconfig files for an administrator (group
// system:masters) and for any other user, such as the job's. Only tests
// import it.
//
// The kube-apiserver binary is built once from the Go module proxy by
// build/build.sh (a module of its own, outside pwrotate's) into a cache
// outside the repository; etcd is Debian's etcd-server. Without them the
// tests skip, saying how to get them, unless PWROTATE_REQUIRE_KUBE=1 (.ci/run)
// makes that a failure.
package kubetest

import (
	"bytes"
	"context"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Version is the kube-apiserver that build/build.sh builds.
const Version = "v1.35.4"

// JobUser is the user name of the job's client certificate in
// JobKubeconfig.
const JobUser = "pwrotate-job"

// howTo says how to get what the tests need.
const howTo = "build it once with report/deliver/kubetest/build/build.sh (about 5 minutes) " +
	"and install etcd (Debian: apt-get install etcd-server); .ci/run does both"

// Binaries returns the paths of kube-apiserver and etcd: kube-apiserver from
// PWROTATE_KUBE_APISERVER, else build.sh's cache; etcd from PWROTATE_ETCD,
// else PATH. The error says what is missing and how to get it.
func Binaries() (apiserver, etcd string, err error) {
	apiserver = os.Getenv("PWROTATE_KUBE_APISERVER")
	if apiserver == "" {
		cache := os.Getenv("PWROTATE_TEST_CACHE")
		if cache == "" {
			base := os.Getenv("XDG_CACHE_HOME")
			if base == "" {
				home, herr := os.UserHomeDir()
				if herr != nil {
					return "", "", fmt.Errorf("no kube-apiserver: PWROTATE_KUBE_APISERVER unset and no home folder: %w", herr)
				}
				base = filepath.Join(home, ".cache")
			}
			cache = filepath.Join(base, "pwrotate-test")
		}
		apiserver = filepath.Join(cache, "kube-apiserver-"+Version)
	}
	if _, err := os.Stat(apiserver); err != nil {
		return "", "", fmt.Errorf("no kube-apiserver at %s: %s", apiserver, howTo)
	}
	etcd = os.Getenv("PWROTATE_ETCD")
	if etcd == "" {
		p, err := exec.LookPath("etcd")
		if err != nil {
			return "", "", fmt.Errorf("no etcd on PATH: %s", howTo)
		}
		etcd = p
	}
	return apiserver, etcd, nil
}

// need skips t, or fails it under PWROTATE_REQUIRE_KUBE=1, when the
// binaries are missing.
func need(t testing.TB) (apiserver, etcd string) {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: no Kubernetes API server")
	}
	apiserver, etcd, err := Binaries()
	if err != nil {
		if os.Getenv("PWROTATE_REQUIRE_KUBE") == "1" {
			t.Fatalf("PWROTATE_REQUIRE_KUBE=1: %v", err)
		}
		t.Skipf("skipping the tests against a real Kubernetes API server: %v; then export PWROTATE_KUBE_APISERVER=$(report/deliver/kubetest/build/build.sh)", err)
	}
	return apiserver, etcd
}

// Server is a running etcd and kube-apiserver.
type Server struct {
	// URL is the API server's https URL.
	URL string
	// AdminKubeconfig is a kubeconfig file for user "admin" in group
	// system:masters; its context is "admin".
	AdminKubeconfig string
	// JobKubeconfig is a kubeconfig file for JobUser, with no rights until a
	// test grants some; its current context is "job", and it also has the
	// context "admin".
	JobKubeconfig string

	dir       string
	etcdData  string // on tmpfs when there is one: removed by Stop
	apiserver string
	args      []string
	ca        *authority
	admin     *http.Client

	mu   sync.Mutex
	api  *process
	etcd *process
}

// process is a started command whose exit is awaited in the background.
type process struct {
	cmd  *exec.Cmd
	done chan struct{}
	log  string
}

func startProcess(name, logPath string, args ...string) (*process, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("creating %s: %w", logPath, err)
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Die with the test binary, even if it crashes.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{}), log: logPath}
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

// stop sends sig and waits for the exit (SIGKILL after 10 s).
func (p *process) stop(sig os.Signal) {
	if p == nil {
		return
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// tail returns the end of the process's log, for a failure message.
func (p *process) tail() string {
	data, _ := os.ReadFile(p.log)
	if len(data) > 4000 {
		data = data[len(data)-4000:]
	}
	return string(data)
}

// Start starts an API server of the test's own, stopped when the test ends.
// It skips the test when the binaries are missing (see Binaries).
func Start(t testing.TB) *Server {
	t.Helper()
	apiserver, etcd := need(t)
	s, err := start(apiserver, etcd, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

var shared struct {
	sync.Mutex
	s   *Server
	dir string
	err error
}

// Shared returns the test binary's shared API server, starting it on first
// use; Main stops it. Tests that share it work in namespaces of their own.
func Shared(t testing.TB) *Server {
	t.Helper()
	apiserver, etcd := need(t)
	shared.Lock()
	defer shared.Unlock()
	if shared.s == nil && shared.err == nil {
		dir, err := os.MkdirTemp("", "kubetest-")
		if err != nil {
			t.Fatal(err)
		}
		shared.dir = dir
		shared.s, shared.err = start(apiserver, etcd, dir)
	}
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.s
}

// Main runs the tests and then stops the shared API server, if one was
// started: func TestMain(m *testing.M) { os.Exit(kubetest.Main(m)) }.
func Main(m *testing.M) int {
	code := m.Run()
	shared.Lock()
	defer shared.Unlock()
	if shared.s != nil {
		shared.s.Stop()
	}
	if shared.dir != "" {
		_ = os.RemoveAll(shared.dir)
	}
	return code
}

func start(apiserver, etcdBin, dir string) (*Server, error) {
	s := &Server{dir: dir, apiserver: apiserver}
	ca, err := newAuthority()
	if err != nil {
		return nil, err
	}
	s.ca = ca
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(ports[0])
	peerURL := "http://127.0.0.1:" + strconv.Itoa(ports[1])
	// etcd's data on tmpfs when there is one: it fsyncs every write.
	dataParent := dir
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		dataParent = "/dev/shm"
	}
	data, err := os.MkdirTemp(dataParent, "kubetest-etcd-")
	if err != nil {
		return nil, fmt.Errorf("etcd data folder: %w", err)
	}
	s.etcdData = data
	s.etcd, err = startProcess(etcdBin, filepath.Join(dir, "etcd.log"),
		"--name", "default", "--data-dir", data,
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "default="+peerURL, "--log-level", "warn")
	if err != nil {
		_ = os.RemoveAll(data)
		return nil, err
	}

	if err := writeServerKeys(ca, dir); err != nil {
		s.Stop()
		return nil, err
	}
	s.URL = "https://127.0.0.1:" + strconv.Itoa(ports[2])
	s.args = []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(ports[2]),
		"--tls-cert-file=" + filepath.Join(dir, "apiserver.crt"),
		"--tls-private-key-file=" + filepath.Join(dir, "apiserver.key"),
		"--client-ca-file=" + filepath.Join(dir, "ca.crt"),
		"--authorization-mode=RBAC",
		"--anonymous-auth=false",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + filepath.Join(dir, "sa.pub"),
		"--service-account-signing-key-file=" + filepath.Join(dir, "sa.key"),
		"--service-cluster-ip-range=10.0.0.0/24",
		"--cert-dir=" + filepath.Join(dir, "certs"),
		"--profiling=false",
		"--enable-garbage-collector=false",
		"--v=0",
	}
	admin, err := ca.issue(pkix.Name{CommonName: "admin", Organization: []string{"system:masters"}}, false)
	if err != nil {
		s.Stop()
		return nil, err
	}
	s.admin = ca.httpClient(admin)
	job, err := ca.issue(pkix.Name{CommonName: JobUser}, false)
	if err != nil {
		s.Stop()
		return nil, err
	}
	s.AdminKubeconfig = filepath.Join(dir, "admin.kubeconfig")
	s.JobKubeconfig = filepath.Join(dir, "job.kubeconfig")
	if err := s.writeKubeconfig(s.AdminKubeconfig, "admin", map[string]*keyPair{"admin": admin}); err != nil {
		s.Stop()
		return nil, err
	}
	if err := s.writeKubeconfig(s.JobKubeconfig, "job", map[string]*keyPair{"job": job, "admin": admin}); err != nil {
		s.Stop()
		return nil, err
	}
	if err := s.startAPI(); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// startAPI starts kube-apiserver and waits until /readyz answers ok.
func (s *Server) startAPI() error {
	p, err := startProcess(s.apiserver, filepath.Join(s.dir, "kube-apiserver.log"), s.args...)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.api = p
	s.mu.Unlock()
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		if p.exited() {
			return fmt.Errorf("kube-apiserver exited at start; its log ends:\n%s", p.tail())
		}
		if s.etcd.exited() {
			return fmt.Errorf("etcd exited; its log ends:\n%s", s.etcd.tail())
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		code, _, err := s.do(ctx, http.MethodGet, "/readyz", nil)
		cancel()
		if err == nil && code == http.StatusOK {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("kube-apiserver not ready after 90s; its log ends:\n%s", p.tail())
}

// Kill kills kube-apiserver with SIGKILL (etcd keeps running).
func (s *Server) Kill() {
	s.mu.Lock()
	p := s.api
	s.api = nil
	s.mu.Unlock()
	if p != nil {
		p.stop(syscall.SIGKILL)
	}
}

// Restart starts kube-apiserver again, on the same port and etcd, and waits
// until it is ready.
func (s *Server) Restart() error {
	return s.startAPI()
}

// Stop stops kube-apiserver and etcd.
func (s *Server) Stop() {
	s.mu.Lock()
	api, etcd := s.api, s.etcd
	s.api, s.etcd = nil, nil
	s.mu.Unlock()
	api.stop(syscall.SIGTERM)
	etcd.stop(syscall.SIGTERM)
	if s.etcdData != "" {
		_ = os.RemoveAll(s.etcdData)
	}
}

// UserKubeconfig writes a kubeconfig file for user (a client certificate
// with that common name and the given groups), current context "job", and
// returns its path.
func (s *Server) UserKubeconfig(t testing.TB, user string, groups ...string) string {
	t.Helper()
	kp, err := s.ca.issue(pkix.Name{CommonName: user, Organization: groups}, false)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := s.writeKubeconfig(path, "job", map[string]*keyPair{"job": kp}); err != nil {
		t.Fatal(err)
	}
	return path
}

func (s *Server) writeKubeconfig(path, current string, users map[string]*keyPair) error {
	var clusters, contexts, authInfos []map[string]any
	clusters = append(clusters, map[string]any{"name": "test", "cluster": map[string]any{
		"server": s.URL, "certificate-authority-data": s.ca.certPEM,
	}})
	for name, kp := range users {
		authInfos = append(authInfos, map[string]any{"name": name, "user": map[string]any{
			"client-certificate-data": kp.certPEM, "client-key-data": kp.keyPEM,
		}})
		contexts = append(contexts, map[string]any{"name": name, "context": map[string]any{
			"cluster": "test", "user": name, "namespace": "default",
		}})
	}
	cfg := map[string]any{
		"apiVersion": "v1", "kind": "Config", "current-context": current,
		"clusters": clusters, "contexts": contexts, "users": authInfos,
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

// do sends one request as the administrator; body, when not nil, is
// marshalled to JSON (a []byte is sent as is).
func (s *Server) do(ctx context.Context, method, path string, body any) (int, []byte, error) {
	var r io.Reader
	ctype := "application/json"
	switch b := body.(type) {
	case nil:
	case []byte:
		r = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			return 0, nil, err
		}
		r = bytes.NewReader(data)
	}
	if method == http.MethodPatch {
		ctype = "application/merge-patch+json"
	}
	req, err := http.NewRequestWithContext(ctx, method, s.URL+path, r)
	if err != nil {
		return 0, nil, err
	}
	if r != nil {
		req.Header.Set("Content-Type", ctype)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := s.admin.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return resp.StatusCode, data, err
}

// Do sends one request as the administrator and fails t unless the answer
// is 2xx; it returns the answer's body. body, when not nil, is marshalled
// to JSON (a []byte or string is sent as is); PATCH sends a JSON merge
// patch.
func (s *Server) Do(t testing.TB, method, path string, body any) []byte {
	t.Helper()
	if str, ok := body.(string); ok {
		body = []byte(str)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code, data, err := s.do(ctx, method, path, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	if code/100 != 2 {
		t.Fatalf("%s %s: HTTP %d: %s", method, path, code, data)
	}
	return data
}

// Get reads path as the administrator into v.
func (s *Server) Get(t testing.TB, path string, v any) {
	t.Helper()
	if err := json.Unmarshal(s.Do(t, http.MethodGet, path, nil), v); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
}

// Namespace creates a namespace.
func (s *Server) Namespace(t testing.TB, name string) {
	t.Helper()
	s.Do(t, http.MethodPost, "/api/v1/namespaces", map[string]any{
		"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": name},
	})
}

// Secret creates a Secret in namespace ns with the given data (plain
// values; the API server stores them base64-encoded), labels and
// annotations.
func (s *Server) Secret(t testing.TB, ns, name string, data, labels, annotations map[string]string) {
	t.Helper()
	d := map[string][]byte{}
	for k, v := range data {
		d[k] = []byte(v)
	}
	s.Do(t, http.MethodPost, "/api/v1/namespaces/"+ns+"/secrets", map[string]any{
		"apiVersion": "v1", "kind": "Secret",
		"metadata": map[string]any{"name": name, "labels": labels, "annotations": annotations},
		"type":     "Opaque", "data": d,
	})
}

var grantSeq atomic.Int32

// Grant gives user the verbs on the named Secrets of namespace ns, through a
// Role with resourceNames and its RoleBinding (both named after user and a
// sequence number: a user may be granted several times).
func (s *Server) Grant(t testing.TB, ns, user string, verbs []string, secrets ...string) {
	t.Helper()
	name := fmt.Sprintf("grant-%s-%d", strings.ToLower(strings.NewReplacer(":", "-", "@", "-").Replace(user)), grantSeq.Add(1))
	s.Do(t, http.MethodPost, "/apis/rbac.authorization.k8s.io/v1/namespaces/"+ns+"/roles", map[string]any{
		"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
		"metadata": map[string]any{"name": name},
		"rules": []map[string]any{{
			"apiGroups": []string{""}, "resources": []string{"secrets"},
			"resourceNames": secrets, "verbs": verbs,
		}},
	})
	s.Do(t, http.MethodPost, "/apis/rbac.authorization.k8s.io/v1/namespaces/"+ns+"/rolebindings", map[string]any{
		"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
		"metadata": map[string]any{"name": name},
		"roleRef":  map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
		"subjects": []map[string]any{{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}},
	})
	// RBAC reads Roles and bindings from caches that follow etcd a little
	// later: wait until the API server grants what was just written.
	for _, name := range secrets {
		for _, verb := range verbs {
			s.waitAllowed(t, user, verb, ns, name)
		}
	}
}

// waitAllowed waits until a SubjectAccessReview says user may verb the
// Secret ns/name.
func (s *Server) waitAllowed(t testing.TB, user, verb, ns, name string) {
	t.Helper()
	review := map[string]any{
		"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
		"spec": map[string]any{"user": user, "resourceAttributes": map[string]any{
			"namespace": ns, "verb": verb, "resource": "secrets", "name": name}},
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var got struct {
			Status struct {
				Allowed bool `json:"allowed"`
			} `json:"status"`
		}
		if err := json.Unmarshal(s.Do(t, http.MethodPost, "/apis/authorization.k8s.io/v1/subjectaccessreviews", review), &got); err != nil {
			t.Fatal(err)
		}
		if got.Status.Allowed {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s may still not %s secret %s/%s after 30s", user, verb, ns, name)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// SecretObject is the part of a Secret the tests compare.
type SecretObject struct {
	Metadata struct {
		Name            string            `json:"name"`
		ResourceVersion string            `json:"resourceVersion"`
		Labels          map[string]string `json:"labels"`
		Annotations     map[string]string `json:"annotations"`
	} `json:"metadata"`
	Data map[string][]byte `json:"data"`
}

// ReadSecret reads a Secret as the administrator.
func (s *Server) ReadSecret(t testing.TB, ns, name string) SecretObject {
	t.Helper()
	var obj SecretObject
	s.Get(t, "/api/v1/namespaces/"+ns+"/secrets/"+name, &obj)
	return obj
}

// Fault is what FaultProxy does with the n-th request (1 = the first):
// Status 0 forwards it; Drop closes the connection without an answer;
// otherwise it answers Status with a Kubernetes Status body and, when set,
// a Retry-After header.
type Fault struct {
	Status     int
	RetryAfter string
	Drop       bool
	// Echo puts the request body into the answer's message, as a careless
	// admission webhook might.
	Echo bool
}

// FaultProxy starts an HTTPS proxy in front of the API server that calls
// fault for each request and forwards, as user, those it lets through. It
// returns a kubeconfig file for the proxy.
func (s *Server) FaultProxy(t testing.TB, user string, fault func(n int, r *http.Request) Fault) string {
	t.Helper()
	kp, err := s.ca.issue(pkix.Name{CommonName: user}, false)
	if err != nil {
		t.Fatal(err)
	}
	upstream := s.ca.httpClient(kp).Transport
	var mu sync.Mutex
	n := 0
	proxy := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n++
		f := fault(n, r)
		mu.Unlock()
		switch {
		case f.Drop:
			if hj, ok := w.(http.Hijacker); ok {
				if conn, _, err := hj.Hijack(); err == nil {
					conn.Close()
					return
				}
			}
			panic(http.ErrAbortHandler)
		case f.Status != 0:
			if f.RetryAfter != "" {
				w.Header().Set("Retry-After", f.RetryAfter)
			}
			msg := fmt.Sprintf("injected %d", f.Status)
			if f.Echo {
				body, _ := io.ReadAll(r.Body)
				msg += ": " + string(body)
			}
			m, _ := json.Marshal(msg)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(f.Status)
			fmt.Fprintf(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","message":%s,"code":%d}`, m, f.Status)
			return
		}
		out := r.Clone(r.Context())
		out.RequestURI = ""
		target := strings.TrimPrefix(s.URL, "https://")
		out.URL.Scheme, out.URL.Host, out.Host = "https", target, target
		resp, err := upstream.RoundTrip(out)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
	}))
	t.Cleanup(proxy.Close)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: proxy.Certificate().Raw})
	cfg := map[string]any{
		"apiVersion": "v1", "kind": "Config", "current-context": "proxy",
		"clusters": []map[string]any{{"name": "proxy", "cluster": map[string]any{
			"server": proxy.URL, "certificate-authority-data": certPEM}}},
		"contexts": []map[string]any{{"name": "proxy", "context": map[string]any{"cluster": "proxy", "user": "anyone"}}},
		"users":    []map[string]any{{"name": "anyone", "user": map[string]any{}}},
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "proxy.kubeconfig")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
