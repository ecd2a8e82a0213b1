package linktest

import (
	"math/rand/v2"
	"sync"
	"time"
)

// LossyConfig shapes a lossy pipe: a Pipe whose bytes are damaged on the
// way, as a modem on a noisy telephone line, an infra-red or a radio link
// delivers them. The zero LossyConfig is a clean, instant pipe.
//
// Every impairment is drawn from a generator seeded with Seed (one stream
// per direction, consumed byte by byte), so the damage done to the n-th
// byte an end writes depends only on Seed and the bytes written before it,
// never on how they were split into writes or on timing.
type LossyConfig struct {
	// Config is the line speed, for airtime, and Realtime as for Pipe.
	// Airtime and Realtime count the bytes the sender wrote, before damage.
	Config
	// Seed seeds the impairments.
	Seed uint64
	// BER is the probability that each of a byte's 8 data bits is flipped.
	BER float64
	// Drop is the probability that a byte is lost.
	Drop float64
	// Insert is the probability that a spurious random byte arrives before
	// a byte.
	Insert float64
	// Burst is the probability that a noise burst starts at a byte; the
	// burst wipes out BurstLen bytes (each replaced by a random byte or
	// lost, at even odds).
	Burst float64
	// BurstLen is the length of a burst in bytes; 0 means 32.
	BurstLen int
	// HalfDuplex models a medium only one end can use at a time: bytes
	// written while the other end's transmission is still on the line
	// (by airtime) collide, and both transmissions arrive as garbage.
	// It needs BitsPerSecond and Realtime (airtime must pass for
	// transmissions to overlap); without them it does nothing.
	HalfDuplex bool
}

// LossyEnd is one end of a lossy pipe: an End whose writes are damaged as
// its LossyConfig says. Sent and Airtime count what this end wrote (before
// damage); Received counts what it read (after damage); CutAfter counts
// bytes after damage. It is safe for one reader and one writer at once,
// plus any number of goroutines calling the other methods.
type LossyEnd struct {
	*End
	lp    *lossyPipe
	other *LossyEnd

	// guarded by lp.mu
	rng      *rand.Rand
	sent     int64
	burst    int // bytes left in the current burst
	forced   int // bytes the next writes lose to a burst asked for with Wipe
	txUntil  time.Time
	collided bool
	stats    Damage
}

// Damage counts what a lossy pipe did to the bytes one end wrote.
type Damage struct {
	Flipped    int64 // bytes with at least one bit flipped
	Dropped    int64 // bytes lost (including in bursts)
	Inserted   int64 // spurious bytes added
	Wiped      int64 // bytes in bursts
	Collisions int64 // writes garbled by a collision (HalfDuplex)
}

type lossyPipe struct {
	cfg LossyConfig
	mu  sync.Mutex
	// noise wipes out what is on the line, both ways, in [noiseFrom, noiseUntil).
	noiseFrom, noiseUntil time.Time
}

// LossyPipe returns the two connected ends of a new in-memory lossy link.
func LossyPipe(cfg LossyConfig) (a, b *LossyEnd) {
	inner := cfg.Config
	inner.Realtime = false // LossyEnd sleeps itself, for the bytes written
	x, y := Pipe(inner)
	lp := &lossyPipe{cfg: cfg}
	a = &LossyEnd{End: x, lp: lp, rng: rand.New(rand.NewPCG(cfg.Seed, 0xa))}
	b = &LossyEnd{End: y, lp: lp, rng: rand.New(rand.NewPCG(cfg.Seed, 0xb))}
	a.other, b.other = b, a
	return a, b
}

// Write sends b, damaged, to the other end. With Realtime it delivers b
// byte by byte, each once its airtime has passed, as a modem does (and,
// with HalfDuplex, garbles b and whatever the other end sends meanwhile
// if the two overlap). It returns len(b) when all of b was delivered, and
// the errors of End.Write otherwise.
func (e *LossyEnd) Write(b []byte) (int, error) {
	lp := e.lp
	cfg := &lp.cfg
	start := time.Now()
	if !cfg.Realtime || cfg.BitsPerSecond <= 0 {
		if err := e.deliver(b, start, false); err != nil {
			return 0, err
		}
		return len(b), nil
	}
	if cfg.HalfDuplex {
		lp.mu.Lock()
		if e.other.txUntil.After(start) {
			e.collided, e.other.collided = true, true
		}
		e.txUntil = start.Add(cfg.Airtime(int64(len(b))))
		lp.mu.Unlock()
	}
	garbled := false
	for i := range b {
		at := start.Add(cfg.Airtime(int64(i)))
		time.Sleep(time.Until(start.Add(cfg.Airtime(int64(i + 1)))))
		lp.mu.Lock()
		c := e.collided
		garbled = garbled || c
		lp.mu.Unlock()
		if err := e.deliver(b[i:i+1], at, c); err != nil {
			return i, err
		}
	}
	if garbled {
		lp.mu.Lock()
		e.collided = false
		e.stats.Collisions++
		lp.mu.Unlock()
	}
	return len(b), nil
}

// deliver damages b, whose transmission began at start (garbles it all
// if collided), and hands it to the other end.
func (e *LossyEnd) deliver(b []byte, start time.Time, collided bool) error {
	e.lp.mu.Lock()
	e.sent += int64(len(b))
	var out []byte
	if collided {
		out = make([]byte, len(b))
		for i := range out {
			out[i] = byte(e.rng.Uint32())
		}
	} else {
		out = e.damage(b, start)
	}
	e.lp.mu.Unlock()
	if len(out) == 0 {
		return nil
	}
	_, err := e.End.Write(out)
	return err
}

// damage returns b, whose transmission began at start, as the line
// delivers it. lp.mu must be held.
func (e *LossyEnd) damage(b []byte, start time.Time) []byte {
	cfg := &e.lp.cfg
	out := make([]byte, 0, len(b)+len(b)/8)
	burstLen := cfg.BurstLen
	if burstLen <= 0 {
		burstLen = 32
	}
	noisy := e.lp.noiseUntil.After(start)
	for i, c := range b {
		if noisy {
			if at := start.Add(cfg.Airtime(int64(i))); !at.Before(e.lp.noiseFrom) && at.Before(e.lp.noiseUntil) {
				e.burst = max(e.burst, 1)
			}
		}
		if e.burst == 0 && e.forced > 0 {
			e.burst = e.forced
			e.forced = 0
		}
		if e.burst == 0 && cfg.Burst > 0 && e.rng.Float64() < cfg.Burst {
			e.burst = burstLen
		}
		if e.burst > 0 {
			e.burst--
			e.stats.Wiped++
			if e.rng.IntN(2) == 0 {
				e.stats.Dropped++
			} else {
				out = append(out, byte(e.rng.Uint32()))
			}
			continue
		}
		if cfg.Insert > 0 && e.rng.Float64() < cfg.Insert {
			e.stats.Inserted++
			out = append(out, byte(e.rng.Uint32()))
		}
		if cfg.Drop > 0 && e.rng.Float64() < cfg.Drop {
			e.stats.Dropped++
			continue
		}
		if cfg.BER > 0 {
			orig := c
			for bit := range 8 {
				if e.rng.Float64() < cfg.BER {
					c ^= 1 << bit
				}
			}
			if c != orig {
				e.stats.Flipped++
			}
		}
		out = append(out, c)
	}
	return out
}

// Wipe makes a noise burst wipe out the next n bytes this end writes
// (each replaced by a random byte or lost, at even odds), as a click or a
// carrier dropout on the line does.
func (e *LossyEnd) Wipe(n int) {
	e.lp.mu.Lock()
	defer e.lp.mu.Unlock()
	e.forced += max(n, 0)
}

// Noise makes a noise burst wipe out everything on the line, both ways,
// for d from now (each byte replaced by a random byte or lost, at even
// odds), as a click or a carrier dropout does. A byte is on the line at
// the time its airtime says, counted from the start of its write; without
// BitsPerSecond only writes that start within d are hit.
func (e *LossyEnd) Noise(d time.Duration) {
	e.lp.mu.Lock()
	defer e.lp.mu.Unlock()
	now := time.Now()
	e.lp.noiseFrom, e.lp.noiseUntil = now, now.Add(d)
}

// Sent is how many bytes this end has written, before damage.
func (e *LossyEnd) Sent() int64 {
	e.lp.mu.Lock()
	defer e.lp.mu.Unlock()
	return e.sent
}

// Airtime is how long the bytes this end has written take on the line at
// the configured speed.
func (e *LossyEnd) Airtime() time.Duration {
	return e.lp.cfg.Airtime(e.Sent())
}

// Damage reports what the line has done to the bytes this end wrote.
func (e *LossyEnd) Damage() Damage {
	e.lp.mu.Lock()
	defer e.lp.mu.Unlock()
	return e.stats
}
