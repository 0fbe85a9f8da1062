package main

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
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
			got, err := parseUsers(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}
