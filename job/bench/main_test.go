package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"pwrotate/rotate"
	"pwrotate/rotate/ecgridsim"
)

func TestMaxInWindow(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms ...int) []time.Time {
		out := make([]time.Time, len(ms))
		for i, m := range ms {
			out[i] = t0.Add(time.Duration(m) * time.Millisecond)
		}
		return out
	}
	tests := []struct {
		name    string
		times   []time.Time
		want    int
		wantAtM int
	}{
		{"empty", nil, 0, 0},
		{"one", at(5), 1, 5},
		{"window is half-open", at(0, 1000), 1, 0},
		{"just inside", at(0, 999), 2, 0},
		{"cluster later", at(0, 1500, 1600, 2400, 2499), 4, 1500},
		{"unsorted input", at(2499, 0, 1600, 1500, 2400), 4, 1500},
		{"ties keep the first", at(0, 10, 2000, 2010), 2, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, gotAt := maxInWindow(tt.times, time.Second)
			if got != tt.want {
				t.Fatalf("max = %d, want %d", got, tt.want)
			}
			if tt.want > 0 && !gotAt.Equal(t0.Add(time.Duration(tt.wantAtM)*time.Millisecond)) {
				t.Fatalf("window at %v, want +%dms", gotAt.Sub(t0), tt.wantAtM)
			}
		})
	}
}

func TestAchievedRate(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	even := make([]time.Time, 301) // 300 intervals of 1/300 s
	for i := range even {
		even[i] = t0.Add(time.Duration(i) * time.Second / 300)
	}
	tests := []struct {
		name  string
		times []time.Time
		want  float64
	}{
		{"none", nil, 0},
		{"one", even[:1], 0},
		{"same instant", []time.Time{t0, t0}, 0},
		{"300 per second", even, 300},
		{"two a second", []time.Time{t0.Add(time.Second), t0, t0.Add(500 * time.Millisecond)}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := achievedRate(tt.times); got < tt.want-0.01 || got > tt.want+0.01 {
				t.Fatalf("rate = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseWrk(t *testing.T) {
	tests := []struct {
		file    string
		want    wrkResult
		wantErr bool
	}{
		{"wrk-ok.txt", wrkResult{rps: 16130.42, requests: 161594}, false},
		{"wrk-errors.txt", wrkResult{rps: 812.5, requests: 8133, non2xx: 8133, socketErrors: 7}, false},
		{"wrk-broken.txt", wrkResult{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			got, err := parseWrk(string(b))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if !tt.wantErr && got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseUsers(t *testing.T) {
	tests := []struct {
		in      string
		want    []int
		wantErr bool
	}{
		{"20000,200000", []int{20000, 200000}, false},
		{" 5 , 7 ,", []int{5, 7}, false},
		{"", nil, true},
		{"10,x", nil, true},
		{"0", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseCounts("--users", tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseFlagsFloor(t *testing.T) {
	tests := []struct {
		name      string
		args      []string
		wantSkip  bool
		wantReqs  int
		wantError bool
	}{
		{"defaults", nil, false, floorDefault, false},
		{"skip", []string{"--skip-floor"}, true, floorDefault, false},
		{"requests", []string{"--floor-requests", "200000"}, false, 200000, false},
		{"zero requests", []string{"--floor-requests", "0"}, false, 0, true},
		{"too many", []string{"--floor-requests", "10000001"}, false, 0, true},
		{"not a number", []string{"--floor-requests", "x"}, false, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseFlags(tt.args, io.Discard)
			if (err != nil) != tt.wantError {
				t.Fatalf("err = %v, want error %v", err, tt.wantError)
			}
			if tt.wantError {
				return
			}
			if got.skipFloor != tt.wantSkip || got.floorReqs != tt.wantReqs {
				t.Fatalf("skipFloor %v floorReqs %d, want %v %d", got.skipFloor, got.floorReqs, tt.wantSkip, tt.wantReqs)
			}
		})
	}
}

func TestParseFloorFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		want    floorOptions
		wantErr bool
	}{
		{"all", []string{"--url", "http://127.0.0.1:1", "--requests", "5", "--workers", "2", "--first-id", "7"},
			floorOptions{url: "http://127.0.0.1:1", requests: 5, workers: 2, firstID: 7}, false},
		{"defaults", []string{"--url", "http://x"},
			floorOptions{url: "http://x", requests: floorDefault, workers: benchWorkers, firstID: firstUserID}, false},
		{"no url", []string{"--requests", "5"}, floorOptions{}, true},
		{"zero requests", []string{"--url", "http://x", "--requests", "0"}, floorOptions{}, true},
		{"zero workers", []string{"--url", "http://x", "--workers", "0"}, floorOptions{}, true},
		{"bad first id", []string{"--url", "http://x", "--first-id", "0"}, floorOptions{}, true},
		{"extra argument", []string{"--url", "http://x", "more"}, floorOptions{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseFloorFlags(tt.args, io.Discard)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if !tt.wantErr && got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseFloorLine(t *testing.T) {
	tests := []struct {
		name    string
		out     string
		wantN   int
		wantD   time.Duration
		wantErr bool
	}{
		{"formatted", formatFloorLine(100000, 12345678*time.Microsecond), 100000, 12345678 * time.Microsecond, false},
		{"after other output", "warming up\nfloor: requests=5 elapsed=1.5s\n", 5, 1500 * time.Millisecond, false},
		{"last line wins", "floor: requests=1 elapsed=1s\nfloor: requests=2 elapsed=2s\n", 2, 2 * time.Second, false},
		{"unknown field ignored", "floor: requests=3 elapsed=3ms extra=1", 3, 3 * time.Millisecond, false},
		{"empty", "", 0, 0, true},
		{"no floor line", "requests=5 elapsed=1s\n", 0, 0, true},
		{"missing elapsed", "floor: requests=5\n", 0, 0, true},
		{"missing requests", "floor: elapsed=1s\n", 0, 0, true},
		{"bad requests", "floor: requests=x elapsed=1s\n", 0, 0, true},
		{"negative requests", "floor: requests=-1 elapsed=1s\n", 0, 0, true},
		{"bad elapsed", "floor: requests=5 elapsed=soon\n", 0, 0, true},
		{"zero elapsed", "floor: requests=5 elapsed=0s\n", 0, 0, true},
		{"field without =", "floor: requests=5 elapsed=1s junk\n", 0, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, d, err := parseFloorLine(tt.out)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if !tt.wantErr && (n != tt.wantN || d != tt.wantD) {
				t.Fatalf("got %d %v, want %d %v", n, d, tt.wantN, tt.wantD)
			}
		})
	}
}

func TestOverFloor(t *testing.T) {
	floor := floorRun{requests: 100_000, elapsed: 10 * time.Second, cpu: 5 * time.Second} // 10000/s, 0.5 s per 10k
	tests := []struct {
		name      string
		cpu, rate float64
		fl        floorRun
		want      []string
	}{
		{"above the floor", 0.98, 4000, floor, []string{
			"over the floor:    job CPU over the floor: 0.480 s per 10k users (job 0.980, net/http floor 0.500)",
			"rate vs floor:     apply phase at 0.40x the floor's rate (4000/s vs 10000/s)",
		}},
		{"below the floor", 0.4, 12000, floor, []string{
			"over the floor:    job CPU over the floor: -0.100 s per 10k users (job 0.400, net/http floor 0.500)",
			"rate vs floor:     apply phase at 1.20x the floor's rate (12000/s vs 10000/s)",
		}},
		{"floor without time", 1, 1000, floorRun{requests: 10_000, cpu: time.Second}, []string{
			"over the floor:    job CPU over the floor: 0.000 s per 10k users (job 1.000, net/http floor 1.000)",
			"rate vs floor:     not measured",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := overFloor(tt.cpu, tt.rate, tt.fl); !slices.Equal(got, tt.want) {
				t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestFloorBody(t *testing.T) {
	tests := []struct {
		id int
	}{{1}, {1_000_000}, {1_234_567}}
	for _, tt := range tests {
		t.Run(strconv.Itoa(tt.id), func(t *testing.T) {
			var got struct {
				UserID      int    `json:"userId"`
				NewPassword string `json:"newPassword"`
			}
			b := floorBody([]byte("stale"), tt.id)[len("stale"):]
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatalf("body %s: %v", b, err)
			}
			if got.UserID != tt.id || !strings.Contains(got.NewPassword, strconv.Itoa(tt.id)) {
				t.Fatalf("body %s: wrong user or password", b)
			}
		})
	}
}

// TestSendFloor runs the floor's client against the simulator: every
// request is a valid password change, and a wrong key stops it.
func TestSendFloor(t *testing.T) {
	const key = "bench-test-key-0123456789abcdef"
	tests := []struct {
		name    string
		key     string
		n       int
		wantErr bool
	}{
		{"changes every user", key, 300, false},
		{"wrong key", "bench-wrong-key-0123456789abcdef", 50, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim := ecgridsim.New()
			sim.SetAutoCreate(true)
			sim.AddKey(key, callerID, "NetworkAdmin")
			url, srv, err := sim.ListenLoopback()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { srv.Close() })
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			hc := &http.Client{Transport: rotate.NewTransport(8)}
			o := floorOptions{url: url, requests: tt.n, workers: 8, firstID: firstUserID}
			d, err := sendFloor(ctx, hc, o, tt.key)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), tt.key) {
				t.Fatal("the error holds the key")
			}
			if tt.wantErr {
				return
			}
			if d <= 0 {
				t.Fatalf("elapsed %v", d)
			}
			if got := sim.Count("password"); got != tt.n {
				t.Fatalf("simulator saw %d password calls, want %d", got, tt.n)
			}
			for _, id := range []int{firstUserID, firstUserID + tt.n - 1} {
				pw, ok := sim.Password(id)
				if !ok || string(floorBody(nil, id)) != `{"userId":`+strconv.Itoa(id)+`,"newPassword":"`+pw+`"}` {
					t.Fatalf("user %d: password not set as sent", id)
				}
			}
			if pw, _ := sim.Password(firstUserID + tt.n); pw != "" {
				t.Fatalf("user %d changed: more requests than asked", firstUserID+tt.n)
			}
		})
	}
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{
		{[]float64{0.8}, 0.8},
		{[]float64{0.9, 0.7}, 0.8},
		{[]float64{0.9, 0.7, 0.75}, 0.75},
		{[]float64{3, 1, 4, 2}, 2.5},
	} {
		if got := median(slices.Clone(tc.in)); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestParseFlagsRepeat(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want int
		ok   bool
	}{
		{nil, 3, true},
		{[]string{"--repeat", "1"}, 1, true},
		{[]string{"--repeat", "0"}, 0, false},
		{[]string{"--repeat", "100"}, 0, false},
	} {
		opt, err := parseFlags(tc.args, io.Discard)
		if (err == nil) != tc.ok || tc.ok && opt.repeat != tc.want {
			t.Errorf("parseFlags(%q) = repeat %d, error %v; want %d, ok %v", tc.args, opt.repeat, err, tc.want, tc.ok)
		}
	}
}

func TestParseFlagsGroups(t *testing.T) {
	tests := []struct {
		name          string
		args          []string
		groups, users int
		ok            bool
	}{
		{"off by default", nil, 0, 20000, true},
		{"1000 groups", []string{"--groups", "1000"}, 1000, 20000, true},
		{"users set", []string{"--groups", "10", "--group-users", "500"}, 10, 500, true},
		{"fewer users than groups", []string{"--groups", "1000", "--group-users", "999"}, 0, 0, false},
		{"negative", []string{"--groups", "-1"}, 0, 0, false},
		{"too many", []string{"--groups", "100001"}, 0, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseFlags(tt.args, io.Discard)
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v, want ok %v", err, tt.ok)
			}
			if tt.ok && (got.groups != tt.groups || got.groupUsers != tt.users) {
				t.Fatalf("groups %d users %d, want %d %d", got.groups, got.groupUsers, tt.groups, tt.users)
			}
		})
	}
}

func TestWriteGroupFiles(t *testing.T) {
	dir := t.TempDir()
	input, mapFile := filepath.Join(dir, "in.csv"), filepath.Join(dir, "map.csv")
	if err := writeGroupFiles(input, mapFile, 10, 3); err != nil {
		t.Fatal(err)
	}
	in, _ := os.ReadFile(input)
	lines := strings.Split(strings.TrimSpace(string(in)), "\n")
	if len(lines) != 11 || lines[0] != "userId,networkId" {
		t.Fatalf("input: %q", lines)
	}
	networks := map[string]int{}
	for _, l := range lines[1:] {
		networks[strings.Split(l, ",")[1]]++
	}
	if len(networks) != 3 {
		t.Errorf("users in %d networks, want 3: %v", len(networks), networks)
	}
	m, _ := os.ReadFile(mapFile)
	rows := strings.Split(strings.TrimSpace(string(m)), "\n")
	if len(rows) != 4 || rows[0] != "networkId,recipient" || !strings.HasPrefix(strings.Split(rows[1], ",")[1], "age1") {
		t.Fatalf("map: %q", rows)
	}
}

func TestSealingTime(t *testing.T) {
	dir := t.TempDir()
	noSealed := filepath.Join(dir, "no-sealed.json")
	if err := os.WriteFile(noSealed, []byte(`{"time":"2026-12-06T22:04:50Z","msg":"plan"}`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path string
		want       time.Duration
	}{
		{"plan to first sealed", filepath.Join("testdata", "run-log.json"), 351373943 * time.Nanosecond},
		{"no sealed record", noSealed, 0},
		{"no log", filepath.Join(dir, "missing.json"), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := sealingTime(tc.path); got != tc.want {
				t.Fatalf("sealingTime = %v, want %v", got, tc.want)
			}
		})
	}
}
