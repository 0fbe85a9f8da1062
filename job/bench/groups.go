package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// groupTarget is issue 22's target: a run sealed per group within this
// multiple of the same run's throughput with one group.
const groupTarget = 0.9

// sealingPerGroup runs the same users sealed to one group and to
// opt.groups groups (each network its own recipient, every file also to
// the bench's global recipient), opt.repeat pairs, and judges
// the median ratio of their throughputs.
func (b *bench) sealingPerGroup(ctx context.Context) error {
	n, groups := b.opt.groupUsers, b.opt.groups
	fmt.Fprintf(b.out, "\nsealing per group: %d users, 1 network against %d networks (a recipient each), --rate 0 --workers %d, %d pairs\n",
		n, groups, benchWorkers, b.opt.repeat)
	counts := []int{1, groups}
	for _, g := range counts {
		name := groupRunName(g)
		if err := writeGroupFiles(filepath.Join(b.dir, name+".csv"), filepath.Join(b.dir, name+"-map.csv"), n, g); err != nil {
			return err
		}
	}
	var ratios []float64
	for k := range b.opt.repeat {
		var perSec [2]float64
		// Every other pair (the 2nd, 4th, …) runs the grouped run first, so
		// that whatever the first run of a pair leaves behind (page cache, a
		// slower CPU after a busy second) weighs on both sides alike.
		order := []int{0, 1}
		if k%2 == 1 {
			order = []int{1, 0}
		}
		for _, j := range order {
			g := counts[j]
			name := groupRunName(g)
			input := filepath.Join(b.dir, name+".csv")
			mapFile := filepath.Join(b.dir, name+"-map.csv")
			_, url, stop, err := b.simulator()
			if err != nil {
				return err
			}
			r, err := b.runChildOn(ctx, name, input, n, url,
				"--rate", "0", "--workers", strconv.Itoa(benchWorkers), "--recipients-map", mapFile)
			stop()
			if err != nil {
				return err
			}
			perSec[j] = float64(n) / r.wall.Seconds()
			fmt.Fprintf(b.out, "  pair %d, %5d networks: %.2f s (generating and sealing %.2f s), %.0f users/s, %.2f s CPU, peak RSS %.1f MiB\n",
				k+1, g, r.wall.Seconds(), sealingTime(r.logPath).Seconds(), perSec[j], r.cpu.Seconds(), r.maxRSS)
		}
		ratios = append(ratios, perSec[1]/perSec[0])
	}
	m := median(ratios)
	fmt.Fprintf(b.out, "  %d networks ÷ 1, median of %d pairs: %.2fx  target >= %.2f: %s\n", groups, len(ratios), m, groupTarget,
		b.verdict(m >= groupTarget, fmt.Sprintf("%d groups: %.2fx one group's throughput", groups, m)))
	return nil
}

// groupRunName names the files of the run with g groups.
func groupRunName(g int) string { return fmt.Sprintf("groups-%d", g) }

// sealingTime returns the time from the "plan" record of a run's JSON log
// to its first "sealed" record: generating and sealing the passwords,
// before the first request. 0 if either is missing.
func sealingTime(logPath string) time.Duration {
	f, err := os.Open(logPath)
	if err != nil {
		return 0
	}
	defer f.Close()
	var plan time.Time
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var rec struct {
			Time time.Time `json:"time"`
			Msg  string    `json:"msg"`
		}
		if json.Unmarshal(sc.Bytes(), &rec) != nil {
			continue
		}
		switch {
		case rec.Msg == "plan" && plan.IsZero():
			plan = rec.Time
		case rec.Msg == "sealed" && !plan.IsZero():
			return rec.Time.Sub(plan)
		}
	}
	return 0
}
