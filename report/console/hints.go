package console

import "strings"

// HintContext is what a hint may point to.
type HintContext struct {
	// Command is the command being run ("run", "open", "users").
	Command string
	// Resume is the command that resumes this run, or "" when there is
	// none (no --apply, no --out).
	Resume string
}

// hints pairs a piece of an error message with the hint that fixes it; the
// first match wins. {resume} is replaced by HintContext.Resume, {cmd} by the
// command.
var hints = []struct{ match, hint string }{
	{"at least one recipient is needed", "add --recipient age1… (your age public key) or --recipients-file FILE; 'age-keygen -o key.txt' makes a key pair"},
	{"--out: an output folder is required", "add --out DIR: a new folder for results.csv, summary.json and the sealed passwords"},
	{"--input: a users CSV is required", "add --input users.csv (a CSV with a userId column), or try the built-in simulator with --demo"},
	{"is not empty: pass --resume", "to continue the run in it: {resume}"},
	{"in use by another run", "another pwrotate holds this --out folder: wait for it to finish, then run the same command again"},
	{"holds a run of", "give --input the file that run started with, or choose a new --out folder"},
	{"holds a dry run's plan", "choose a new --out folder for the run that applies"},
	{"--resume goes with --apply", "add --apply (a dry run has nothing to resume)"},
	{"no API key", "set ECGRID_API_KEY, or pass --api-key-file FILE"},
	{"InvalidAPIKey", "check the key in ECGRID_API_KEY or --api-key-file: the server does not know it"},
	{"NetworkAdmin or higher", "use the API key of an account with AuthLevel NetworkAdmin or higher"},
	{"--max-users", "check the input; if its size is right, raise --max-users"},
	{"reading input", "check the file given to --input (- reads stdin)"},
	{"no userId column", "the input needs a header row with a userId column: check the file given to --input"},
	{"input has no records", "the input has no users: check the file, or the job that writes it"},
	{"interrupted", "nothing is lost; to finish: {resume}"},
	{"preflight", "check --base-url, the network, and the key"},
	{"--identity", "add --identity FILE: the age identity (or SSH private key) of a recipient the passwords were sealed to"},
	{"give an output folder", "pwrotate open --identity KEY.txt OUT-FOLDER"},
	{"no such file or directory", "check the path"},
	{"flag provided but not defined", "'pwrotate help {cmd}' lists the flags"},
	{"invalid value", "'pwrotate help {cmd}' lists the flags with their defaults"},
	{"--", "'pwrotate help {cmd}' lists the flags with their defaults"},
}

// Hint returns the one-line hint for an error message, or "".
func Hint(msg string, c HintContext) string {
	for _, h := range hints {
		if !strings.Contains(msg, h.match) {
			continue
		}
		if strings.Contains(h.hint, "{resume}") && c.Resume == "" {
			return ""
		}
		cmd := c.Command
		if cmd == "" {
			cmd = "run"
		}
		return strings.NewReplacer("{resume}", c.Resume, "{cmd}", cmd).Replace(h.hint)
	}
	return ""
}
