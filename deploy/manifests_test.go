package deploy

import (
	"bufio"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"filippo.io/age/agessh"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/yaml"
)

// The values the manifests and the image agree on.
const (
	containerName = "pwrotate"
	nonRootID     = 65532 // distroless "nonroot"
	jobNameLabel  = "metadata.labels['batch.kubernetes.io/job-name']"
	outArg        = "/out/$(JOB_NAME)"
	secretName    = "ecgrid-api-key"
	// flushMargin is the time a SIGTERMed run needs, beyond --timeout for
	// the requests in flight, to fsync results and write summary.json.
	flushMargin = 10 * time.Second
)

// manifests maps every YAML file in deploy/ to its apiVersion and kind. A new
// file must be added here (and checked below): TestEveryManifestIsKnown.
var manifests = map[string]string{
	"cronjob.yaml":             "batch/v1 CronJob",
	"indexed-job.yaml":         "batch/v1 Job",
	"configmap.example.yaml":   "v1 ConfigMap",
	"pvc.yaml":                 "v1 PersistentVolumeClaim",
	"pvc-shared.yaml":          "v1 PersistentVolumeClaim",
	"collect-pod.yaml":         "v1 Pod",
	"serviceaccount.yaml":      "v1 ServiceAccount",
	"role-deliver.yaml":        "rbac.authorization.k8s.io/v1 Role",
	"rolebinding-deliver.yaml": "rbac.authorization.k8s.io/v1 RoleBinding",
}

// decodeStrict decodes one YAML document into v, refusing unknown fields,
// duplicate keys and files with more than one document (yaml decoders read
// the first one and silently drop the rest).
func decodeStrict(data []byte, v any) error {
	if n := countDocuments(data); n != 1 {
		return fmt.Errorf("want exactly 1 YAML document, found %d", n)
	}
	if err := yaml.UnmarshalStrict(data, v); err != nil {
		return fmt.Errorf("strict decoding: %w", err)
	}
	return nil
}

// countDocuments counts the YAML documents with content in data.
func countDocuments(data []byte) int {
	n, content := 0, false
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	for sc.Scan() {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		switch {
		case line == "---" || strings.HasPrefix(line, "--- "):
			if content {
				n++
			}
			content = false
		case trimmed == "" || strings.HasPrefix(trimmed, "#"):
		default:
			content = true
		}
	}
	if content {
		n++
	}
	return n
}

// load decodes deploy/name strictly into v and checks its apiVersion and kind.
func load(t *testing.T, name string, v any) {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatalf("reading manifest: %v", err)
	}
	if err := decodeStrict(data, v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	var tm struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := yaml.Unmarshal(data, &tm); err != nil {
		t.Fatalf("%s: reading kind: %v", name, err)
	}
	if got, want := tm.APIVersion+" "+tm.Kind, manifests[name]; got != want {
		t.Fatalf("%s: apiVersion/kind = %q, want %q", name, got, want)
	}
}

// objects is every manifest of deploy/, decoded.
type objects struct {
	cron      batchv1.CronJob
	indexed   batchv1.Job
	config    corev1.ConfigMap
	pvc       corev1.PersistentVolumeClaim
	pvcShared corev1.PersistentVolumeClaim
	collect   corev1.Pod
	sa        corev1.ServiceAccount
	role      rbacv1.Role
	binding   rbacv1.RoleBinding
}

func loadAll(t *testing.T) *objects {
	t.Helper()
	var o objects
	load(t, "cronjob.yaml", &o.cron)
	load(t, "indexed-job.yaml", &o.indexed)
	load(t, "configmap.example.yaml", &o.config)
	load(t, "pvc.yaml", &o.pvc)
	load(t, "pvc-shared.yaml", &o.pvcShared)
	load(t, "collect-pod.yaml", &o.collect)
	load(t, "serviceaccount.yaml", &o.sa)
	load(t, "role-deliver.yaml", &o.role)
	load(t, "rolebinding-deliver.yaml", &o.binding)
	return &o
}

// claims returns the PVCs of deploy/ by name.
func (o *objects) claims() map[string]*corev1.PersistentVolumeClaim {
	return map[string]*corev1.PersistentVolumeClaim{o.pvc.Name: &o.pvc, o.pvcShared.Name: &o.pvcShared}
}

func TestEveryManifestIsKnown(t *testing.T) {
	files, err := filepath.Glob("*.y*ml")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if _, ok := manifests[f]; !ok {
			t.Errorf("%s is not checked by manifests_test.go: add it to manifests and to a test", f)
		}
	}
	for name := range manifests {
		if !slices.Contains(files, name) {
			t.Errorf("%s is missing from deploy/", name)
		}
		if strings.Contains(manifests[name], "Secret") {
			t.Errorf("%s: no Secret belongs in the repository", name)
		}
	}
}

func TestDecodeStrictRejects(t *testing.T) {
	tests := []struct {
		file, want string
	}{
		{"testdata/unknown-field.yaml", "backofLimit"},
		{"testdata/duplicate-key.yaml", "concurrencyPolicy"},
		{"testdata/two-documents.yaml", "found 2"},
	}
	for _, tt := range tests {
		t.Run(filepath.Base(tt.file), func(t *testing.T) {
			data, err := os.ReadFile(tt.file)
			if err != nil {
				t.Fatal(err)
			}
			var cj batchv1.CronJob
			err = decodeStrict(data, &cj)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("decodeStrict = %v, want an error naming %q", err, tt.want)
			}
		})
	}
}

// TestManifests runs every check on every manifest; they must all pass.
func TestManifests(t *testing.T) {
	o := loadAll(t)
	tests := []struct {
		file  string
		check func(*objects) []string
	}{
		{"cronjob.yaml", checkCronJob},
		{"indexed-job.yaml", checkIndexedJob},
		{"configmap.example.yaml", checkConfigMap},
		{"pvc.yaml", func(o *objects) []string { return checkPVC(&o.pvc, corev1.ReadWriteOnce) }},
		{"pvc-shared.yaml", func(o *objects) []string { return checkPVC(&o.pvcShared, corev1.ReadWriteMany) }},
		{"collect-pod.yaml", checkCollectPod},
		{"serviceaccount.yaml", checkServiceAccount},
		{"role-deliver.yaml", checkRole},
		{"rolebinding-deliver.yaml", checkRoleBinding},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			for _, p := range tt.check(o) {
				t.Error(p)
			}
		})
	}
}

// TestChecksCatchMistakes breaks one property at a time and expects the
// checks to name it: the checks above can fail.
func TestChecksCatchMistakes(t *testing.T) {
	pod := func(o *objects) *corev1.PodSpec { return &o.cron.Spec.JobTemplate.Spec.Template.Spec }
	ctr := func(o *objects) *corev1.Container { return &pod(o).Containers[0] }
	setArg := func(o *objects, flag, value string) {
		c := ctr(o)
		i := slices.Index(c.Args, flag)
		c.Args[i+1] = value
	}
	dropArg := func(o *objects, flag string) {
		c := ctr(o)
		c.Args = slices.DeleteFunc(c.Args, func(a string) bool { return a == flag })
	}
	tests := []struct {
		name   string
		check  func(*objects) []string
		break_ func(*objects)
		want   string
	}{
		{"no --apply", checkCronJob, func(o *objects) { dropArg(o, "--apply") }, "--apply"},
		{"no --resume", checkCronJob, func(o *objects) { dropArg(o, "--resume") }, "--resume"},
		{"unknown flag", checkCronJob, func(o *objects) { ctr(o).Args = append(ctr(o).Args, "--api-key", "x") }, "unknown flag --api-key"},
		{"grace below timeout", checkCronJob, func(o *objects) { setArg(o, "--timeout", "2m") }, "terminationGracePeriodSeconds"},
		{"fixed out folder", checkCronJob, func(o *objects) { setArg(o, "--out", "/out/run") }, "--out"},
		{"unlimited rate", checkCronJob, func(o *objects) { setArg(o, "--rate", "0") }, "--rate"},
		{"input not in configmap", checkCronJob, func(o *objects) { setArg(o, "--input", "/config/user.csv") }, "--input"},
		{"key outside secret", checkCronJob, func(o *objects) { setArg(o, "--api-key-file", "/tmp/api-key") }, "--api-key-file"},
		{"undefined $(VAR)", checkCronJob, func(o *objects) { ctr(o).Env[0].Name = "JOBNAME" }, "$(JOB_NAME)"},
		{"JOB_NAME from pod name", checkCronJob, func(o *objects) { ctr(o).Env[0].ValueFrom.FieldRef.FieldPath = "metadata.name" }, "JOB_NAME"},
		{"api key in env", checkCronJob, func(o *objects) {
			ctr(o).Env = append(ctr(o).Env, corev1.EnvVar{Name: "ECGRID_API_KEY", Value: "k"})
		}, "ECGRID_API_KEY"},
		{"writable root", checkCronJob, func(o *objects) { *ctr(o).SecurityContext.ReadOnlyRootFilesystem = false }, "readOnlyRootFilesystem"},
		{"privilege escalation", checkCronJob, func(o *objects) { ctr(o).SecurityContext.AllowPrivilegeEscalation = nil }, "allowPrivilegeEscalation"},
		{"capability kept", checkCronJob, func(o *objects) { ctr(o).SecurityContext.Capabilities.Drop = nil }, "drop ALL"},
		{"capability added", checkCronJob, func(o *objects) {
			ctr(o).SecurityContext.Capabilities.Add = []corev1.Capability{"NET_RAW"}
		}, "capabilities.add"},
		{"root", checkCronJob, func(o *objects) { *pod(o).SecurityContext.RunAsUser = 0 }, "runAsUser"},
		{"no fsGroup", checkCronJob, func(o *objects) { pod(o).SecurityContext.FSGroup = nil }, "fsGroup"},
		{"no seccomp", checkCronJob, func(o *objects) {
			pod(o).SecurityContext.SeccompProfile = nil
			ctr(o).SecurityContext.SeccompProfile = nil
		}, "seccompProfile"},
		{"token mounted", checkCronJob, func(o *objects) { pod(o).AutomountServiceAccountToken = nil }, "automountServiceAccountToken"},
		{"host network", checkCronJob, func(o *objects) { pod(o).HostNetwork = true }, "host namespaces"},
		{"no memory limit", checkCronJob, func(o *objects) { delete(ctr(o).Resources.Limits, corev1.ResourceMemory) }, "limits.memory"},
		{"request above limit", checkCronJob, func(o *objects) {
			ctr(o).Resources.Requests[corev1.ResourceCPU] = resource.MustParse("2")
		}, "requests.cpu"},
		{"latest image", checkCronJob, func(o *objects) { ctr(o).Image = "ghcr.io/example/pwrotate:latest" }, "image"},
		{"untagged image", checkCronJob, func(o *objects) { ctr(o).Image = "ghcr.io/example/pwrotate" }, "image"},
		{"mount without volume", checkCronJob, func(o *objects) { ctr(o).VolumeMounts[0].Name = "cfg" }, "no volume"},
		{"secret mode", checkCronJob, func(o *objects) {
			m := int32(0o644)
			pod(o).Volumes[1].Secret.DefaultMode = &m
		}, "defaultMode"},
		{"secret writable", checkCronJob, func(o *objects) { ctr(o).VolumeMounts[1].ReadOnly = false }, "read-only"},
		{"out on emptyDir", checkCronJob, func(o *objects) {
			pod(o).Volumes[2].VolumeSource = corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}
		}, "PersistentVolumeClaim"},
		{"unknown claim", checkCronJob, func(o *objects) { pod(o).Volumes[2].PersistentVolumeClaim.ClaimName = "other" }, "claim"},
		{"unknown configmap", checkCronJob, func(o *objects) { pod(o).Volumes[0].ConfigMap.Name = "other" }, "ConfigMap"},
		{"restart OnFailure", checkCronJob, func(o *objects) { pod(o).RestartPolicy = corev1.RestartPolicyOnFailure }, "restartPolicy"},
		{"concurrency Allow", checkCronJob, func(o *objects) { o.cron.Spec.ConcurrencyPolicy = batchv1.AllowConcurrent }, "concurrencyPolicy"},
		{"no starting deadline", checkCronJob, func(o *objects) { o.cron.Spec.StartingDeadlineSeconds = nil }, "startingDeadlineSeconds"},
		{"no history", checkCronJob, func(o *objects) { o.cron.Spec.FailedJobsHistoryLimit = nil }, "failedJobsHistoryLimit"},
		{"no retries", checkCronJob, func(o *objects) { o.cron.Spec.JobTemplate.Spec.BackoffLimit = nil }, "backoffLimit"},
		{"no failure policy", checkCronJob, func(o *objects) { o.cron.Spec.JobTemplate.Spec.PodFailurePolicy = nil }, "podFailurePolicy"},
		{"exit 3 fails the job", checkCronJob, func(o *objects) {
			exitRule(o.cron.Spec.JobTemplate.Spec.PodFailurePolicy).OnExitCodes.Values = []int32{1, 2, 3}
		}, "exit code 3"},
		{"exit 4 fails the job", checkCronJob, func(o *objects) {
			exitRule(o.cron.Spec.JobTemplate.Spec.PodFailurePolicy).OnExitCodes.Values = []int32{1, 2, 4}
		}, "exit code 4"},
		{"exit 4 retried uncounted", checkCronJob, func(o *objects) {
			p := o.cron.Spec.JobTemplate.Spec.PodFailurePolicy
			p.Rules = append(p.Rules, batchv1.PodFailurePolicyRule{
				Action:      batchv1.PodFailurePolicyActionIgnore,
				OnExitCodes: &batchv1.PodFailurePolicyOnExitCodesRequirement{Operator: batchv1.PodFailurePolicyOnExitCodesOpIn, Values: []int32{4}},
			})
		}, "exit code 4"},
		{"exit 2 retried", checkCronJob, func(o *objects) {
			exitRule(o.cron.Spec.JobTemplate.Spec.PodFailurePolicy).OnExitCodes.Values = []int32{1}
		}, "exit code 2"},
		{"rule for another container", checkCronJob, func(o *objects) {
			*exitRule(o.cron.Spec.JobTemplate.Spec.PodFailurePolicy).OnExitCodes.ContainerName = "main"
		}, "exit code 1"},
		{"disruptions counted", checkCronJob, func(o *objects) {
			p := o.cron.Spec.JobTemplate.Spec.PodFailurePolicy
			p.Rules = slices.DeleteFunc(p.Rules, func(r batchv1.PodFailurePolicyRule) bool { return r.OnExitCodes == nil })
		}, "DisruptionTarget"},
		{"exit-code rule before disruptions", checkCronJob, func(o *objects) {
			slices.Reverse(o.cron.Spec.JobTemplate.Spec.PodFailurePolicy.Rules)
		}, "DisruptionTarget rule first"},
		{"indexed: exit-code rule before disruptions", checkIndexedJob, func(o *objects) {
			slices.Reverse(o.indexed.Spec.PodFailurePolicy.Rules)
		}, "DisruptionTarget rule first"},
		{"indexed: exit 4 fails the index", checkIndexedJob, func(o *objects) {
			exitRule(o.indexed.Spec.PodFailurePolicy).OnExitCodes.Values = []int32{1, 2, 4}
		}, "exit code 4"},
		{"replacement while terminating", checkCronJob, func(o *objects) {
			v := batchv1.TerminatingOrFailed
			o.cron.Spec.JobTemplate.Spec.PodReplacementPolicy = &v
		}, "podReplacementPolicy"},
		{"completions differ from shards", checkIndexedJob, func(o *objects) { *o.indexed.Spec.Completions = 3 }, "completions"},
		{"not indexed", checkIndexedJob, func(o *objects) { o.indexed.Spec.CompletionMode = nil }, "completionMode"},
		{"FailJob in indexed", checkIndexedJob, func(o *objects) {
			exitRule(o.indexed.Spec.PodFailurePolicy).Action = batchv1.PodFailurePolicyActionFailJob
		}, "FailIndex"},
		{"no per-index backoff", checkIndexedJob, func(o *objects) { o.indexed.Spec.BackoffLimitPerIndex = nil }, "backoffLimitPerIndex"},
		{"shards on RWO claim", checkIndexedJob, func(o *objects) {
			o.indexed.Spec.Template.Spec.Volumes[2].PersistentVolumeClaim.ClaimName = o.pvc.Name
		}, "ReadWriteMany"},
		{"password column", checkConfigMap, func(o *objects) { o.config.Data["users.csv"] = "userId,newPassword\n1042,x\n" }, "password"},
		{"usable recipient", checkConfigMap, func(o *objects) {
			id, err := age.GenerateX25519Identity()
			if err != nil {
				panic(err)
			}
			o.config.Data["recipients.txt"] = id.Recipient().String() + "\n"
		}, "placeholder"},
		{"collect writable", checkCollectPod, func(o *objects) { o.collect.Spec.Containers[0].VolumeMounts[0].ReadOnly = false }, "read-only"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := loadAll(t)
			if p := tt.check(o); len(p) != 0 {
				t.Fatalf("unbroken manifests already fail: %v", p)
			}
			tt.break_(o)
			problems := tt.check(o)
			for _, p := range problems {
				if strings.Contains(p, tt.want) {
					return
				}
			}
			t.Errorf("problems = %q, want one naming %q", problems, tt.want)
		})
	}
}

// ---- checks: each returns the problems found, nil when all is well. ----

func checkCronJob(o *objects) []string {
	cj := &o.cron
	var p []string
	s := cj.Spec
	if fields := strings.Fields(s.Schedule); len(fields) != 5 {
		p = append(p, fmt.Sprintf("schedule %q: want 5 fields", s.Schedule))
	}
	if s.TimeZone == nil {
		p = append(p, "timeZone not set: the schedule would follow the controller's zone")
	}
	if s.ConcurrencyPolicy != batchv1.ForbidConcurrent {
		p = append(p, fmt.Sprintf("concurrencyPolicy = %q, want Forbid: two rotations must never overlap", s.ConcurrencyPolicy))
	}
	if s.StartingDeadlineSeconds == nil || *s.StartingDeadlineSeconds <= 0 {
		p = append(p, "startingDeadlineSeconds must be set and positive")
	}
	if s.SuccessfulJobsHistoryLimit == nil {
		p = append(p, "successfulJobsHistoryLimit not set")
	}
	if s.FailedJobsHistoryLimit == nil || *s.FailedJobsHistoryLimit < 1 {
		p = append(p, "failedJobsHistoryLimit must be set and keep at least 1 failed Job to inspect")
	}
	if s.Suspend != nil && *s.Suspend {
		p = append(p, "suspend: true ships a CronJob that never runs")
	}
	js := s.JobTemplate.Spec
	if js.BackoffLimit == nil || *js.BackoffLimit < 1 {
		p = append(p, "backoffLimit must be set and at least 1: an interrupted run (exit 3) resumes in a new pod")
	}
	if js.CompletionMode != nil && *js.CompletionMode == batchv1.IndexedCompletion {
		p = append(p, "the CronJob's Job must not be Indexed")
	}
	p = append(p, checkJob(&js, batchv1.PodFailurePolicyActionFailJob)...)
	args, perr := parseRunArgs(js.Template.Spec.Containers[0].Args)
	if perr == nil {
		if _, ok := args.values["shards"]; ok {
			p = append(p, "--shards belongs to the Indexed Job only")
		}
	}
	p = append(p, checkClaim(&js.Template.Spec, o, corev1.ReadWriteOnce)...)
	p = append(p, checkConfigRefs(&js.Template.Spec, o)...)
	p = append(p, checkDelivery(&js.Template.Spec, o)...)
	return p
}

func checkIndexedJob(o *objects) []string {
	j := &o.indexed
	var p []string
	if j.GenerateName == "" && j.Name == "" {
		p = append(p, "the Job has neither name nor generateName")
	}
	js := j.Spec
	if js.CompletionMode == nil || *js.CompletionMode != batchv1.IndexedCompletion {
		p = append(p, "completionMode must be Indexed: the shard index comes from JOB_COMPLETION_INDEX")
	}
	if js.BackoffLimitPerIndex == nil || *js.BackoffLimitPerIndex < 1 {
		p = append(p, "backoffLimitPerIndex must be set and at least 1: each shard resumes on its own")
	}
	p = append(p, checkJob(&js, batchv1.PodFailurePolicyActionFailIndex)...)
	args, err := parseRunArgs(js.Template.Spec.Containers[0].Args)
	if err == nil {
		if _, ok := args.values["shard"]; ok {
			p = append(p, "--shard K/N fixes one shard for every pod; use --shards N")
		}
		shards := args.last("shards")
		n, err := strconv.Atoi(shards)
		switch {
		case err != nil || n < 2:
			p = append(p, fmt.Sprintf("--shards %q: want a number of shards >= 2", shards))
		case js.Completions == nil || int(*js.Completions) != n:
			p = append(p, fmt.Sprintf("completions = %v, want --shards = %d", deref(js.Completions), n))
		case js.Parallelism == nil || *js.Parallelism < 1 || *js.Parallelism > *js.Completions:
			p = append(p, fmt.Sprintf("parallelism = %v, want 1..completions", deref(js.Parallelism)))
		}
	}
	p = append(p, checkClaim(&js.Template.Spec, o, corev1.ReadWriteMany)...)
	p = append(p, checkConfigRefs(&js.Template.Spec, o)...)
	p = append(p, checkDelivery(&js.Template.Spec, o)...)
	return p
}

// checkJob checks what the CronJob's Job and the Indexed Job share: the pod,
// the pwrotate container, and the failure policy, where exit codes 1 and 2
// take failAction.
func checkJob(js *batchv1.JobSpec, failAction batchv1.PodFailurePolicyAction) []string {
	var p []string
	pod := &js.Template.Spec
	if pod.RestartPolicy != corev1.RestartPolicyNever {
		p = append(p, fmt.Sprintf("restartPolicy = %q, want Never (podFailurePolicy requires it)", pod.RestartPolicy))
	}
	if js.PodReplacementPolicy == nil || *js.PodReplacementPolicy != batchv1.Failed {
		p = append(p, "podReplacementPolicy must be Failed: no new pod while the old one still writes --out")
	}
	if js.ActiveDeadlineSeconds != nil {
		p = append(p, "activeDeadlineSeconds would kill a long rotation half-way; leave it out")
	}
	if sc := pod.SecurityContext; sc == nil || sc.FSGroup == nil || *sc.FSGroup != nonRootID {
		p = append(p, fmt.Sprintf("pod securityContext.fsGroup must be %d: pwrotate writes to the claim at /out", nonRootID))
	}
	p = append(p, checkFailurePolicy(js.PodFailurePolicy, failAction)...)
	p = append(p, checkPod(pod)...)
	if len(pod.Containers) != 1 || len(pod.InitContainers) != 0 {
		return append(p, "want exactly one container, pwrotate")
	}
	return append(p, checkRunContainer(pod, &pod.Containers[0])...)
}

// disrupted is the condition the control plane puts on a pod it evicts,
// preempts or drains.
var disrupted = []corev1.PodCondition{{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue}}

// checkFailurePolicy checks which action each exit code of pwrotate gets,
// and that a disrupted pod is retried whatever its exit code: the rules are
// evaluated in order, so the DisruptionTarget rule must come before the
// exit-code rule.
func checkFailurePolicy(pfp *batchv1.PodFailurePolicy, failAction batchv1.PodFailurePolicyAction) []string {
	if pfp == nil {
		return []string{"podFailurePolicy not set: exit codes 1 and 2 would be retried"}
	}
	var p []string
	for _, code := range []int32{1, 2} {
		if a, ok := actionFor(pfp, containerName, code, nil); !ok || a != failAction {
			p = append(p, fmt.Sprintf("exit code %d: action %q, want %s (retrying a fatal or finished run does not help)", code, a, failAction))
		}
	}
	// 3 = interrupted, 4 = output folder held by another run: both must
	// count against the backoff limit and be retried with --resume, neither
	// fail at once (4 failing the Job would terminate the healthy lock
	// holder) nor retry forever uncounted.
	for _, code := range []int32{3, 4} {
		if a, ok := actionFor(pfp, containerName, code, nil); ok && a != batchv1.PodFailurePolicyActionCount {
			p = append(p, fmt.Sprintf("exit code %d: action %q, want Count (the next pod resumes)", code, a))
		}
	}
	// A disrupted pod may exit with anything: 3 after a clean SIGTERM, 2 if
	// it crashed on the way down, 137 if the grace period ran out.
	for _, code := range []int32{1, 2, 3, 4, 137} {
		if a, ok := actionFor(pfp, containerName, code, disrupted); !ok || a != batchv1.PodFailurePolicyActionIgnore {
			p = append(p, fmt.Sprintf("a disrupted pod (DisruptionTarget) exiting %d gets action %q, want Ignore: put the DisruptionTarget rule first, evictions and drains must neither fail the Job nor use up the backoff limit", code, a))
			break
		}
	}
	for _, r := range pfp.Rules {
		if r.OnExitCodes != nil && slices.Contains(r.OnExitCodes.Values, 0) {
			p = append(p, "exit code 0 in a podFailurePolicy rule")
		}
	}
	return p
}

// actionFor returns the action of the first rule that matches a pod whose
// container exited with code and which has conditions, as the Job controller
// evaluates them: in order, the first match wins.
func actionFor(pfp *batchv1.PodFailurePolicy, container string, code int32, conditions []corev1.PodCondition) (batchv1.PodFailurePolicyAction, bool) {
	for _, r := range pfp.Rules {
		if e := r.OnExitCodes; e != nil {
			if e.ContainerName != nil && *e.ContainerName != container {
				continue
			}
			in := slices.Contains(e.Values, code)
			if (e.Operator == batchv1.PodFailurePolicyOnExitCodesOpIn && in) ||
				(e.Operator == batchv1.PodFailurePolicyOnExitCodesOpNotIn && !in && code != 0) {
				return r.Action, true
			}
			continue
		}
		for _, pat := range r.OnPodConditions {
			if slices.ContainsFunc(conditions, func(c corev1.PodCondition) bool {
				return c.Type == pat.Type && c.Status == pat.Status
			}) {
				return r.Action, true
			}
		}
	}
	return "", false
}

// checkPod checks the hardening of a pod and its volumes.
func checkPod(pod *corev1.PodSpec) []string {
	var p []string
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		p = append(p, "automountServiceAccountToken must be false: the token is mounted explicitly, only where --deliver needs it")
	}
	if pod.HostNetwork || pod.HostPID || pod.HostIPC {
		p = append(p, "host namespaces in use")
	}
	sc := pod.SecurityContext
	if sc == nil {
		return append(p, "no pod securityContext")
	}
	if sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		p = append(p, "pod securityContext.runAsNonRoot must be true")
	}
	if sc.RunAsUser == nil || *sc.RunAsUser != nonRootID {
		p = append(p, fmt.Sprintf("pod securityContext.runAsUser = %v, want %d", deref(sc.RunAsUser), nonRootID))
	}
	if sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		for _, c := range pod.Containers {
			if c.SecurityContext == nil || c.SecurityContext.SeccompProfile == nil ||
				c.SecurityContext.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
				p = append(p, "seccompProfile RuntimeDefault not set for container "+c.Name)
			}
		}
	}
	volumes := map[string]*corev1.Volume{}
	for i := range pod.Volumes {
		v := &pod.Volumes[i]
		volumes[v.Name] = v
		if v.HostPath != nil {
			p = append(p, "volume "+v.Name+": hostPath")
		}
	}
	mounted := map[string]bool{}
	for i := range pod.Containers {
		c := &pod.Containers[i]
		p = append(p, checkContainer(c)...)
		paths := map[string]bool{}
		for _, m := range c.VolumeMounts {
			mounted[m.Name] = true
			if paths[m.MountPath] {
				p = append(p, fmt.Sprintf("container %s: %s mounted twice", c.Name, m.MountPath))
			}
			paths[m.MountPath] = true
			v, ok := volumes[m.Name]
			if !ok {
				p = append(p, fmt.Sprintf("container %s: mount %s names no volume %q", c.Name, m.MountPath, m.Name))
				continue
			}
			if (v.Secret != nil || v.ConfigMap != nil) && !m.ReadOnly {
				p = append(p, fmt.Sprintf("container %s: %s must be mounted read-only", c.Name, m.MountPath))
			}
		}
	}
	for name, v := range volumes {
		if !mounted[name] {
			p = append(p, "volume "+name+" is mounted by no container")
		}
		if s := v.Secret; s != nil {
			if s.DefaultMode == nil || *s.DefaultMode != 0o400 {
				p = append(p, fmt.Sprintf("secret volume %s: defaultMode = %v, want 0400", name, octal(s.DefaultMode)))
			}
			for _, it := range s.Items {
				if it.Mode != nil && *it.Mode != 0o400 {
					p = append(p, fmt.Sprintf("secret volume %s: item %s mode %s", name, it.Key, octal(it.Mode)))
				}
			}
		}
	}
	return p
}

// checkContainer checks the hardening and resources of one container.
func checkContainer(c *corev1.Container) []string {
	var p []string
	if err := checkImage(c.Image); err != nil {
		p = append(p, fmt.Sprintf("container %s: image %q: %v", c.Name, c.Image, err))
	}
	sc := c.SecurityContext
	if sc == nil {
		return append(p, "container "+c.Name+": no securityContext")
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		p = append(p, "container "+c.Name+": readOnlyRootFilesystem must be true")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		p = append(p, "container "+c.Name+": allowPrivilegeEscalation must be false")
	}
	if sc.Privileged != nil && *sc.Privileged {
		p = append(p, "container "+c.Name+": privileged")
	}
	if sc.RunAsNonRoot != nil && !*sc.RunAsNonRoot {
		p = append(p, "container "+c.Name+": runAsNonRoot false")
	}
	if sc.RunAsUser != nil && *sc.RunAsUser != nonRootID {
		p = append(p, fmt.Sprintf("container %s: runAsUser = %d, want %d", c.Name, *sc.RunAsUser, nonRootID))
	}
	if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		p = append(p, "container "+c.Name+": capabilities must drop ALL")
	} else if len(sc.Capabilities.Add) > 0 {
		p = append(p, "container "+c.Name+": capabilities.add must be empty")
	}
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, okReq := c.Resources.Requests[r]
		lim, okLim := c.Resources.Limits[r]
		switch {
		case !okReq:
			p = append(p, fmt.Sprintf("container %s: resources.requests.%s not set", c.Name, r))
		case !okLim:
			p = append(p, fmt.Sprintf("container %s: resources.limits.%s not set", c.Name, r))
		case req.Cmp(lim) > 0:
			p = append(p, fmt.Sprintf("container %s: resources.requests.%s %s above limit %s", c.Name, r, req.String(), lim.String()))
		}
	}
	return p
}

// checkImage accepts a reference pinned by digest, or by a tag other than
// latest.
func checkImage(ref string) error {
	if ref == "" {
		return fmt.Errorf("empty")
	}
	if _, digest, ok := strings.Cut(ref, "@"); ok {
		if !regexp.MustCompile(`^sha256:[0-9a-f]{64}$`).MatchString(digest) {
			return fmt.Errorf("malformed digest")
		}
		return nil
	}
	last := ref[strings.LastIndex(ref, "/")+1:]
	_, tag, ok := strings.Cut(last, ":")
	switch {
	case !ok || tag == "":
		return fmt.Errorf("no tag: the image would be :latest")
	case tag == "latest":
		return fmt.Errorf("tag latest: pin a version or a digest")
	}
	return nil
}

// checkRunContainer checks the pwrotate container: its arguments, its
// environment, and that every file it reads comes from the right volume.
func checkRunContainer(pod *corev1.PodSpec, c *corev1.Container) []string {
	var p []string
	if c.Name != containerName {
		p = append(p, fmt.Sprintf("container name %q, want %q (podFailurePolicy names it)", c.Name, containerName))
	}
	if len(c.Command) != 0 {
		p = append(p, "command overrides the image ENTRYPOINT; use args")
	}
	args, err := parseRunArgs(c.Args)
	if err != nil {
		return append(p, fmt.Sprintf("args: %v", err))
	}
	for _, f := range []string{"apply", "resume"} {
		if !args.bools[f] {
			p = append(p, "args: --"+f+" missing")
		}
	}
	if args.bools["demo"] {
		p = append(p, "args: --demo in a deployed manifest")
	}
	if out := args.last("out"); out != outArg {
		p = append(p, fmt.Sprintf("args: --out %q, want %q: one folder per Job, shared by its retries", out, outArg))
	}
	if r, err := strconv.ParseFloat(args.last("rate"), 64); err != nil || r <= 0 {
		p = append(p, "args: --rate must be set and positive (0 is unlimited)")
	}
	timeout, err := time.ParseDuration(args.last("timeout"))
	if err != nil || timeout <= 0 {
		p = append(p, fmt.Sprintf("args: --timeout %q: not a positive duration", args.last("timeout")))
	} else {
		grace := time.Duration(deref(pod.TerminationGracePeriodSeconds)) * time.Second
		if pod.TerminationGracePeriodSeconds == nil {
			grace = 30 * time.Second // the Kubernetes default
		}
		if grace < timeout+flushMargin {
			p = append(p, fmt.Sprintf("terminationGracePeriodSeconds %s must exceed --timeout %s by %s: requests in flight finish, then results are flushed", grace, timeout, flushMargin))
		}
	}
	// Files: where each one must come from.
	files := []struct {
		flag string
		kind string
	}{
		{"input", "configMap"},
		{"recipients-file", "configMap"},
		{"api-key-file", "secret"},
	}
	for _, f := range files {
		if err := checkFileSource(pod, c, args.last(f.flag), f.kind); err != nil {
			p = append(p, fmt.Sprintf("args: --%s: %v", f.flag, err))
		}
	}
	if err := checkOutVolume(pod, c, args.last("out")); err != nil {
		p = append(p, fmt.Sprintf("args: --out: %v", err))
	}
	// Environment: $(VAR) in args expands only when VAR is defined; an
	// undefined one stays as literal text, a silent wrong path.
	env := map[string]*corev1.EnvVar{}
	for i := range c.Env {
		env[c.Env[i].Name] = &c.Env[i]
	}
	for _, m := range regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`).FindAllStringSubmatch(strings.Join(c.Args, " "), -1) {
		if env[m[1]] == nil {
			p = append(p, fmt.Sprintf("args: $(%s) refers to no env variable", m[1]))
		}
	}
	if e := env["JOB_NAME"]; e == nil || e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != jobNameLabel {
		p = append(p, "env JOB_NAME must come from fieldRef "+jobNameLabel+" (the same for every retry of a Job)")
	}
	if e := env["ECGRID_API_KEY"]; e != nil && (e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil) {
		p = append(p, "env ECGRID_API_KEY must come from a Secret, never a literal")
	}
	if len(c.EnvFrom) != 0 {
		p = append(p, "envFrom: list variables one by one")
	}
	return p
}

// checkFileSource checks that file lies in a read-only mount of a volume of
// the given kind ("configMap" or "secret") and names one of its keys.
func checkFileSource(pod *corev1.PodSpec, c *corev1.Container, file, kind string) error {
	if file == "" {
		return fmt.Errorf("missing")
	}
	m, rel := mountFor(c, file)
	if m == nil {
		return fmt.Errorf("%s is in no mounted volume", file)
	}
	v := volumeNamed(pod, m.Name)
	if v == nil {
		return fmt.Errorf("%s: volume %q not found", file, m.Name)
	}
	var items []corev1.KeyToPath
	switch {
	case kind == "configMap" && v.ConfigMap != nil:
		items = v.ConfigMap.Items
	case kind == "secret" && v.Secret != nil:
		items = v.Secret.Items
		if v.Secret.SecretName != secretName {
			return fmt.Errorf("secret %q, want %q (docs/kubernetes.md creates it)", v.Secret.SecretName, secretName)
		}
	default:
		return fmt.Errorf("%s is not in a %s volume", file, kind)
	}
	if len(items) > 0 && !slices.ContainsFunc(items, func(it corev1.KeyToPath) bool { return it.Path == rel }) {
		return fmt.Errorf("%s: volume %s has no item with path %s", file, v.Name, rel)
	}
	return nil
}

// checkOutVolume checks that --out lies in a writable PersistentVolumeClaim
// mount: the output must outlive the pod.
func checkOutVolume(pod *corev1.PodSpec, c *corev1.Container, out string) error {
	m, _ := mountFor(c, out)
	if m == nil {
		return fmt.Errorf("%s is in no mounted volume", out)
	}
	if m.ReadOnly {
		return fmt.Errorf("%s is mounted read-only", m.MountPath)
	}
	if v := volumeNamed(pod, m.Name); v == nil || v.PersistentVolumeClaim == nil {
		return fmt.Errorf("%s must be on a PersistentVolumeClaim: the sealed passwords must outlive the pod", m.MountPath)
	}
	return nil
}

// checkClaim checks that the pod's claims exist in deploy/ and offer mode.
func checkClaim(pod *corev1.PodSpec, o *objects, mode corev1.PersistentVolumeAccessMode) []string {
	var p []string
	for _, v := range pod.Volumes {
		if v.PersistentVolumeClaim == nil {
			continue
		}
		pvc := o.claims()[v.PersistentVolumeClaim.ClaimName]
		if pvc == nil {
			p = append(p, fmt.Sprintf("volume %s: claim %q is not in deploy/", v.Name, v.PersistentVolumeClaim.ClaimName))
			continue
		}
		if !slices.Contains(pvc.Spec.AccessModes, mode) {
			p = append(p, fmt.Sprintf("volume %s: claim %s offers %v, want %s", v.Name, pvc.Name, pvc.Spec.AccessModes, mode))
		}
	}
	return p
}

// checkConfigRefs checks that the pod's ConfigMap volumes name the example
// ConfigMap and keys it has.
func checkConfigRefs(pod *corev1.PodSpec, o *objects) []string {
	var p []string
	for _, v := range pod.Volumes {
		cm := v.ConfigMap
		if cm == nil {
			continue
		}
		if cm.Name != o.config.Name {
			p = append(p, fmt.Sprintf("volume %s: ConfigMap %q, want %q (configmap.example.yaml)", v.Name, cm.Name, o.config.Name))
		}
		for _, it := range cm.Items {
			if _, ok := o.config.Data[it.Key]; !ok {
				p = append(p, fmt.Sprintf("volume %s: key %q is not in the example ConfigMap", v.Name, it.Key))
			}
		}
	}
	return p
}

func checkConfigMap(o *objects) []string {
	var p []string
	users, ok := o.config.Data["users.csv"]
	if !ok {
		return []string{"no users.csv"}
	}
	header, _, _ := strings.Cut(users, "\n")
	var hasID bool
	for _, col := range strings.Split(header, ",") {
		norm := strings.NewReplacer(" ", "", "_", "", "-", "").Replace(strings.ToLower(strings.TrimSpace(col)))
		switch norm {
		case "userid":
			hasID = true
		case "password", "newpassword":
			p = append(p, "users.csv has a password column: passwords never belong in a ConfigMap")
		}
	}
	if !hasID {
		p = append(p, "users.csv header has no userId column")
	}
	recips, ok := o.config.Data["recipients.txt"]
	if !ok {
		return append(p, "no recipients.txt")
	}
	lines := 0
	for line := range strings.Lines(recips) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		lines++
		if usableRecipient(line) {
			p = append(p, "recipients.txt must hold a placeholder, not a usable recipient: an applied example would seal passwords to a key the operator may not hold")
		}
	}
	if lines == 0 {
		p = append(p, "recipients.txt has no (placeholder) recipient line")
	}
	return p
}

// usableRecipient reports whether s parses as any recipient pwrotate takes.
func usableRecipient(s string) bool {
	if _, err := age.ParseX25519Recipient(s); err == nil {
		return true
	}
	if _, err := age.ParseHybridRecipient(s); err == nil {
		return true
	}
	_, err := agessh.ParseRecipient(s)
	return err == nil
}

func checkPVC(pvc *corev1.PersistentVolumeClaim, mode corev1.PersistentVolumeAccessMode) []string {
	var p []string
	if !slices.Contains(pvc.Spec.AccessModes, mode) {
		p = append(p, fmt.Sprintf("accessModes %v, want %s", pvc.Spec.AccessModes, mode))
	}
	if q, ok := pvc.Spec.Resources.Requests[corev1.ResourceStorage]; !ok || q.Sign() <= 0 {
		p = append(p, "resources.requests.storage not set")
	}
	return p
}

func checkCollectPod(o *objects) []string {
	pod := &o.collect.Spec
	p := checkPod(pod)
	p = append(p, checkClaim(pod, o, corev1.ReadWriteOnce)...)
	if pod.SecurityContext == nil || pod.SecurityContext.RunAsUser == nil || *pod.SecurityContext.RunAsUser != nonRootID {
		p = append(p, fmt.Sprintf("must run as %d to read the 0700 output folders", nonRootID))
	}
	for _, c := range pod.Containers {
		for _, m := range c.VolumeMounts {
			if v := volumeNamed(pod, m.Name); v != nil && v.PersistentVolumeClaim != nil && !m.ReadOnly {
				p = append(p, "the output claim must be mounted read-only in the collect pod")
			}
		}
	}
	return p
}

// ---- helpers ----

// exitRule returns the policy's first exit-code rule (the one holding 1 and
// 2), for the tests that break it.
func exitRule(pfp *batchv1.PodFailurePolicy) *batchv1.PodFailurePolicyRule {
	for i := range pfp.Rules {
		if pfp.Rules[i].OnExitCodes != nil {
			return &pfp.Rules[i]
		}
	}
	panic("no exit-code rule in podFailurePolicy")
}

// runArgs is a parsed `pwrotate run` command line.
type runArgs struct {
	bools  map[string]bool
	values map[string][]string
}

// last returns the last value given to a flag, "" if none.
func (a runArgs) last(flag string) string {
	v := a.values[flag]
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

// The flags of `pwrotate run` (docs/reference.md).
var (
	runBoolFlags  = []string{"apply", "resume", "reset-sessions", "include-self", "demo"}
	runValueFlags = []string{
		"input", "out", "recipient", "recipients-file", "base-url", "api-key-file",
		"rate", "burst", "workers", "timeout", "max-attempts", "length", "digits",
		"symbols", "symbol-set", "max-users", "pushgateway", "shard", "shards",
		"log-format", "log-level", "progress", "protect", "reason",
		"deliver", "kubeconfig", "kube-context", "older-than",
	}
)

// parseRunArgs parses container args of the form: run --flag [value]...
func parseRunArgs(args []string) (runArgs, error) {
	a := runArgs{bools: map[string]bool{}, values: map[string][]string{}}
	if len(args) == 0 || args[0] != "run" {
		return a, fmt.Errorf("want the run subcommand first, got %q", args)
	}
	for i := 1; i < len(args); i++ {
		arg := args[i]
		if !strings.HasPrefix(arg, "-") {
			return a, fmt.Errorf("unexpected argument %q", arg)
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(arg, "-"), "=")
		switch {
		case slices.Contains(runBoolFlags, name):
			b := true
			if hasValue {
				var err error
				if b, err = strconv.ParseBool(value); err != nil {
					return a, fmt.Errorf("flag --%s: %w", name, err)
				}
			}
			a.bools[name] = b
		case slices.Contains(runValueFlags, name):
			if !hasValue {
				if i+1 >= len(args) {
					return a, fmt.Errorf("flag --%s needs a value", name)
				}
				i++
				value = args[i]
			}
			a.values[name] = append(a.values[name], value)
		default:
			return a, fmt.Errorf("unknown flag --%s", name)
		}
	}
	return a, nil
}

// mountFor returns the mount holding file (the longest mountPath that
// contains it) and file's path relative to it.
func mountFor(c *corev1.Container, file string) (*corev1.VolumeMount, string) {
	var best *corev1.VolumeMount
	var rel string
	file = path.Clean(file)
	for i := range c.VolumeMounts {
		m := &c.VolumeMounts[i]
		mp := path.Clean(m.MountPath)
		r, ok := strings.CutPrefix(file, mp+"/")
		if !ok || (best != nil && len(mp) <= len(path.Clean(best.MountPath))) {
			continue
		}
		best, rel = m, r
	}
	return best, rel
}

func volumeNamed(pod *corev1.PodSpec, name string) *corev1.Volume {
	for i := range pod.Volumes {
		if pod.Volumes[i].Name == name {
			return &pod.Volumes[i]
		}
	}
	return nil
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

func octal(m *int32) string {
	if m == nil {
		return "unset"
	}
	return fmt.Sprintf("%#o", *m)
}
