package report

import (
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// benchRows is the size of the results benchmarks: the 200,000-user run of
// issue 4.
const benchRows = 200_000

// benchResultRows returns n rows as a run records them: updated, one
// attempt, generation 1.
func benchResultRows(n int) []Row {
	at := time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC)
	rows := make([]Row, n)
	for i := range rows {
		rows[i] = Row{
			Line: i + 2, UserID: 1_000_000 + i, Status: Updated, Generation: 1, Attempts: 1,
			HTTPStatus: 200, PasswordSource: "generated", FinishedAt: at.Add(time.Duration(i) * time.Microsecond),
		}
	}
	return rows
}

// BenchmarkResults measures writing results.csv the way a run does:
// "append" opens a new file, appends the rows one at a time with an fsync
// every 256 rows (job's syncEvery) and closes it; "rewrite" is the sort and
// atomic rewrite at the end of a run (RewriteSorted). Both report rows/s.
func BenchmarkResults(b *testing.B) {
	rows := benchResultRows(benchRows)
	// "append" appends from one goroutine; "append-64-workers" as the pool
	// does, from 64 goroutines, one row each at a time.
	for _, workers := range []int{1, 64} {
		name := "append"
		if workers > 1 {
			name += "-" + strconv.Itoa(workers) + "-workers"
		}
		b.Run(name, func(b *testing.B) {
			dir := b.TempDir()
			b.ReportAllocs()
			run := 0
			for b.Loop() {
				run++
				path := filepath.Join(dir, "results-"+strconv.Itoa(run)+".csv")
				f, existing, err := OpenResults(path)
				if err != nil || len(existing) != 0 {
					b.Fatal(err, len(existing))
				}
				var next atomic.Int64
				var wg sync.WaitGroup
				for range workers {
					wg.Go(func() {
						for {
							i := int(next.Add(1) - 1)
							if i >= len(rows) {
								return
							}
							if err := f.Append(rows[i]); err != nil {
								b.Error(err)
								return
							}
							if (i+1)%256 == 0 {
								if err := f.Sync(); err != nil {
									b.Error(err)
									return
								}
							}
						}
					})
				}
				wg.Wait()
				if err := f.Close(); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				_ = os.Remove(path)
				b.StartTimer()
			}
			b.ReportMetric(float64(benchRows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
		})
	}
	b.Run("rewrite", func(b *testing.B) {
		path := filepath.Join(b.TempDir(), "results.csv")
		f, _, err := OpenResults(path)
		if err != nil {
			b.Fatal(err)
		}
		// Outcomes arrive out of order: write them in reverse.
		for i := len(rows) - 1; i >= 0; i-- {
			if err := f.Append(rows[i]); err != nil {
				b.Fatal(err)
			}
		}
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if err := RewriteSorted(path); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(benchRows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
		got, err := ReadResults(path)
		if err != nil || len(got) != benchRows || got[0].Line != 2 || got[benchRows-1].Line != benchRows+1 {
			b.Fatalf("after rewrite: %d rows, err %v", len(got), err)
		}
	})
}
