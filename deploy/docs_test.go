package deploy

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// docsPath is the Kubernetes guide whose recipes the manifests implement.
const docsPath = "../docs/kubernetes.md"

// checkDocs returns the recipes in text that would hurt an operator who
// copies them: a fixed manual Job name (a name used before lands in the
// finished folder and rotates nothing), `kubectl apply` on a Secret (the key
// is copied into an annotation), and shred advice (unreliable on journaling
// file systems and SSDs).
func checkDocs(text string) []string {
	var p []string
	// Join continuation lines so a command is one line.
	text = strings.ReplaceAll(text, "\\\n", " ")
	fixedJob := regexp.MustCompile(`kubectl create job --from=cronjob/\S+ +("?)([a-z0-9][a-z0-9-]*)("?)(\s|$)`)
	for line := range codeLines(text) {
		if m := fixedJob.FindStringSubmatch(line); m != nil {
			p = append(p, "fixed manual Job name "+m[2]+": use a unique one, e.g. pwrotate-manual-$(date +%s)")
		}
		if strings.Contains(line, "kubectl apply") && strings.Contains(strings.ToLower(line), "secret") && !strings.Contains(line, "never") && !strings.Contains(line, "Never") {
			p = append(p, "kubectl apply on a Secret: "+strings.TrimSpace(line))
		}
		if strings.Contains(line, "shred -u") && !strings.Contains(line, "not rely") {
			p = append(p, "shred advice: "+strings.TrimSpace(line))
		}
	}
	for _, want := range []string{
		"--dry-run=client -o yaml | kubectl replace -f -", // Secret rotation
		"kubectl patch cronjob pwrotate -p '{\"spec\":{\"suspend\":true}}'",
		"kubectl set env --local -f - JOB_NAME=", // resume a failed Job's folder
		"kube_job_status_active",                 // stuck Job alert
		`phase="Pending"`,                        // stuck pod alert
		"activeDeadlineSeconds",
		"fsGroupPolicy",
	} {
		if !strings.Contains(strings.Join(strings.Fields(text), " "), want) {
			p = append(p, "recipe missing: "+want)
		}
	}
	return p
}

// codeLines yields the lines inside the fenced code blocks of a Markdown
// text: the commands an operator copies.
func codeLines(text string) func(func(string) bool) {
	return func(yield func(string) bool) {
		in := false
		for line := range strings.Lines(text) {
			if strings.HasPrefix(strings.TrimSpace(line), "```") {
				in = !in
				continue
			}
			if in && !yield(line) {
				return
			}
		}
	}
}

func TestDocsRecipes(t *testing.T) {
	data, err := os.ReadFile(docsPath)
	if err != nil {
		t.Fatalf("reading %s: %v", docsPath, err)
	}
	text := string(data)
	for _, p := range checkDocs(text) {
		t.Error(p)
	}
	tests := []struct {
		name, add, want string
	}{
		{"fixed name", "kubectl create job --from=cronjob/pwrotate pwrotate-manual-1\n", "pwrotate-manual-1"},
		{"fixed quoted name", "kubectl create job --from=cronjob/pwrotate \"run-2\" \\\n  --dry-run=client\n", "run-2"},
		{"apply a secret", "kubectl create secret generic k --from-file=a=b --dry-run=client -o yaml | kubectl apply -f -\n", "kubectl apply on a Secret"},
		{"shred", "shred -u ./api-key\n", "shred advice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			problems := checkDocs(text + "\n```sh\n" + tt.add + "```\n")
			for _, p := range problems {
				if strings.Contains(p, tt.want) {
					return
				}
			}
			t.Errorf("problems = %q, want one naming %q", problems, tt.want)
		})
	}
}
