package main

import (
	"bytes"
	"flag"
	"io"
	"regexp"
	"strings"
	"testing"
)

// notYetDefined are flags the help lists before this branch defines them:
// they are being added in parallel, and each line goes once its flag lands.
var notYetDefined = map[string]map[string]bool{
	"run": {
		"protect":         true, // issue 8: run --protect
		"reason":          true, // --reason TEXT
		"rotate-api-keys": true, // SPEC "API keys", later
	},
}

// helpFlagsIn lists the flags a rendered help text documents: the --name
// (or -n) at the start of a flag line.
func helpFlagsIn(text string) map[string]bool {
	re := regexp.MustCompile(`(?m)^  --?([a-z][a-z0-9-]*)`)
	out := map[string]bool{}
	for _, m := range re.FindAllStringSubmatch(text, -1) {
		out[m[1]] = true
	}
	return out
}

// TestHelpListsEveryFlag: every flag on a command's FlagSet is in its help,
// with the same default, and the help lists no flag the FlagSet lacks
// (except notYetDefined): the help cannot drift from the flags.
func TestHelpListsEveryFlag(t *testing.T) {
	runFS, _ := newRunFlags(io.Discard)
	openFS, _, _ := newOpenFlags()
	usersFS, _ := newUsersFlags(io.Discard)
	for _, tc := range []struct {
		cmd string
		fs  *flag.FlagSet
	}{{"run", runFS}, {"open", openFS}, {"users", usersFS}} {
		t.Run(tc.cmd, func(t *testing.T) {
			page := helpPages[tc.cmd]
			text := page.render()
			listed := helpFlagsIn(text)
			tc.fs.VisitAll(func(f *flag.Flag) {
				if !listed[f.Name] {
					t.Errorf("--%s is defined but not in 'pwrotate help %s'", f.Name, tc.cmd)
				}
			})
			for name := range listed {
				if tc.fs.Lookup(name) == nil && !notYetDefined[tc.cmd][name] {
					t.Errorf("'pwrotate help %s' lists --%s, which is not defined", tc.cmd, name)
				}
			}
			for _, g := range page.groups {
				for _, hf := range g.flags {
					f := tc.fs.Lookup(hf.name)
					if f == nil {
						continue
					}
					want := f.DefValue
					if want == "false" {
						want = "off"
					}
					if want == "" || (hf.def == "" && want == "[]") {
						want = ""
					}
					if _, isList := f.Value.(*listFlag); isList {
						want = ""
					}
					if hf.def != want {
						t.Errorf("help of --%s says default %q, the flag's is %q", hf.name, hf.def, f.DefValue)
					}
					if page.env && !strings.Contains(text, envName(hf.name)) {
						t.Errorf("help of --%s does not name %s", hf.name, envName(hf.name))
					}
				}
			}
		})
	}
}

// TestHelpCommands: 'pwrotate help X' and 'pwrotate X --help' print the same
// page on stdout, exit 0; every line fits 80 columns.
func TestHelpCommands(t *testing.T) {
	for _, cmd := range []string{"run", "open"} {
		var a, b, errA, errB bytes.Buffer
		if code := Main([]string{"help", cmd}, nil, &a, &errA); code != 0 {
			t.Errorf("help %s: exit %d", cmd, code)
		}
		if code := Main([]string{cmd, "--help"}, nil, &b, &errB); code != 0 {
			t.Errorf("%s --help: exit %d", cmd, code)
		}
		if a.String() != b.String() || a.Len() == 0 {
			t.Errorf("'help %s' and '%s --help' differ", cmd, cmd)
		}
		if errA.Len()+errB.Len() > 0 {
			t.Errorf("help of %s wrote to stderr: %q %q", cmd, errA.String(), errB.String())
		}
	}
	var users, top bytes.Buffer
	if code := Main([]string{"help", "users"}, nil, &users, io.Discard); code != 0 || users.String() != UsersHelp() {
		t.Errorf("help users: exit %d, or not UsersHelp()", code)
	}
	if code := Main([]string{"help"}, nil, &top, io.Discard); code != 0 || !strings.Contains(top.String(), "pwrotate run --demo") {
		t.Errorf("help: exit %d:\n%s", code, top.String())
	}
	if code := Main([]string{"help", "frobnicate"}, nil, io.Discard, io.Discard); code != 1 {
		t.Errorf("help frobnicate: exit %d, want 1", code)
	}
	for _, text := range []string{helpTop, helpRun.render(), helpOpen.render(), UsersHelp()} {
		for _, l := range strings.Split(text, "\n") {
			if n := len([]rune(l)); n > 80 {
				t.Errorf("help line of %d columns: %q", n, l)
			}
			if regexp.MustCompile(`(^|\s)-[a-z]{2,}`).MatchString(l) {
				t.Errorf("help line with a single-dash flag: %q", l)
			}
		}
	}
}
