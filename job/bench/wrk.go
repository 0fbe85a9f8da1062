// wrk, the load generator from Debian's packages: the upper bound of what the simulator serves.

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

func (b *bench) wrk(ctx context.Context) (float64, error) {
	sim, url, stop, err := b.simulator()
	if err != nil {
		return 0, err
	}
	defer stop()
	script := filepath.Join(b.dir, "post.lua")
	if err := os.WriteFile(script, fmt.Appendf(nil, wrkScript, b.key, 50_000_000), 0o600); err != nil {
		return 0, fmt.Errorf("writing post.lua: %w", err)
	}
	args := []string{"-t" + strconv.Itoa(wrkThreads), "-c" + strconv.Itoa(wrkConnections),
		"-d" + b.opt.wrkDur.String(), "-s", script, url + "/v2/users/password"}
	out, err := exec.CommandContext(ctx, "wrk", args...).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("wrk: %w\n%s", err, out)
	}
	res, err := parseWrk(string(out))
	if err != nil {
		return 0, fmt.Errorf("wrk: %w\n%s", err, out)
	}
	served := sim.Count("password")
	fmt.Fprintf(b.out, "\nwrk -t%d -c%d -d%s POST /v2/users/password (zero latency)\n", wrkThreads, wrkConnections, b.opt.wrkDur)
	fmt.Fprintf(b.out, "  requests/s:        %.0f (%d requests, %d non-2xx, %d socket errors; simulator saw %d)\n",
		res.rps, res.requests, res.non2xx, res.socketErrors, served)
	if res.non2xx > 0 || res.socketErrors > 0 {
		return 0, fmt.Errorf("wrk: %d non-2xx answers and %d socket errors: the request is wrong or the machine is overloaded", res.non2xx, res.socketErrors)
	}
	return res.rps, nil
}

// wrkResult is what parseWrk reads from wrk's output.
type wrkResult struct {
	rps          float64
	requests     int
	non2xx       int
	socketErrors int
}

// parseWrk reads "Requests/sec:", "N requests in", "Non-2xx or 3xx
// responses:" and "Socket errors:" from wrk's report.
func parseWrk(out string) (wrkResult, error) {
	var r wrkResult
	var haveRPS bool
	for line := range strings.Lines(out) {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "Requests/sec:"):
			v, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(line, "Requests/sec:")), 64)
			if err != nil {
				return r, fmt.Errorf("bad Requests/sec line %q", line)
			}
			r.rps, haveRPS = v, true
		case strings.Contains(line, " requests in "):
			f := strings.Fields(line)
			r.requests, _ = strconv.Atoi(f[0])
		case strings.HasPrefix(line, "Non-2xx or 3xx responses:"):
			r.non2xx, _ = strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "Non-2xx or 3xx responses:")))
		case strings.HasPrefix(line, "Socket errors:"):
			// Socket errors: connect 0, read 0, write 0, timeout 0
			for part := range strings.SplitSeq(strings.TrimPrefix(line, "Socket errors:"), ",") {
				f := strings.Fields(part)
				if len(f) == 2 {
					n, _ := strconv.Atoi(f[1])
					r.socketErrors += n
				}
			}
		}
	}
	if !haveRPS {
		return r, errors.New("no Requests/sec line in its output")
	}
	return r, nil
}

// childRun is one pwrotate process and what it used.
