package console

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
)

// ReadProblems reads the results file at path and returns its first max
// records that need a person's attention: status failed or invalid, or
// updated with sessionsReset false. It stops reading once it has max of
// them, so that a results file of millions of rows costs little; the caller
// knows the total from the summary's counts. Columns are found by their
// header names.
func ReadProblems(path string, max int) ([]Problem, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.FieldsPerRecord = -1
	r.ReuseRecord = true
	head, err := r.Read()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	col := map[string]int{}
	for i, h := range head {
		col[h] = i
	}
	for _, need := range []string{"line", "userId", "status", "error"} {
		if _, ok := col[need]; !ok {
			return nil, fmt.Errorf("%s: no %s column", path, need)
		}
	}
	cell := func(rec []string, name string) string {
		if i, ok := col[name]; ok && i < len(rec) {
			return rec[i]
		}
		return ""
	}
	var out []Problem
	for len(out) < max {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return out, fmt.Errorf("%s: %w", path, err)
		}
		p := Problem{Line: cell(rec, "line"), User: cell(rec, "userId"), Status: cell(rec, "status"), Reason: cell(rec, "error")}
		switch {
		case p.Status == "failed" || p.Status == "invalid":
		case p.Status == "updated" && cell(rec, "sessionsReset") == "false":
			p.Status = "session reset failed"
		default:
			continue
		}
		out = append(out, p)
	}
	return out, nil
}
