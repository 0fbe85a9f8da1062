package job_test

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"filippo.io/age"

	"pwrotate/job"
	"pwrotate/report"
	"pwrotate/rotate"
	"pwrotate/rotate/ecgridsim"
)

// benchUsers is the size of the in-process apply benchmark.
const benchUsers = 20_000

// benchInput returns a users CSV of n consecutive IDs from firstUser.
func benchInput(n int) []byte {
	b := make([]byte, 0, 8+n*9)
	b = append(b, "userId\n"...)
	for i := range n {
		b = strconv.AppendInt(b, int64(firstUser+i), 10)
		b = append(b, '\n')
	}
	return b
}

// BenchmarkApply runs a whole --apply run in process (read, plan, seal,
// pool, results, summary) against the simulator on an httptest server with
// no rate limit and 64 workers, as `go run ./job/bench` does with a child
// process. It exists to be profiled:
//
//	go test -run '^$' -bench Apply -cpuprofile cpu.out -memprofile mem.out ./job/
//
// The profile holds the simulator's side too (ecgridsim, net/http server).
func BenchmarkApply(b *testing.B) {
	sim := ecgridsim.New()
	sim.SetAutoCreate(true)
	sim.SetCallLimit(0)
	sim.AddKey(testKey, callerID, "NetworkAdmin")
	srv := httptest.NewServer(sim)
	defer srv.Close()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		b.Fatal(err)
	}
	gen, err := rotate.NewGenerator(rotate.DefaultShape())
	if err != nil {
		b.Fatal(err)
	}
	client, err := rotate.New(rotate.Config{
		BaseURL: srv.URL, APIKey: testKey, Workers: 64, Timeout: 10 * time.Second,
		Pacer: rotate.NewLimiter(0, 1),
	})
	if err != nil {
		b.Fatal(err)
	}
	input := benchInput(benchUsers)
	dir := b.TempDir()
	b.ReportAllocs()
	run := 0
	for b.Loop() {
		run++
		out := filepath.Join(dir, "out-"+strconv.Itoa(run))
		r := job.New(job.Config{
			InputData: input, InputName: "bench.csv", Apply: true, Out: out,
			Recipients: []age.Recipient{id.Recipient()}, Client: client,
			Endpoint: srv.URL, Generator: gen, Workers: 64, Version: "bench",
			Logger: slog.New(slog.DiscardHandler),
		})
		sum, err := r.Run(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		if got := sum.Counts[string(report.Updated)]; got != benchUsers {
			b.Fatalf("%d of %d users updated", got, benchUsers)
		}
	}
	b.ReportMetric(float64(benchUsers)*float64(b.N)/b.Elapsed().Seconds(), "users/s")
}
