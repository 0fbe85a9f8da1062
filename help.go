package main

import (
	"fmt"
	"io"
	"strings"

	"pwrotate/report/console"
)

// The help texts are written by hand for a person (issue 14): flags as
// --flag, grouped, each with its default and its PWROTATE_<NAME> variable,
// and examples to copy. TestHelpListsEveryFlag keeps them in step with the
// flags defined on each FlagSet.

// helpFlag is one flag in a help text. def is the default as a person reads
// it ("" for none); for a flag with a default it must equal the FlagSet's
// DefValue, except "off" for a bool's "false".
type helpFlag struct {
	name, arg, desc, def string
}

// helpGroup is a titled group of flags.
type helpGroup struct {
	title string
	flags []helpFlag
}

// helpPage is the help of one command.
type helpPage struct {
	usage    string // "pwrotate run [flags]"
	intro    string
	groups   []helpGroup
	env      bool // the flags read PWROTATE_<NAME>
	examples string
}

// The connection flags every command that talks to ECGrid shares (connFlags).
var (
	helpConnKey = []helpFlag{
		{"base-url", "URL", "API root; https only, except loopback hosts", "https://rest.ecgrid.io"},
		{"api-key-file", "FILE", "read the API key from FILE (a Kubernetes Secret volume); without it, the key is read from ECGRID_API_KEY. There is no --api-key: a key on the command line leaks into process lists and shell history", ""},
		{"timeout", "D", "time allowed for one HTTP call", "30s"},
		{"max-attempts", "N", "attempts per call, the first included (429, 5xx, timeouts and transport errors are retried)", "5"},
	}
	helpPacingRate = []helpFlag{
		{"rate", "N", "API calls per second, every call counted (retries, resets, the preflight); 0 = unlimited", "10"},
		{"burst", "N", "calls that may go out at once after a pause", "1"},
	}
	helpLogging = []helpFlag{
		{"log-format", "F", "auto (readable screens on a terminal, JSON otherwise), text (key=value lines), json", "auto"},
		{"log-level", "L", "debug (shows each retry), info, warn, error", "info"},
	}
)

var helpRun = helpPage{
	usage: "pwrotate run [flags]",
	intro: `Plans a rotation of ECGrid user passwords; with --apply, carries it out.
Without --apply nothing is changed: the input is checked, the key is checked
(if one is given), and the plan is printed.`,
	env: true,
	groups: []helpGroup{
		{"Input and selection", []helpFlag{
			{"input", "FILE", "users CSV with a userId column (optional newPassword); - reads stdin. Required, except with --select or --demo", ""},
			{"select", "FILTER", "list the users from ECGrid instead of --input: [network=N][,mailbox=M][,auth-level=L][,status=S|any] (without network=, every network the key sees); the list is kept in OUT/input.csv", ""},
			{"protect", "FILE", "never rotate these accounts: one user ID or login glob (svc-*) a line, # comments; repeatable", ""},
			{"demo", "", "use the built-in ECGrid simulator on loopback and a bundled example input; no key needed, nothing real is touched", "off"},
		}},
		{"What a run changes", []helpFlag{
			{"apply", "", "change the passwords; without it the run is a dry run (a plan)", "off"},
			{"resume", "", "continue the unfinished run in --out (after Ctrl-C, a kill or a crash); a fresh run if --out is empty", "off"},
			{"reset-sessions", "", "after each change, also end the user's sessions", "off"},
			{"rotate-api-keys", "", "after each change (and reset), also give the user a new API key, sealed in OUT/apikeys-*.age; never the caller's. Every integration using those keys needs its new key (open --api-keys)", "off"},
			{"reason", "TEXT", "incident or change ticket, at most 200 characters; recorded in run.json, summary.json and the log", ""},
		}},
		{"Sealing and output", []helpFlag{
			{"out", "DIR", "output folder (0700; files 0600): results.csv, summary.json, sealed passwords. Required with --apply", ""},
			{"recipient", "R", "age recipient the passwords are sealed to (age1…, age1pq1…, ssh-ed25519 …, ssh-rsa …); repeatable. At least one with --apply", ""},
			{"recipients-file", "FILE", "recipients, one a line, # comments; repeatable", ""},
			{"recipients-map", "FILE", "seal each network's passwords to that network's own admins: CSV networkId,recipient (or mailboxId,recipient), one age recipient a row, several rows a group. Each group's users go in their own files (passwords-gNNNN-network-N.age), sealed to its rows and to every --recipient; users of a group the map leaves out, to the --recipient keys alone. The input needs the map's column (pwrotate users writes it; --select has it); repeatable", ""},
		}},
		{"Generated passwords", []helpFlag{
			{"length", "N", "length of a generated password", "24"},
			{"digits", "N", "digits in a generated password", "4"},
			{"symbols", "N", "symbols in a generated password", "4"},
			{"symbol-set", "S", "symbols to draw from (ASCII only)", "!#%*.:?^_~"},
		}},
		{"Connection and key", helpConnKey},
		{"Pacing", append(append([]helpFlag(nil), helpPacingRate...),
			helpFlag{"workers", "N", "requests in flight at most", "8"})},
		{"Safety guards", []helpFlag{
			{"max-users", "N", "refuse a plan that would change more than N users (the blast radius); 0 = no cap", "0"},
			{"include-self", "", "allow rotating the caller's own account (skipped otherwise)", "off"},
		}},
		{"Delivery to Kubernetes Secrets", []helpFlag{
			{"deliver", "FILE", "CSV userId,namespace,secret,key: once a user's change is confirmed, put the new password into each of its Secret keys (a merge patch of that key alone); a dry-run patch of every target first, any refusal exit 1 before any change; results.csv column delivered. Repeatable", ""},
			{"kubeconfig", "FILE", "kubeconfig for --deliver; else KUBECONFIG, the pod's ServiceAccount, ~/.kube/config (needs get and patch on the named Secrets only)", ""},
			{"kube-context", "NAME", "kubeconfig context for --deliver", ""},
			{"older-than", "D", "with --deliver: rotate only users due, whose targets show no pwrotate rotation younger than D (90d, 36h); the others are skipped with the reason", ""},
		}},
		{"Kubernetes and metrics", []helpFlag{
			{"shard", "K/N", "process only shard K of N (an Indexed Job); outputs under OUT/shard-K/, the rate divided by N", ""},
			{"shards", "N", "number of shards, K from JOB_COMPLETION_INDEX", "0"},
			{"pushgateway", "URL", "push the run's metrics to this Prometheus Pushgateway at the end (and on interruption)", ""},
		}},
		{"Logging", append(append([]helpFlag(nil), helpLogging...),
			helpFlag{"progress", "P", "auto (a bar on a terminal, a line every 10s otherwise), always, never", "auto"})},
	},
	examples: `  # Try it on the built-in simulator: the plan, then the rotation
  pwrotate run --demo
  pwrotate run --demo --apply --out demo-out

  # Dry run: check the input and the key, print the plan; changes nothing
  export ECGRID_API_KEY=...        # or --api-key-file /path/to/key
  pwrotate run --input users.csv

  # Apply: change the passwords, sealed to your age key first
  pwrotate run --input users.csv --apply --out rot-2026-12 \
      --recipient age1...

  # Resume after Ctrl-C, a kill or a crash: the same command plus --resume
  pwrotate run --input users.csv --apply --out rot-2026-12 \
      --recipient age1... --resume

  # Incident: every active user of network 42 except protected accounts,
  # sessions ended too, the ticket recorded
  pwrotate run --select network=42,status=Active --protect protected.txt \
      --reset-sessions --reason "INC-1234 leaked credentials" \
      --apply --out inc-1234 --recipients-file oncall-keys.txt

  # Incident across networks: each network's admins get their own users'
  # passwords (map.csv: networkId,recipient), security keeps them all
  pwrotate users --status Active --output users.csv
  pwrotate run --input users.csv --recipients-map map.csv \
      --recipients-file security-keys.txt --apply --out inc-1234
  # then hand each team its files: inc-1234/passwords-g*-network-42.age
  # Scheduled: deliver each new password to the Secret its consumer reads,
  # and rotate only the accounts not rotated in the last 90 days
  pwrotate run --input users.csv --deliver deliver.csv --older-than 90d \
      --apply --resume --out /out/$JOB_NAME --recipients-file keys.txt

  # Read the new passwords (as CSV)
  pwrotate open --identity ~/key.txt rot-2026-12
`,
}

var helpOpen = helpPage{
	usage: "pwrotate open [flags] PATH...",
	intro: `Prints the sealed passwords as CSV on stdout: userId,password,status,generation.
PATH is an output folder or .age files. By default one row per user: the live
password (status updated) or, where the outcome is unknown, each candidate
(status unconfirmed). The files open with the stock 'age -d -i KEY' too.
With one group's key (run --recipients-map), that group's files open and its
users are printed; the files sealed for other groups are counted on stderr.`,
	groups: []helpGroup{
		{"Opening", []helpFlag{
			{"identity", "FILE", "age identity file or unencrypted SSH private key; repeatable", ""},
			{"i", "FILE", "short for --identity", ""},
			{"all", "", "print every sealed row, not only the live or candidate passwords", "off"},
			{"api-keys", "", "print the new API keys instead (--rotate-api-keys): userId,apiKey, each user's live key", "off"},
		}},
	},
	examples: `  # The live passwords of a run
  pwrotate open --identity ~/key.txt rot-2026-12 > passwords.csv

  # The demo's (its key is in the folder)
  pwrotate open --identity demo-out/demo-identity.txt demo-out

  # Every sealed row, every generation
  pwrotate open --identity ~/key.txt --all rot-2026-12

  # The new API keys of a run with --rotate-api-keys
  pwrotate open --identity ~/key.txt --api-keys inc-1234 > keys.csv
`,
}

var helpUsers = helpPage{
	usage: "pwrotate users [flags]",
	intro: `Lists ECGrid users (POST /v2/users/list) into a CSV that
'pwrotate run --input' reads, sorted by userId, each user once, file mode 0600:
userId,login,email,firstName,lastName,networkId,mailboxId,authLevel,status`,
	env: true,
	groups: []helpGroup{
		{"Choosing the users", []helpFlag{
			{"network", "N", "only users of network N (0: every network the key sees)", "0"},
			{"mailbox", "M", "only users of mailbox M (0: any)", "0"},
			{"auth-level", "L", "only users with AuthLevel L (Root, TechOps, NetOps, NetworkAdmin, NetworkUser, MailboxAdmin, MailboxUser, TPUser, General)", ""},
			{"status", "S", "only users with status S (Development, Active, Preproduction, Suspended, Terminated), or any", "Active"},
		}},
		{"Output", []helpFlag{
			{"output", "FILE", "where the CSV goes; - for stdout", "-"},
		}},
		{"Connection and key", helpConnKey},
		{"Pacing", helpPacingRate},
		{"Logging", append(append([]helpFlag(nil), helpLogging...),
			helpFlag{"progress", "P", "auto (a bar on a terminal, a line every 10s otherwise), always, never", "auto"})},
	},
	examples: `  # The active users of network 42, to review before a rotation
  pwrotate users --network 42 --output users.csv

  # Every user of a mailbox, whatever the status
  pwrotate users --network 42 --mailbox 7 --status any --output -
`,
}

// helpTop is the top-level help.
const helpTop = `pwrotate rotates ECGrid user passwords in bulk: it reads a list of users,
gives each a new compliant password, seals the passwords with age before
sending them, and changes them through the ECGrid API at a steady pace.

Usage:
  pwrotate run   [flags]          plan a rotation; with --apply, carry it out
  pwrotate users [flags]          list ECGrid users into an input CSV
  pwrotate open  [flags] PATH...  print sealed passwords as CSV (needs a key)
  pwrotate version                print the version
  pwrotate help [COMMAND]         the flags and examples of a command

Try it on the built-in simulator (no key needed, nothing real is touched):
  pwrotate run --demo                          # the plan (a dry run)
  pwrotate run --demo --apply --out demo-out   # the rotation
  pwrotate open --identity demo-out/demo-identity.txt demo-out

Exit codes: 0 done; 1 could not start, or a fatal error; 2 finished, but some
records failed or were invalid; 3 interrupted (run again with --resume);
4 the output folder is busy (try again later).

'pwrotate help run' lists the flags of run, grouped, with examples.
`

// helpPages are the commands that have a help page.
var helpPages = map[string]*helpPage{"run": &helpRun, "open": &helpOpen, "users": &helpUsers}

// UsersHelp is the help text of 'pwrotate users', for its FlagSet's Usage
// and for '--help'.
func UsersHelp() string { return helpUsers.render() }

// writeHelp writes the help of topic ("" for the top level) to w; it reports
// false for an unknown topic.
func writeHelp(w io.Writer, topic string) bool {
	if topic == "" {
		_, _ = io.WriteString(w, helpTop)
		return true
	}
	p, ok := helpPages[topic]
	if !ok {
		return false
	}
	_, _ = io.WriteString(w, p.render())
	return true
}

// cmdHelp is 'pwrotate help [COMMAND]'.
func cmdHelp(args []string, stdout, stderr io.Writer) int {
	topic := ""
	if len(args) > 0 {
		topic = args[0]
	}
	if !writeHelp(stdout, topic) {
		fmt.Fprintf(stderr, "pwrotate help: no help for %q; commands: run, users, open, version\n", topic)
		return 1
	}
	return 0
}

const (
	helpWidth  = 79
	helpIndent = 26
)

// render lays the page out for an 80-column terminal.
func (p *helpPage) render() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Usage: %s\n\n%s\n", p.usage, p.intro)
	if p.env {
		b.WriteString("\nEvery flag can also be set in the environment as PWROTATE_<NAME>\n(--max-users 50 is PWROTATE_MAX_USERS=50); the command line wins.\n")
	} else {
		b.WriteString("\nThese flags are not read from the environment.\n")
	}
	for _, g := range p.groups {
		fmt.Fprintf(&b, "\n%s:\n", g.title)
		for _, f := range g.flags {
			writeHelpFlag(&b, f, p.env)
		}
	}
	if p.examples != "" {
		fmt.Fprintf(&b, "\nExamples:\n%s", p.examples)
	}
	return b.String()
}

func writeHelpFlag(b *strings.Builder, f helpFlag, env bool) {
	dash := "--"
	if len(f.name) == 1 {
		dash = "-"
	}
	head := "  " + dash + f.name
	if f.arg != "" {
		head += " " + f.arg
	}
	text := f.desc
	var extra []string
	if f.def != "" {
		extra = append(extra, "default "+f.def)
	}
	if env {
		extra = append(extra, envName(f.name))
	}
	if len(extra) > 0 {
		text += " [" + strings.Join(extra, ", ") + "]"
	}
	lines := console.Wrap(text, helpWidth-helpIndent)
	if len(head) > helpIndent-2 {
		b.WriteString(head + "\n")
		head = ""
	}
	for i, l := range lines {
		if i == 0 {
			fmt.Fprintf(b, "%-*s%s\n", helpIndent, head, l)
		} else {
			fmt.Fprintf(b, "%s%s\n", strings.Repeat(" ", helpIndent), l)
		}
	}
}

// envName is the environment variable of a flag: PWROTATE_MAX_USERS.
func envName(flag string) string {
	return "PWROTATE_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}
