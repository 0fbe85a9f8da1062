package main

import (
	"errors"
	"flag"
	"io"
	"os"

	"pwrotate/job"
	"pwrotate/report"
	"pwrotate/report/console"
)

// cmdOpen is 'pwrotate open': it prints the sealed passwords as CSV.
func cmdOpen(args []string, stdout, stderr io.Writer) int {
	fs, identities, all := newOpenFlags()
	stderrFile, _ := stderr.(*os.File)
	human := stderrFile != nil && console.IsTerminal(stderrFile)
	fail := func(err error) int {
		startError(stderr, human, "open", err, "")
		return job.ExitFatal
	}
	paths, err := parseArgs(fs, args, false)
	if errors.Is(err, flag.ErrHelp) {
		writeHelp(stdout, "open")
		return job.ExitOK
	}
	if err != nil {
		return fail(err)
	}
	if len(*identities) == 0 {
		return fail(errors.New("--identity: an age identity or SSH private key is needed to open sealed passwords"))
	}
	if len(paths) == 0 {
		return fail(errors.New("give an output folder or .age files"))
	}
	ids, err := report.ParseIdentities(*identities)
	if err != nil {
		return fail(err)
	}
	if apiKeys := fs.Lookup("api-keys").Value.(flag.Getter).Get().(bool); apiKeys {
		if *all {
			return fail(errors.New("--api-keys prints each user's live key: drop --all"))
		}
		keys, err := report.OpenAPIKeys(paths, ids)
		if err == nil {
			err = report.WriteAPIKeysCSV(stdout, keys)
		}
		if err != nil {
			return fail(err)
		}
		return job.ExitOK
	}
	rows, err := report.Open(paths, ids, *all)
	if err != nil {
		return fail(err)
	}
	if err := report.WriteOpenCSV(stdout, rows); err != nil {
		return fail(err)
	}
	return job.ExitOK
}

// newOpenFlags defines the flags of 'pwrotate open'; its help is helpOpen.
func newOpenFlags() (fs *flag.FlagSet, identities *listFlag, all *bool) {
	fs = flag.NewFlagSet("pwrotate open", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	identities = &listFlag{}
	fs.Var(identities, "identity", "age identity file or unencrypted SSH private key, repeatable (also -i)")
	fs.Var(identities, "i", "short for --identity")
	all = fs.Bool("all", false, "print every sealed row, not only the live or candidate passwords")
	fs.Bool("api-keys", false, "print the sealed API keys (userId,apiKey: each user's live key), not the passwords")
	return fs, identities, all
}
