package main

import (
	"io"
	"strings"
	"testing"
)

// TestRunConfig checks the flags of 'run' without any I/O: every refusal
// names its flag, and the values that shape the run come through.
func TestRunConfig(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	none := env(nil)
	tests := []struct {
		name    string
		args    []string
		getenv  func(string) string
		wantErr string
		check   func(t *testing.T, rate float64, out string, shard, shards int)
	}{
		{name: "input required", args: nil, wantErr: "--input: a users CSV is required"},
		{name: "apply needs out", args: []string{"--input", "u.csv", "--apply"}, wantErr: "--out: an output folder is required"},
		{name: "resume needs apply", args: []string{"--input", "u.csv", "--resume"}, wantErr: "--resume goes with --apply"},
		{name: "select or input", args: []string{"--input", "u.csv", "--select", "network=1"}, wantErr: "--select and --input"},
		{name: "demo drops input", args: []string{"--demo", "--input", "u.csv"}, wantErr: "--demo uses the bundled example input"},
		{name: "workers", args: []string{"--input", "u.csv", "--workers", "0"}, wantErr: "--workers 0"},
		{name: "max-users", args: []string{"--input", "u.csv", "--max-users", "-1"}, wantErr: "--max-users -1"},
		{name: "rate", args: []string{"--input", "u.csv", "--rate", "-1"}, wantErr: "--rate -1"},
		{name: "reason", args: []string{"--input", "u.csv", "--reason", "a\tb"}, wantErr: "--reason: character U+0009"},
		{name: "select with shards", args: []string{"--select", "network=1", "--shards", "2"}, getenv: env(map[string]string{"JOB_COMPLETION_INDEX": "0"}), wantErr: "--select with --shard/--shards"},
		{name: "shards without index", args: []string{"--input", "u.csv", "--shards", "3"}, wantErr: "give --shard K/N or set JOB_COMPLETION_INDEX"},
		{name: "bad password shape", args: []string{"--input", "u.csv", "--length", "4"}, wantErr: "length"},
		{name: "pushgateway credentials over http", args: []string{"--input", "u.csv", "--pushgateway", "http://u:p@pgw.example:9091"}, wantErr: "pushgateway"},
		{name: "older-than without deliver", args: []string{"--input", "u.csv", "--older-than", "90d"}, wantErr: "--older-than goes with --deliver"},
		{name: "kubeconfig without deliver", args: []string{"--input", "u.csv", "--kubeconfig", "k"}, wantErr: "--kubeconfig goes with --deliver"},
		{name: "kube-context without deliver", args: []string{"--input", "u.csv", "--kube-context", "c"}, wantErr: "--kube-context goes with --deliver"},
		{name: "bad older-than", args: []string{"--input", "u.csv", "--deliver", "d.csv", "--older-than", "3 months"}, wantErr: `--older-than "3 months": want whole days`},
		{name: "older-than zero", args: []string{"--input", "u.csv", "--deliver", "d.csv", "--older-than", "0s"}, wantErr: "--older-than"},
		{
			name: "shard from the Indexed Job", args: []string{"--input", "u.csv", "--apply", "--out", "o", "--shards", "4", "--rate", "20"},
			getenv: env(map[string]string{"JOB_COMPLETION_INDEX": "3"}),
			check: func(t *testing.T, rate float64, out string, shard, shards int) {
				if rate != 5 || out != "o/shard-3" || shard != 3 || shards != 4 {
					t.Errorf("rate %v, out %q, shard %d/%d; want 5, o/shard-3, 3/4", rate, out, shard, shards)
				}
			},
		},
		{
			name: "plain", args: []string{"--input", "u.csv", "--rate", "7"},
			check: func(t *testing.T, rate float64, out string, shard, shards int) {
				if rate != 7 || out != "" || shards != 0 {
					t.Errorf("rate %v, out %q, shards %d; want 7, none, 0", rate, out, shards)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs, f := newRunFlags(io.Discard)
			if _, err := parseArgs(fs, tt.args, false); err != nil {
				t.Fatal(err)
			}
			getenv := tt.getenv
			if getenv == nil {
				getenv = none
			}
			cfg, rate, err := f.config(getenv)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one saying %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, rate, cfg.Out, cfg.Shard, cfg.Shards)
		})
	}
}
