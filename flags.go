package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"pwrotate/report/console"
)

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// connFlags are the flags every subcommand that talks to ECGrid shares: the
// endpoint, the key, the pacing of calls and the logging. One definition, so
// that 'run' and 'users' cannot drift apart.
type connFlags struct {
	baseURL, apiKeyFile string
	logFormat, logLevel string
	rate                float64
	burst, maxAttempts  int
	timeout             time.Duration
}

// register defines the connection flags on fs.
func (c *connFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.baseURL, "base-url", "https://rest.ecgrid.io", "API root; https only, except loopback hosts")
	fs.StringVar(&c.apiKeyFile, "api-key-file", "", "read the API key from this file (else env ECGRID_API_KEY)")
	fs.Float64Var(&c.rate, "rate", 10, "API calls per second, every call counted; 0 = unlimited")
	fs.IntVar(&c.burst, "burst", 1, "token bucket burst")
	fs.DurationVar(&c.timeout, "timeout", 30*time.Second, "one HTTP call")
	fs.IntVar(&c.maxAttempts, "max-attempts", 5, "attempts per call, the first included")
	fs.StringVar(&c.logFormat, "log-format", "auto", "auto (text on a terminal, JSON otherwise), text, json")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug (shows retries), info, warn, error")
}

// validate checks the values of the connection flags, naming the flag.
func (c *connFlags) validate() error {
	switch {
	case c.rate < 0:
		return fmt.Errorf("--rate %v: must be 0 (unlimited) or more", c.rate)
	case c.burst < 1:
		return fmt.Errorf("--burst %d: must be at least 1", c.burst)
	case c.timeout <= 0:
		return fmt.Errorf("--timeout %v: must be more than 0", c.timeout)
	case c.maxAttempts < 1 || c.maxAttempts > 100:
		return fmt.Errorf("--max-attempts %d: must be between 1 and 100", c.maxAttempts)
	}
	return nil
}

// logger builds the slog logger of --log-format and --log-level, writing to
// w (the progress display's writer, so that lines and bar do not tangle).
func (c *connFlags) logger(w io.Writer, terminal bool) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", c.logLevel)
	}
	return console.NewLogger(w, c.logFormat, terminal, level)
}

// refuseKeyFlag reports an attempt to pass the API key as a flag value: a key
// on the command line leaks into process lists and shell history.
func refuseKeyFlag(cmd string, args []string, stderr io.Writer) bool {
	for _, a := range args {
		if name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "="); strings.HasPrefix(a, "-") && name == "api-key" {
			fmt.Fprintf(stderr, "pwrotate %s: there is no --api-key flag: a key on the command line leaks into process lists and shell history; set ECGRID_API_KEY or pass --api-key-file\n", cmd)
			return true
		}
	}
	return false
}

// parseArgs applies PWROTATE_<NAME> environment variables, then the
// arguments; flags and positional arguments may be mixed.
func parseArgs(fs *flag.FlagSet, args []string, fromEnv bool) ([]string, error) {
	var envErr error
	fs.VisitAll(func(fl *flag.Flag) {
		if !fromEnv {
			return
		}
		name := "PWROTATE_" + strings.ToUpper(strings.ReplaceAll(fl.Name, "-", "_"))
		if v := os.Getenv(name); v != "" && envErr == nil {
			if err := fs.Set(fl.Name, v); err != nil {
				envErr = withHint(fmt.Errorf("%s: %w", name, err), hintFlags)
			}
		}
	})
	if envErr != nil {
		return nil, envErr
	}
	var rest []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, parseError(err)
		}
		args = fs.Args()
		if len(args) == 0 {
			return rest, nil
		}
		rest = append(rest, args[0])
		args = args[1:]
	}
}

// maxAPIKeyFile bounds the --api-key-file read: a key is a short line.
const maxAPIKeyFile = 64 << 10

// readAPIKeyFile reads the --api-key-file file, maxAPIKeyFile bytes at
// most. An error names the file only when file looks like a path (see
// showKeyPath): an API key passed by mistake as the flag's value must not
// be echoed.
func readAPIKeyFile(file string) ([]byte, error) {
	name := "the --api-key-file file"
	if showKeyPath(file) {
		name = "--api-key-file " + file
	}
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("cannot read %s: %w", name, pathless(err))
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxAPIKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("cannot read %s: %w", name, pathless(err))
	}
	if len(b) > maxAPIKeyFile {
		clear(b)
		return nil, fmt.Errorf("%s: larger than %d KiB: not an API key file", name, maxAPIKeyFile>>10)
	}
	return b, nil
}

// showKeyPath reports whether the --api-key-file value may appear in an
// error: when it holds a "/" and the folder it names exists (a Secret
// volume such as /var/run/secrets/ecgrid/api-key, or ./keys/key). A bare
// name, or one under a folder that does not exist, may well be the key
// itself, pasted as the value: it is never shown.
func showKeyPath(file string) bool {
	if !strings.Contains(file, "/") {
		return false
	}
	st, err := os.Stat(filepath.Dir(file))
	return err == nil && st.IsDir()
}

// pathless returns the cause of err without the path an *fs.PathError
// names ("open: no such file or directory").
func pathless(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", pe.Op, pe.Err)
	}
	return err
}

// readAPIKey reads the key from --api-key-file, else ECGRID_API_KEY.
func readAPIKey(file string) (string, error) {
	var key, from string
	if file != "" {
		b, err := readAPIKeyFile(file)
		if err != nil {
			return "", err
		}
		key, from = strings.TrimSpace(string(b)), "--api-key-file "+file
		if key == "" {
			return "", fmt.Errorf("%s: the file is empty", from)
		}
	} else {
		key, from = strings.TrimSpace(os.Getenv("ECGRID_API_KEY")), "ECGRID_API_KEY"
	}
	for _, c := range key {
		if c < 0x21 || c > 0x7e {
			return "", fmt.Errorf("%s: the API key holds a space, control or non-ASCII character", from)
		}
	}
	return key, nil
}

// parseError attaches its hint to an error of the flag package: an
// unknown flag, or a value the flag does not take.
func parseError(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return err
	}
	if strings.HasPrefix(err.Error(), "flag provided but not defined") {
		return withHint(err, hintUnknown)
	}
	return withHint(err, hintFlags)
}
