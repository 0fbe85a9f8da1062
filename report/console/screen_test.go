package console

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestHumanHandlerNoGoSyntax(t *testing.T) {
	tests := []struct {
		name  string
		log   func(l *slog.Logger)
		want  string
		empty bool
	}{
		{"map and slice", func(l *slog.Logger) {
			l.Warn("odd", "counts", map[string]int{"updated": 2, "failed": 1}, "outputs", []string{"a.csv", "b.json"})
		}, "pwrotate: warning: odd (counts failed 1, updated 2, outputs a.csv, b.json)\n", false},
		{"error level", func(l *slog.Logger) { l.Error("boom", "err", os.ErrNotExist) }, "pwrotate: error: boom (err file does not exist)\n", false},
		{"record failed", func(l *slog.Logger) {
			l.Warn("record failed", "line", 4, "user", 1003, "attempts", 1, "reason", "HTTP 404")
		}, "  failed:    line 4, user 1003: HTTP 404 (1 attempt)\n", false},
		{"plan is printed elsewhere", func(l *slog.Logger) { l.Info("plan", "records", 3) }, "", true},
		{"debug hidden at info", func(l *slog.Logger) { l.Debug("retrying ECGrid call") }, "", true},
		{"group", func(l *slog.Logger) { l.WithGroup("g").Info("x", "k", time.Second) }, "  x (g.k 1s)\n", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			tc.log(slog.New(NewHumanHandler(&b, slog.LevelInfo)))
			if b.String() != tc.want {
				t.Errorf("got %q, want %q", b.String(), tc.want)
			}
		})
	}
}

func TestWriteSummary(t *testing.T) {
	tests := []struct {
		name string
		f    Final
		want []string
		not  []string
	}{
		{"interrupted", Final{ExitCode: 3, Interrupted: true, Counts: map[string]int{"updated": 3, "pending": 7},
			Next: []NextStep{{What: "Finish the run:", Command: "pwrotate run --resume"}}},
			[]string{"Interrupted (run)", "pending:   7  no outcome yet", "exit code: 3, interrupted", "    pwrotate run --resume"}, nil},
		{"dry run lists in the plan", Final{DryRun: true, ExitCode: 2, Counts: map[string]int{"planned": 5, "invalid": 12}, ProblemsTotal: 12},
			[]string{"12 records need attention: the plan above lists them", "exit code: 2, some input records are invalid"}, []string{"updated"}},
		{"more in results", Final{ExitCode: 2, Counts: map[string]int{"failed": 12},
			Problems: []Problem{{Line: "2", User: "'-4", Status: "invalid", Reason: "bad\nid"}}, ProblemsTotal: 12, ProblemsIn: "out/results.csv"},
			[]string{"user -4 ", "invalid: bad id", "… and 11 more in out/results.csv"}, []string{"'-4"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			WriteSummary(&b, tc.f)
			for _, w := range tc.want {
				if !strings.Contains(b.String(), w) {
					t.Errorf("no %q in:\n%s", w, b.String())
				}
			}
			for _, w := range append(tc.not, "map[", "[]") {
				if strings.Contains(b.String(), w) {
					t.Errorf("%q in:\n%s", w, b.String())
				}
			}
		})
	}
}

func TestReadProblemsStopsAtMax(t *testing.T) {
	var in strings.Builder
	in.WriteString("line,userId,status,generation,attempts,httpStatus,errorCode,error,passwordSource,sessionsReset,finishedAt\n")
	in.WriteString("2,1000,updated,1,1,200,,,generated,,\n")
	in.WriteString("3,1001,updated,1,1,200,,reset: HTTP 500,generated,false,\n")
	for i := 0; i < 30; i++ {
		in.WriteString("4,1002,failed,1,5,500,InternalError,HTTP 500,generated,,\n")
	}
	path := filepath.Join(t.TempDir(), "results.csv")
	if err := os.WriteFile(path, []byte(in.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := ReadProblems(path, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 10 || got[0].Status != "session reset failed" || got[1].Status != "failed" {
		t.Errorf("got %+v", got)
	}
}
