package job

import (
	"math"
	"pwrotate/report"
	"pwrotate/rotate/secret"
)

// passwords calls use with the password of each pending user, in order:
// the input's password, else a new one; fromInput says which.
func (r *Runner) passwords(p *plan, use func(i int, pw secret.Password, fromInput bool) error) error {
	// Generated a chunk at a time, on every CPU (rotate.Generator.Fill):
	// the plan's passwords are ready sooner, and only a chunk's strings are
	// held beside the arena.
	const chunk = 4096
	gen := make([]secret.Password, 0, min(chunk, len(p.pending)))
	defer clear(gen[:cap(gen)])
	for start := 0; start < len(p.pending); start += chunk {
		end := min(start+chunk, len(p.pending))
		gen = gen[:0]
		for _, idx := range p.pending[start:end] {
			if p.records[idx].Password.Empty() {
				gen = append(gen, "")
			}
		}
		if err := r.cfg.Generator.Fill(gen); err != nil {
			return fatal("generating a password: %w", err)
		}
		k := 0
		for i := start; i < end; i++ {
			rec := &p.records[p.pending[i]]
			var err error
			if rec.Password.Empty() {
				err = use(i, gen[k], false)
				k++
			} else {
				err = use(i, rec.Password, true)
			}
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// pwArena holds a plan's passwords in one buffer, in pending order: one
// allocation instead of one per user (a plan can be millions long). wipe
// zeroes that buffer when the run ends. That is hygiene, not a guarantee:
// it does not reach the copies made on the way, which stay in freed memory
// until it is reused: the generator's and the input's strings, the
// secret.Password that at returns (a conversion copies), the request body's
// copies in net/http's and crypto/tls's buffers, age's plaintext chunks,
// goroutine stacks copied as they grow, and pages the kernel swapped out.
// What keeps them off disk on a crash is secret.DisableCoreDumps.
type pwArena struct {
	buf []byte
	end []uint32 // end[i] is where password i ends in buf
}

func (a *pwArena) add(pw secret.Password) error {
	if len(a.buf)+len(pw.Reveal()) > math.MaxUint32 {
		return fatal("the plan's passwords exceed 4 GiB: split the input")
	}
	a.buf = append(a.buf, pw.Reveal()...)
	a.end = append(a.end, uint32(len(a.buf)))
	return nil
}

func (a *pwArena) at(i int) secret.Password {
	start := uint32(0)
	if i > 0 {
		start = a.end[i-1]
	}
	return secret.Password(a.buf[start:a.end[i]])
}

// wipe zeroes the arena's buffer; see pwArena for the copies it does not
// reach.
func (a *pwArena) wipe() { clear(a.buf) }

// sealPending gives every pending record its password of generation gen
// (generated, or the input's) and seals them all in one file, fsynced,
// before the first request that carries one. The passwords stay in p.pw
// for the pool; the caller wipes them.
func (r *Runner) sealPending(out *report.Folder, p *plan, gen int) error {
	if len(p.pending) == 0 {
		return nil
	}
	cfg := r.cfg
	p.source = make([]bool, len(p.pending))
	p.pw.end = make([]uint32, 0, len(p.pending))
	p.pw.buf = make([]byte, 0, len(p.pending)*cfg.Generator.Shape().Length)
	err := r.passwords(p, func(i int, pw secret.Password, fromInput bool) error {
		p.source[i] = fromInput
		return p.pw.add(pw)
	})
	if err != nil {
		return err
	}
	half := len(p.pending) / 2
	path, err := report.Seal(out.Path, gen, cfg.Recipients, func(yield func(int, secret.Password) bool) {
		for i := range p.pending {
			if i == half {
				cfg.Hook("sealing", 1)
			}
			if !yield(int(p.todo[i].userID), p.pw.at(i)) {
				return
			}
		}
	})
	if err != nil {
		return fatal("sealing generation %d: %w", gen, err)
	}
	r.log.Info("sealed", "file", path, "generation", gen, "passwords", len(p.pending))
	cfg.Hook("sealed", 1)
	return r.sealEscrow(out, p, gen)
}
