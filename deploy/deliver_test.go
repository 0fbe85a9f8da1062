package deploy

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"

	"pwrotate/report/deliver"
)

// serviceAccountDir is where client-go looks for a pod's ServiceAccount
// token, CA and namespace.
const serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// checkDelivery checks a Job's pod for --deliver: the ServiceAccount of
// serviceaccount.yaml, its token mounted explicitly and read-only, the map
// from the ConfigMap, and, for every target of the example map, a Role that
// lets that ServiceAccount get and patch its Secret. Without --deliver, the
// pod must not have a token at all.
func checkDelivery(pod *corev1.PodSpec, o *objects) []string {
	if len(pod.Containers) != 1 {
		return nil // reported by checkJob
	}
	c := &pod.Containers[0]
	args, err := parseRunArgs(c.Args)
	if err != nil {
		return nil // reported by checkRunContainer
	}
	var p []string
	tokenMount := slices.IndexFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool {
		return strings.TrimSuffix(m.MountPath, "/") == serviceAccountDir
	})
	files := args.values["deliver"]
	if len(files) == 0 {
		if args.last("older-than") != "" {
			p = append(p, "args: --older-than without --deliver")
		}
		if tokenMount >= 0 || pod.ServiceAccountName != "" {
			p = append(p, "a ServiceAccount and its token without --deliver: pwrotate talks to the Kubernetes API only to deliver")
		}
		return p
	}
	if pod.ServiceAccountName != o.sa.Name {
		p = append(p, fmt.Sprintf("serviceAccountName %q, want %q (serviceaccount.yaml, bound by rolebinding-deliver.yaml) for --deliver", pod.ServiceAccountName, o.sa.Name))
	}
	if tokenMount < 0 {
		p = append(p, "--deliver without a ServiceAccount token mounted at "+serviceAccountDir)
	} else {
		p = append(p, checkTokenVolume(pod, &c.VolumeMounts[tokenMount])...)
	}
	for _, f := range files {
		if err := checkFileSource(pod, c, f, "configMap"); err != nil {
			p = append(p, fmt.Sprintf("args: --deliver: %v", err))
		}
	}
	if v := args.last("older-than"); v != "" {
		if _, err := deliver.ParseAge(v); err != nil {
			p = append(p, fmt.Sprintf("args: --older-than %v", err))
		}
	}
	m, err := exampleMap(o)
	if err != nil {
		return append(p, err.Error())
	}
	for _, u := range m.Users() {
		for _, t := range m.Targets(u) {
			if !allowed(o, t.Namespace, t.Secret, "get") || !allowed(o, t.Namespace, t.Secret, "patch") {
				p = append(p, fmt.Sprintf("deliver.csv line %d: %s: the ServiceAccount %s may not get and patch Secret %s in namespace %s (role-deliver.yaml, rolebinding-deliver.yaml)", t.Line, t, o.sa.Name, t.Secret, t.Namespace))
			}
		}
	}
	return p
}

// exampleMap reads deliver.csv of the example ConfigMap.
func exampleMap(o *objects) (*deliver.Map, error) {
	data, ok := o.config.Data["deliver.csv"]
	if !ok {
		return nil, fmt.Errorf("the example ConfigMap has no deliver.csv")
	}
	dir, err := os.MkdirTemp("", "deploy-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "deliver.csv")
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		return nil, err
	}
	m, err := deliver.ReadMap(path)
	if err != nil {
		return nil, fmt.Errorf("deliver.csv of the example ConfigMap: %w", err)
	}
	return m, nil
}

// checkTokenVolume checks the volume mounted at serviceAccountDir: read-only,
// projected, a ServiceAccount token that expires within the hour at "token",
// the cluster CA at "ca.crt" and the namespace at "namespace".
func checkTokenVolume(pod *corev1.PodSpec, m *corev1.VolumeMount) []string {
	var p []string
	if !m.ReadOnly {
		p = append(p, "the ServiceAccount token must be mounted read-only")
	}
	v := volumeNamed(pod, m.Name)
	if v == nil || v.Projected == nil {
		return append(p, "the ServiceAccount token volume must be a projected volume")
	}
	found := map[string]bool{}
	for _, src := range v.Projected.Sources {
		switch {
		case src.ServiceAccountToken != nil:
			tok := src.ServiceAccountToken
			if tok.Path == "token" {
				found["token"] = true
			}
			if tok.ExpirationSeconds == nil || *tok.ExpirationSeconds > 3600 {
				p = append(p, "the ServiceAccount token must expire within the hour (expirationSeconds <= 3600)")
			}
			if tok.Audience != "" {
				p = append(p, "the ServiceAccount token's audience must be the API server's (no audience)")
			}
		case src.ConfigMap != nil && src.ConfigMap.Name == "kube-root-ca.crt":
			for _, it := range src.ConfigMap.Items {
				found[it.Path] = found[it.Path] || it.Key == "ca.crt"
			}
		case src.DownwardAPI != nil:
			for _, it := range src.DownwardAPI.Items {
				found[it.Path] = found[it.Path] || (it.FieldRef != nil && it.FieldRef.FieldPath == "metadata.namespace")
			}
		}
	}
	for _, f := range []string{"token", "ca.crt", "namespace"} {
		if !found[f] {
			p = append(p, "the ServiceAccount token volume lacks "+f)
		}
	}
	return p
}

// allowed reports whether a Role of deploy/, bound to the ServiceAccount by
// a RoleBinding of deploy/ in the same namespace, grants verb on Secret name
// in namespace ns.
func allowed(o *objects, ns, name, verb string) bool {
	r, b := &o.role, &o.binding
	if r.Namespace != ns || b.Namespace != ns || b.RoleRef.Kind != "Role" || b.RoleRef.Name != r.Name {
		return false
	}
	if !slices.ContainsFunc(b.Subjects, func(s rbacv1.Subject) bool {
		return s.Kind == rbacv1.ServiceAccountKind && s.Name == o.sa.Name
	}) {
		return false
	}
	for _, rule := range r.Rules {
		if slices.Contains(rule.APIGroups, "") && slices.Contains(rule.Resources, "secrets") &&
			slices.Contains(rule.Verbs, verb) && slices.Contains(rule.ResourceNames, name) {
			return true
		}
	}
	return false
}

func checkServiceAccount(o *objects) []string {
	if o.sa.AutomountServiceAccountToken == nil || *o.sa.AutomountServiceAccountToken {
		return []string{"automountServiceAccountToken must be false: the token is mounted explicitly, only where --deliver needs it"}
	}
	return nil
}

// checkRole checks that the Role grants get and patch on named Secrets and
// nothing else.
func checkRole(o *objects) []string {
	var p []string
	if o.role.Namespace == "" {
		p = append(p, "the Role must name the namespace of the Secrets it grants")
	}
	if len(o.role.Rules) == 0 {
		p = append(p, "the Role has no rule")
	}
	for i, r := range o.role.Rules {
		if !slices.Equal(r.APIGroups, []string{""}) || !slices.Equal(r.Resources, []string{"secrets"}) {
			p = append(p, fmt.Sprintf("rule %d: want apiGroups [\"\"] and resources [secrets] only, got %q %q", i, r.APIGroups, r.Resources))
		}
		if len(r.ResourceNames) == 0 || slices.Contains(r.ResourceNames, "*") {
			p = append(p, fmt.Sprintf("rule %d: resourceNames must list the Secrets: without it the job could read every Secret of the namespace", i))
		}
		for _, v := range r.Verbs {
			if v != "get" && v != "patch" {
				p = append(p, fmt.Sprintf("rule %d: verb %q: --deliver needs get and patch only", i, v))
			}
		}
		if len(r.NonResourceURLs) > 0 {
			p = append(p, fmt.Sprintf("rule %d: nonResourceURLs", i))
		}
	}
	return p
}

// checkRoleBinding checks that the RoleBinding binds the Role, beside it,
// to the CronJob's ServiceAccount alone.
func checkRoleBinding(o *objects) []string {
	var p []string
	b := &o.binding
	if b.Namespace != o.role.Namespace {
		p = append(p, fmt.Sprintf("the RoleBinding's namespace %q, want the Role's %q", b.Namespace, o.role.Namespace))
	}
	if b.RoleRef.Kind != "Role" || b.RoleRef.Name != o.role.Name || b.RoleRef.APIGroup != rbacv1.GroupName {
		p = append(p, fmt.Sprintf("roleRef %+v, want Role %s", b.RoleRef, o.role.Name))
	}
	if len(b.Subjects) != 1 || b.Subjects[0].Kind != rbacv1.ServiceAccountKind || b.Subjects[0].Name != o.sa.Name || b.Subjects[0].Namespace == "" {
		p = append(p, fmt.Sprintf("subjects %+v, want the ServiceAccount %s alone, with its namespace", b.Subjects, o.sa.Name))
	}
	if cron := o.cron.Spec.JobTemplate.Spec.Template.Spec.ServiceAccountName; cron != o.sa.Name {
		p = append(p, fmt.Sprintf("the CronJob runs as ServiceAccount %q, not the bound %q", cron, o.sa.Name))
	}
	return p
}

// TestDeliveryChecksCatchMistakes breaks one property of the delivery
// manifests at a time and expects the checks to name it.
func TestDeliveryChecksCatchMistakes(t *testing.T) {
	pod := func(o *objects) *corev1.PodSpec { return &o.cron.Spec.JobTemplate.Spec.Template.Spec }
	ctr := func(o *objects) *corev1.Container { return &pod(o).Containers[0] }
	tokenVolume := func(o *objects) *corev1.ProjectedVolumeSource {
		return volumeNamed(pod(o), "kube-api-access").Projected
	}
	tests := []struct {
		name   string
		check  func(*objects) []string
		break_ func(*objects)
		want   string
	}{
		{"default ServiceAccount", checkCronJob, func(o *objects) { pod(o).ServiceAccountName = "" }, "serviceAccountName"},
		{"no token", checkCronJob, func(o *objects) {
			c := ctr(o)
			c.VolumeMounts = slices.DeleteFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == "kube-api-access" })
			pod(o).Volumes = slices.DeleteFunc(pod(o).Volumes, func(v corev1.Volume) bool { return v.Name == "kube-api-access" })
		}, "without a ServiceAccount token"},
		{"token writable", checkCronJob, func(o *objects) {
			for i := range ctr(o).VolumeMounts {
				if ctr(o).VolumeMounts[i].Name == "kube-api-access" {
					ctr(o).VolumeMounts[i].ReadOnly = false
				}
			}
		}, "token must be mounted read-only"},
		{"long-lived token", checkCronJob, func(o *objects) {
			for _, s := range tokenVolume(o).Sources {
				if s.ServiceAccountToken != nil {
					s.ServiceAccountToken.ExpirationSeconds = nil
				}
			}
		}, "expire within the hour"},
		{"no CA", checkCronJob, func(o *objects) {
			tokenVolume(o).Sources = slices.DeleteFunc(tokenVolume(o).Sources, func(s corev1.VolumeProjection) bool { return s.ConfigMap != nil })
		}, "lacks ca.crt"},
		{"map outside the ConfigMap", checkCronJob, func(o *objects) {
			c := ctr(o)
			c.Args[slices.Index(c.Args, "--deliver")+1] = "/tmp/deliver.csv"
		}, "--deliver"},
		{"bad --older-than", checkCronJob, func(o *objects) {
			c := ctr(o)
			c.Args[slices.Index(c.Args, "--older-than")+1] = "3 months"
		}, "--older-than"},
		{"--older-than alone", checkCronJob, func(o *objects) {
			c := ctr(o)
			i := slices.Index(c.Args, "--deliver")
			c.Args = slices.Delete(c.Args, i, i+2)
		}, "--older-than without --deliver"},
		{"token without --deliver", checkIndexedJob, func(o *objects) {
			o.indexed.Spec.Template.Spec.ServiceAccountName = "pwrotate"
		}, "only to deliver"},
		{"target not in the Role", checkCronJob, func(o *objects) {
			o.config.Data["deliver.csv"] += "1044,integrations,edi-as2,password\n"
		}, "line 4: integrations/edi-as2[password]"},
		{"target in another namespace", checkCronJob, func(o *objects) {
			o.config.Data["deliver.csv"] += "1044,billing,edi-ftp,password\n"
		}, "in namespace billing"},
		{"bad example map", checkCronJob, func(o *objects) {
			o.config.Data["deliver.csv"] += "1044,Integrations,x,y\n"
		}, "namespace \"Integrations\""},
		{"list secrets", checkRole, func(o *objects) { o.role.Rules[0].Verbs = append(o.role.Rules[0].Verbs, "list") }, "verb \"list\""},
		{"every secret", checkRole, func(o *objects) { o.role.Rules[0].ResourceNames = nil }, "resourceNames"},
		{"configmaps too", checkRole, func(o *objects) { o.role.Rules[0].Resources = []string{"secrets", "configmaps"} }, "resources [secrets] only"},
		{"no patch", checkCronJob, func(o *objects) { o.role.Rules[0].Verbs = []string{"get"} }, "may not get and patch"},
		{"bound to another account", checkRoleBinding, func(o *objects) { o.binding.Subjects[0].Name = "default" }, "subjects"},
		{"bound to a group", checkRoleBinding, func(o *objects) {
			o.binding.Subjects = append(o.binding.Subjects, rbacv1.Subject{Kind: rbacv1.GroupKind, Name: "system:authenticated"})
		}, "alone"},
		{"binding elsewhere", checkRoleBinding, func(o *objects) { o.binding.Namespace = "default" }, "namespace"},
		{"token automounted", checkServiceAccount, func(o *objects) { o.sa.AutomountServiceAccountToken = nil }, "automountServiceAccountToken"},
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
