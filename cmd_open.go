package main

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"pwrotate/job"
	"pwrotate/report"
)

// cmdOpen is 'pwrotate open': it prints the sealed passwords as CSV.
func cmdOpen(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("pwrotate open", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var identities listFlag
	var all, apiKeys bool
	fs.Var(&identities, "identity", "age identity file or unencrypted SSH private key, repeatable (also -i)")
	fs.Var(&identities, "i", "short for --identity")
	fs.BoolVar(&all, "all", false, "print every sealed row, not only the live or candidate passwords")
	fs.BoolVar(&apiKeys, "api-keys", false, "print the sealed API keys (userId,apiKey: each user's live key), not the passwords")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: pwrotate open [--identity FILE]... [--all | --api-keys] PATH...\n  PATH: an output folder or .age files\n")
		fs.PrintDefaults()
	}
	paths, err := parseArgs(fs, args, false)
	if errors.Is(err, flag.ErrHelp) {
		return job.ExitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "pwrotate open: %v\n", err)
		return job.ExitFatal
	}
	if len(identities) == 0 {
		fmt.Fprintln(stderr, "pwrotate open: --identity: an age identity or SSH private key is needed to open sealed passwords")
		return job.ExitFatal
	}
	if len(paths) == 0 {
		fmt.Fprintln(stderr, "pwrotate open: give an output folder or .age files")
		return job.ExitFatal
	}
	ids, err := report.ParseIdentities(identities)
	if err != nil {
		fmt.Fprintf(stderr, "pwrotate open: %v\n", err)
		return job.ExitFatal
	}
	if apiKeys {
		if all {
			fmt.Fprintln(stderr, "pwrotate open: --api-keys prints each user's live key: drop --all")
			return job.ExitFatal
		}
		keys, err := report.OpenAPIKeys(paths, ids)
		if err == nil {
			err = report.WriteAPIKeysCSV(stdout, keys)
		}
		if err != nil {
			fmt.Fprintf(stderr, "pwrotate open: %v\n", err)
			return job.ExitFatal
		}
		return job.ExitOK
	}
	rows, err := report.Open(paths, ids, all)
	if err != nil {
		fmt.Fprintf(stderr, "pwrotate open: %v\n", err)
		return job.ExitFatal
	}
	if err := report.WriteOpenCSV(stdout, rows); err != nil {
		fmt.Fprintf(stderr, "pwrotate open: %v\n", err)
		return job.ExitFatal
	}
	return job.ExitOK
}
