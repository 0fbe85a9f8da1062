package deploy

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const (
	dockerfilePath   = "../Dockerfile"
	dockerignorePath = "../.dockerignore"
	binaryPath       = "/pwrotate"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	cmd  string // upper case: FROM, RUN...
	args string
	line int
}

// stage is a build stage: its FROM, the comment lines right above it, and
// the instructions that follow.
type stage struct {
	image, name string
	comments    []string
	line        int
	instrs      []instruction
}

// find returns the stage's instructions of kind cmd.
func (s *stage) find(cmd string) []instruction {
	var out []instruction
	for _, in := range s.instrs {
		if in.cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

// parseDockerfile splits a Dockerfile into stages. It handles comments,
// backslash continuations and `FROM [--platform=...] image [AS name]`;
// heredocs are not supported (and not used).
func parseDockerfile(text string) ([]stage, error) {
	var stages []stage
	var buf strings.Builder
	var comments []string // the comment block right above the next instruction
	start := 0
	sc := bufio.NewScanner(strings.NewReader(text))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") {
			if buf.Len() == 0 {
				comments = append(comments, strings.TrimSpace(strings.TrimPrefix(line, "#")))
			}
			continue
		}
		if line == "" && buf.Len() == 0 {
			comments = nil
			continue
		}
		if buf.Len() == 0 {
			start = n
		}
		if cont, ok := strings.CutSuffix(line, `\`); ok {
			buf.WriteString(cont + " ")
			continue
		}
		buf.WriteString(line)
		full := buf.String()
		buf.Reset()
		cmd, args, _ := strings.Cut(full, " ")
		in := instruction{cmd: strings.ToUpper(cmd), args: strings.Join(strings.Fields(args), " "), line: start}
		if in.cmd == "FROM" {
			f := strings.Fields(args)
			f = slices.DeleteFunc(f, func(s string) bool { return strings.HasPrefix(s, "--") })
			switch {
			case len(f) == 1:
				stages = append(stages, stage{image: f[0], comments: comments, line: start})
			case len(f) == 3 && strings.EqualFold(f[1], "AS"):
				stages = append(stages, stage{image: f[0], name: f[2], comments: comments, line: start})
			default:
				return nil, fmt.Errorf("line %d: malformed FROM %q", start, args)
			}
			comments = nil
			continue
		}
		comments = nil
		if len(stages) == 0 {
			if in.cmd != "ARG" {
				return nil, fmt.Errorf("line %d: %s before the first FROM", start, in.cmd)
			}
			continue
		}
		stages[len(stages)-1].instrs = append(stages[len(stages)-1].instrs, in)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading Dockerfile: %w", err)
	}
	if buf.Len() != 0 {
		return nil, fmt.Errorf("line %d: continuation at end of file", start)
	}
	return stages, nil
}

// checkDockerfile returns the ways text falls short of the image pwrotate
// needs: static, stamped, minimal, non-root.
func checkDockerfile(text string) []string {
	stages, err := parseDockerfile(text)
	if err != nil {
		return []string{err.Error()}
	}
	if len(stages) < 2 {
		return []string{"want a multi-stage build: a builder and a minimal final stage"}
	}
	var p []string
	final := &stages[len(stages)-1]

	// Every base image pinned by digest, its tag kept in view.
	for i := range stages {
		p = append(p, checkBasePin(stages[:i], &stages[i])...)
	}

	// The final stage: a minimal base, the binary only, non-root, exec form.
	img := final.image
	switch {
	case img == "scratch":
	case strings.HasPrefix(img, "gcr.io/distroless/static"):
		if err := checkImage(img); err != nil {
			p = append(p, fmt.Sprintf("final FROM %s: %v", img, err))
		}
	default:
		p = append(p, fmt.Sprintf("final FROM %s: want gcr.io/distroless/static or scratch", img))
	}
	var builder *stage
	for _, c := range final.find("COPY") {
		from := regexp.MustCompile(`--from=(\S+)`).FindStringSubmatch(c.args)
		if from == nil {
			p = append(p, fmt.Sprintf("line %d: final stage COPY without --from: only the binary belongs in the image", c.line))
			continue
		}
		if strings.Contains(c.args, binaryPath+" ") {
			for i := range stages[:len(stages)-1] {
				if stages[i].name == from[1] {
					builder = &stages[i]
				}
			}
		}
	}
	users := final.find("USER")
	if len(users) == 0 {
		p = append(p, "final stage: no USER: the image would run as root")
	} else {
		user := users[len(users)-1].args
		u, g, _ := strings.Cut(user, ":")
		switch {
		case u == "" || u == "root" || u == "0":
			p = append(p, fmt.Sprintf("final stage: USER %q is root", user))
		case !numericID(u) || !numericID(g):
			p = append(p, fmt.Sprintf("final stage: USER %q: want numeric uid:gid (%d:%d): with a user name the kubelet cannot verify runAsNonRoot unless the pod sets runAsUser", user, nonRootID, nonRootID))
		}
	}
	if ep := final.find("ENTRYPOINT"); len(ep) == 0 {
		p = append(p, "final stage: no ENTRYPOINT")
	} else {
		var argv []string
		if err := json.Unmarshal([]byte(ep[len(ep)-1].args), &argv); err != nil || len(argv) == 0 || argv[0] != binaryPath {
			p = append(p, fmt.Sprintf(`final stage: ENTRYPOINT %s: want exec form ["%s"] (no shell in the image; signals must reach pwrotate)`, ep[len(ep)-1].args, binaryPath))
		}
	}
	for _, c := range final.find("CMD") {
		var argv []string
		if err := json.Unmarshal([]byte(c.args), &argv); err != nil {
			p = append(p, fmt.Sprintf("line %d: CMD must be in exec form", c.line))
		}
	}
	for i := range stages {
		for _, in := range stages[i].instrs {
			if (in.cmd == "ENV" || in.cmd == "ARG") && regexp.MustCompile(`(?i)(api_?key|password|token|secret)`).MatchString(in.args) {
				p = append(p, fmt.Sprintf("line %d: %s %s: no credential belongs in an image", in.line, in.cmd, in.args))
			}
		}
	}

	// The builder: Go 1.26, cached modules, a static stamped build.
	if builder == nil {
		return append(p, "final stage: no COPY --from=<builder> of "+binaryPath)
	}
	if !strings.HasPrefix(builder.image, "golang:1.26") {
		p = append(p, fmt.Sprintf("builder FROM %s: want golang:1.26", builder.image))
	}
	download, copyAll, build := -1, -1, -1
	args := map[string]int{}
	for i, in := range builder.instrs {
		switch {
		case in.cmd == "RUN" && strings.Contains(in.args, "go mod download") && download < 0:
			download = i
		case in.cmd == "COPY" && regexp.MustCompile(`(^| )\. \S+$`).MatchString(in.args) && copyAll < 0:
			copyAll = i
		case in.cmd == "RUN" && strings.Contains(in.args, "go build"):
			build = i
		case in.cmd == "ARG":
			name, _, _ := strings.Cut(in.args, "=")
			args[name] = i
		}
	}
	switch {
	case download < 0:
		p = append(p, "builder: no RUN go mod download")
	case copyAll >= 0 && download > copyAll:
		p = append(p, "builder: go mod download comes after COPY . : the module layer is rebuilt on every source change")
	case !slices.ContainsFunc(builder.instrs[:download], func(in instruction) bool {
		return in.cmd == "COPY" && strings.Contains(in.args, "go.mod") && strings.Contains(in.args, "go.sum")
	}):
		p = append(p, "builder: go.mod and go.sum are not copied before go mod download")
	}
	if build < 0 {
		return append(p, "builder: no RUN go build")
	}
	run := builder.instrs[build].args
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "-X main.version=${VERSION}", "-X main.commit=${COMMIT}", "-o " + binaryPath} {
		if !strings.Contains(run, want) {
			p = append(p, fmt.Sprintf("builder: go build lacks %s", want))
		}
	}
	for _, name := range []string{"VERSION", "COMMIT"} {
		if i, ok := args[name]; !ok || i > build {
			p = append(p, fmt.Sprintf("builder: ARG %s must be declared in the builder stage before go build (an ARG before FROM is not in scope)", name))
		}
	}
	return p
}

// numericID reports whether s is a decimal uid or gid other than 0.
func numericID(s string) bool {
	n, err := strconv.ParseUint(s, 10, 32)
	return err == nil && n != 0
}

// digestRef matches an image reference pinned by digest, with its tag kept:
// name:tag@sha256:<64 hex>.
var digestRef = regexp.MustCompile(`^([^@\s]+):([^:@/\s]+)@sha256:[0-9a-f]{64}$`)

// checkBasePin checks that st's base image (unless scratch or an earlier
// stage) is pinned by digest with its tag in the reference, and that the
// comment right above the FROM names that tag (and so says what the digest
// stands for when the reference is read alone).
func checkBasePin(earlier []stage, st *stage) []string {
	img := st.image
	if img == "scratch" || slices.ContainsFunc(earlier, func(e stage) bool { return e.name != "" && e.name == img }) {
		return nil
	}
	m := digestRef.FindStringSubmatch(img)
	if m == nil {
		return []string{fmt.Sprintf("line %d: FROM %s: want name:tag@sha256:<digest>: a base image must be pinned by digest (a tag can be moved)", st.line, img)}
	}
	if tag := m[1] + ":" + m[2]; !slices.ContainsFunc(st.comments, func(c string) bool { return strings.Contains(c, tag) }) {
		return []string{fmt.Sprintf("line %d: FROM %s: no comment above it naming %s (and when its digest was read)", st.line, img, tag)}
	}
	return nil
}

func TestDockerfile(t *testing.T) {
	data, err := os.ReadFile(dockerfilePath)
	if err != nil {
		t.Fatalf("reading Dockerfile: %v", err)
	}
	for _, p := range checkDockerfile(string(data)) {
		t.Error(p)
	}
}

// TestDockerfileChecksCatchMistakes edits the Dockerfile one way at a time
// and expects checkDockerfile to name the damage.
func TestDockerfileChecksCatchMistakes(t *testing.T) {
	data, err := os.ReadFile(dockerfilePath)
	if err != nil {
		t.Fatalf("reading Dockerfile: %v", err)
	}
	text := string(data)
	// The two FROM lines, digests included, as the Dockerfile has them.
	fromLine := func(prefix string) string {
		for line := range strings.Lines(text) {
			if strings.HasPrefix(line, prefix) {
				return strings.TrimSuffix(line, "\n")
			}
		}
		t.Fatalf("the Dockerfile has no line starting with %q: update this test", prefix)
		return ""
	}
	builderFrom := fromLine("FROM golang:")
	finalFrom := fromLine("FROM gcr.io/distroless/")
	tests := []struct {
		name, old, new, want string
	}{
		{"cgo", "CGO_ENABLED=0 ", "", "CGO_ENABLED=0"},
		{"trimpath", "-trimpath", "", "-trimpath"},
		{"version stamp", "-X main.version=${VERSION}", "", "main.version"},
		{"commit stamp", "-X main.commit=${COMMIT}", "", "main.commit"},
		{"ARG before FROM only", "ARG VERSION=dev\nARG COMMIT=unknown\n\n# Static", "# Static", "ARG VERSION"},
		{"root", "USER 65532:65532", "USER root", "root"},
		{"root uid", "USER 65532:65532", "USER 0:0", "root"},
		{"no user", "USER 65532:65532", "", "no USER"},
		{"named user", "USER 65532:65532", "USER nonroot:nonroot", "numeric"},
		{"no group", "USER 65532:65532", "USER 65532", "numeric"},
		{"shell entrypoint", `ENTRYPOINT ["/pwrotate"]`, "ENTRYPOINT /pwrotate", "exec form"},
		{"shell cmd", `CMD ["run", "--help"]`, "CMD run --help", "CMD"},
		{"debian final", finalFrom, "FROM debian:bookworm", "distroless"},
		{"latest final", finalFrom, "FROM gcr.io/distroless/static-debian12:latest", "latest"},
		{"final by tag only", finalFrom, "FROM gcr.io/distroless/static-debian12:nonroot", "pinned by digest"},
		{"builder by tag only", builderFrom, "FROM golang:1.26-bookworm AS builder", "pinned by digest"},
		{"digest without tag", builderFrom, strings.Replace(builderFrom, ":1.26-bookworm", "", 1), "pinned by digest"},
		{"short digest", builderFrom, builderFrom[:len(builderFrom)-len(" AS builder")-1] + " AS builder", "pinned by digest"},
		{"tag comment dropped", "# golang:1.26-bookworm, digest", "# builder, digest", "no comment above it naming golang:1.26-bookworm"},
		{"comment not adjacent", builderFrom, "\n" + builderFrom, "no comment above it"},
		{"source in image", "COPY --from=builder /pwrotate /pwrotate", "COPY --from=builder /pwrotate /pwrotate\nCOPY . /src", "without --from"},
		{"single stage", finalFrom, "", "multi-stage"},
		{"modules uncached", "RUN go mod download && go mod verify\n", "", "go mod download"},
		{"old go", "FROM golang:1.26-bookworm", "FROM golang:1.22-bookworm", "golang:1.26"},
		{"baked key", "ARG VERSION=dev\nARG COMMIT=unknown\nLABEL", "ARG VERSION=dev\nARG COMMIT=unknown\nENV ECGRID_API_KEY=x\nLABEL", "credential"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(text, tt.old) {
				t.Fatalf("the Dockerfile no longer contains %q: update this test", tt.old)
			}
			problems := checkDockerfile(strings.Replace(text, tt.old, tt.new, 1))
			for _, p := range problems {
				if strings.Contains(p, tt.want) {
					return
				}
			}
			t.Errorf("problems = %q, want one naming %q", problems, tt.want)
		})
	}
}

// ---- .dockerignore ----

// ignorePattern is one .dockerignore line.
type ignorePattern struct {
	re     *regexp.Regexp
	negate bool
}

// parseDockerignore reads .dockerignore patterns: `#` comments, `!`
// exceptions, `*`, `?` and `**` as in Docker's pattern matcher.
func parseDockerignore(text string) []ignorePattern {
	var out []ignorePattern
	for line := range strings.Lines(text) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		neg := strings.HasPrefix(line, "!")
		line = path.Clean(strings.TrimPrefix(strings.TrimPrefix(line, "!"), "/"))
		var re strings.Builder
		re.WriteString("^")
		for i := 0; i < len(line); i++ {
			switch {
			case strings.HasPrefix(line[i:], "**/"):
				re.WriteString("(.*/)?")
				i += 2
			case strings.HasPrefix(line[i:], "**"):
				re.WriteString(".*")
				i++
			case line[i] == '*':
				re.WriteString("[^/]*")
			case line[i] == '?':
				re.WriteString("[^/]")
			default:
				re.WriteString(regexp.QuoteMeta(line[i : i+1]))
			}
		}
		re.WriteString("$")
		out = append(out, ignorePattern{regexp.MustCompile(re.String()), neg})
	}
	return out
}

// ignored reports whether the build context leaves out file (slash
// separated, relative to the repository root): the last pattern matching
// the file or one of its parent folders decides.
func ignored(patterns []ignorePattern, file string) bool {
	out := false
	for _, p := range patterns {
		for f := file; f != "." && f != "/"; f = path.Dir(f) {
			if p.re.MatchString(f) {
				out = !p.negate
				break
			}
		}
	}
	return out
}

// checkDockerignore checks that run output and secrets stay out of the
// build context and that everything `go build` reads stays in. needed lists
// the repository's files the build needs.
func checkDockerignore(text string, needed []string) []string {
	patterns := parseDockerignore(text)
	var p []string
	for _, f := range []string{
		".git/HEAD", "pwrotate", "job/job.test", "cover.out",
		"passwords-g0001.age", "demo-out/passwords-g0002.age", "demo-out/results.csv",
		"out/summary.json", "report/testdata/sealed.age", "demo-out/demo-identity.txt", "key.txt",
		"api-key", "deploy/api-key",
	} {
		if !ignored(patterns, f) {
			p = append(p, fmt.Sprintf("%s is sent to the build context", f))
		}
	}
	for _, f := range append([]string{"go.mod", "go.sum", "main.go", "Dockerfile"}, needed...) {
		if ignored(patterns, f) {
			p = append(p, fmt.Sprintf("%s is left out of the build context, go build needs it", f))
		}
	}
	return p
}

// buildInputs lists the repository's files that `go build .` may read:
// go.mod, go.sum, non-test Go files outside testdata, and //go:embed
// targets (taken as globs, relative to their package).
func buildInputs(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	embed := regexp.MustCompile(`(?m)^//go:embed\s+(.+)$`)
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if name := d.Name(); rel != "." && (strings.HasPrefix(name, ".") || name == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(rel, ".go") || strings.HasSuffix(rel, "_test.go") {
			return nil
		}
		out = append(out, rel)
		src, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, m := range embed.FindAllStringSubmatch(string(src), -1) {
			for _, pat := range strings.Fields(m[1]) {
				pat = strings.TrimPrefix(strings.Trim(pat, "`\""), "all:")
				matches, _ := filepath.Glob(filepath.Join(filepath.Dir(p), pat))
				for _, mm := range matches {
					r, _ := filepath.Rel(root, mm)
					out = append(out, filepath.ToSlash(r))
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walking the repository: %v", err)
	}
	return out
}

func TestDockerignore(t *testing.T) {
	data, err := os.ReadFile(dockerignorePath)
	if err != nil {
		t.Fatalf("reading .dockerignore: %v", err)
	}
	needed := buildInputs(t, "..")
	if !slices.Contains(needed, "deploy/doc.go") {
		t.Fatalf("buildInputs missed deploy/doc.go: %q", needed)
	}
	text := string(data)
	for _, p := range checkDockerignore(text, needed) {
		t.Error(p)
	}

	tests := []struct {
		name, old, new, want string
	}{
		{"age files kept", "**/*.age\n", "", "report/testdata/sealed.age"},
		{"age at the root only", "**/*.age\n", "*.age\n", "report/testdata/sealed.age"},
		{"git kept", ".git\n", "", ".git/HEAD"},
		{"demo output kept", "demo-out\n", "", "demo-out/results.csv"},
		{"test binaries kept", "**/*.test\n", "", "job/job.test"},
		{"sources dropped", "# Version control", "*.go\n# Version control", "main.go"},
		{"exception honoured", "**/key.txt\n", "**/key.txt\n!key.txt\n", "key.txt"},
		{"api key kept", "**/api-key\n", "", "api-key"},
		{"api key at the root only", "**/api-key\n", "api-key\n", "deploy/api-key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(text, tt.old) {
				t.Fatalf(".dockerignore no longer contains %q: update this test", tt.old)
			}
			problems := checkDockerignore(strings.Replace(text, tt.old, tt.new, 1), needed)
			for _, p := range problems {
				if strings.HasPrefix(p, tt.want+" ") {
					return
				}
			}
			t.Errorf("problems = %q, want one naming %q", problems, tt.want)
		})
	}
}

// ---- .gitignore ----

// parseGitignore reads .gitignore patterns with the matcher above: a
// pattern with no slash but a trailing one matches at any depth, as git does.
func parseGitignore(text string) []ignorePattern {
	var b strings.Builder
	for line := range strings.Lines(text) {
		t := strings.TrimSpace(line)
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		neg := strings.HasPrefix(t, "!")
		t = strings.TrimPrefix(t, "!")
		if !strings.Contains(strings.TrimSuffix(t, "/"), "/") {
			t = "**/" + t
		}
		if neg {
			t = "!" + t
		}
		b.WriteString(t + "\n")
	}
	return parseDockerignore(b.String())
}

// checkGitignore returns the secrets and outputs that git would not ignore.
func checkGitignore(text string) []string {
	patterns := parseGitignore(text)
	var p []string
	for _, f := range []string{"api-key", "deploy/api-key", "pwrotate", "demo-out/results.csv", "out/summary.json"} {
		if !ignored(patterns, f) {
			p = append(p, fmt.Sprintf("%s is not in .gitignore", f))
		}
	}
	return p
}

func TestGitignore(t *testing.T) {
	data, err := os.ReadFile("../.gitignore")
	if err != nil {
		t.Fatalf("reading .gitignore: %v", err)
	}
	text := string(data)
	for _, p := range checkGitignore(text) {
		t.Error(p)
	}
	tests := []struct {
		name, old, new, want string
	}{
		{"api key kept", "\napi-key\n", "\n", "api-key"},
		{"api key at the root only", "\napi-key\n", "\n/api-key\n", "deploy/api-key"},
		{"exception honoured", "\napi-key\n", "\napi-key\n!deploy/api-key\n", "deploy/api-key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(text, tt.old) {
				t.Fatalf(".gitignore no longer contains %q: update this test", tt.old)
			}
			problems := checkGitignore(strings.Replace(text, tt.old, tt.new, 1))
			for _, p := range problems {
				if strings.HasPrefix(p, tt.want+" ") {
					return
				}
			}
			t.Errorf("problems = %q, want one naming %q", problems, tt.want)
		})
	}
}
