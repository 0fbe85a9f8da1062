package report

import (
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestSummaryRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), SummaryName)
	start := time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)
	s := Summary{
		Version: "v1.2.3", StartedAt: start, FinishedAt: start.Add(time.Minute),
		Input: "users.csv", InputSHA256: strings.Repeat("ab", 32), Records: 5,
		Counts:     map[string]int{"updated": 3, "failed": 1, "invalid": 1, "pending": 0},
		Generation: 2, APICalls: 9, Retries: 4, AchievedRate: 9.5, ExitCode: 2,
		Interrupted: true, Complete: false, Shard: "1/3", Outputs: []string{"results.csv", "passwords-g0001.age"},
	}
	if err := WriteSummary(path, s); err != nil {
		t.Fatal(err)
	}
	got, err := ReadSummary(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, s) {
		t.Fatalf("got %+v\nwant %+v", got, s)
	}
	data, _ := os.ReadFile(path)
	for _, key := range []string{`"inputSha256"`, `"achievedRate": 9.5`, `"shard": "1/3"`, "\n  \"version\""} {
		if !strings.Contains(string(data), key) {
			t.Errorf("summary lacks %s:\n%s", key, data)
		}
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", st.Mode().Perm())
	}
	assertNoTemp(t, filepath.Dir(path))
}

func TestSummaryDefaults(t *testing.T) {
	path := filepath.Join(t.TempDir(), SummaryName)
	if err := WriteSummary(path, Summary{AchievedRate: math.NaN()}); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	for _, want := range []string{`"counts": {}`, `"outputs": []`, `"achievedRate": 0`} {
		if !strings.Contains(string(data), want) {
			t.Errorf("summary lacks %s:\n%s", want, data)
		}
	}
	if strings.Contains(string(data), `"shard"`) {
		t.Errorf("empty shard must be omitted")
	}
	if _, err := ReadSummary(filepath.Join(t.TempDir(), "none.json")); err == nil {
		t.Fatal("missing summary read")
	}
	bad := writeTemp(t, t.TempDir(), "bad.json", "{")
	if _, err := ReadSummary(bad); err == nil || !strings.Contains(err.Error(), bad) {
		t.Fatalf("bad json: %v", err)
	}
}
