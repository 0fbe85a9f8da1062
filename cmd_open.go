package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

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
		return report.ExitFatal
	}
	paths, err := parseArgs(fs, args, false)
	if errors.Is(err, flag.ErrHelp) {
		writeHelp(stdout, "open")
		return report.ExitOK
	}
	if err != nil {
		return fail(err)
	}
	if len(*identities) == 0 {
		return fail(withHint(errors.New("--identity: an age identity or SSH private key is needed to open sealed passwords"), hintIdentity))
	}
	if len(paths) == 0 {
		return fail(withHint(errors.New("give an output folder or .age files"), hintOpenTarget))
	}
	ids, err := report.ParseIdentities(*identities)
	if err != nil {
		return fail(err)
	}
	if apiKeys := fs.Lookup("api-keys").Value.(flag.Getter).Get().(bool); apiKeys {
		if *all {
			return fail(errors.New("--api-keys prints each user's live key: drop --all"))
		}
		opened, err := report.OpenAPIKeysVouched(paths, ids)
		if err == nil {
			err = report.WriteAPIKeysCSV(stdout, opened.Keys)
		}
		if err != nil {
			return fail(err)
		}
		warnUnvouched(stderr, opened)
		return report.ExitOK
	}
	opened, err := report.OpenSealed(paths, ids, *all)
	if err != nil {
		return fail(err)
	}
	if err := report.WriteOpenCSV(stdout, opened.Rows); err != nil {
		return fail(err)
	}
	if n := len(opened.NotOpened); n > 0 {
		fmt.Fprintf(stderr, "pwrotate open: %d of %d sealed files are sealed to other recipients (other groups' files) and were not opened; the passwords printed are those of the %d files these identities open.\n",
			n, n+opened.Files, opened.Files)
	}
	return report.ExitOK
}

// warnUnvouched says on stderr which sealed key batches no key log vouches
// for, and which users' keys come from them, and which batches were
// altered after the log vouched for them.
func warnUnvouched(stderr io.Writer, o report.OpenedAPIKeys) {
	if len(o.Altered) > 0 {
		fmt.Fprintf(stderr, "pwrotate open: warning: %d sealed key batches are not what the key log (%s) of their folder vouched for (altered since they were written): %s; their keys are not printed.\n",
			len(o.Altered), report.KeyLogName, strings.Join(o.Altered, ", "))
	}
	if len(o.Unvouched) == 0 {
		return
	}
	files := slices.Compact(slices.Sorted(slices.Values(o.Unvouched)))
	fmt.Fprintf(stderr, "pwrotate open: warning: %d sealed key batches are not vouched for by the key log (%s) of their folder: %s; "+
		"whoever could write the folder may have planted them (age does not say who sealed a file), or an older pwrotate or a killed run wrote them. ",
		len(files), report.KeyLogName, strings.Join(files, ", "))
	if len(o.FromUnvouched) == 0 {
		fmt.Fprintln(stderr, "Every key printed comes from a vouched batch.")
		return
	}
	users := make([]string, 0, min(len(o.FromUnvouched), 20))
	for _, id := range o.FromUnvouched[:cap(users)] {
		users = append(users, strconv.Itoa(id))
	}
	more := ""
	if n := len(o.FromUnvouched) - len(users); n > 0 {
		more = fmt.Sprintf(" and %d more", n)
	}
	fmt.Fprintf(stderr, "The keys of %d users come from them, no vouched batch holding one: %s%s.\n", len(o.FromUnvouched), strings.Join(users, ", "), more)
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
