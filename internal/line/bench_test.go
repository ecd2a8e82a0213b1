package line

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"cardlink/internal/audio"
	"cardlink/internal/audio/impair"
)

// benchLine is the line of the benchmarks: every impairment on.
var benchLine = impair.Config{
	BandLimit: true, NoiseDBFS: -30, AttenuationDB: 6, DriftPPM: 100,
	BurstEvery: 2 * time.Second, BurstLength: 100 * time.Millisecond, BurstDBFS: -15,
}

// TestHelperSwitch is the switch process of BenchmarkSwitch: it serves
// on a free port, prints the address and runs until SIGINT. Without
// LINE_HELPER_SPEED it does nothing.
func TestHelperSwitch(t *testing.T) {
	speed, err := strconv.ParseFloat(os.Getenv("LINE_HELPER_SPEED"), 64)
	if err != nil {
		t.Skip("the switch process of BenchmarkSwitch")
	}
	sw, err := NewSwitch(Config{Line: benchLine, Speed: speed})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	fmt.Println(ln.Addr())
	if err := sw.Serve(ctx, ln); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkSwitch carries calls through a switch in its own process,
// every impairment on, both parties sending all the time, and reports the
// switch's CPU time per second of call (switch-cpu/call-s: a ratio to
// real time; 1/it is how many calls one core carries in real time), the
// parties' (party-cpu/call-s), and how far the line's clock fell behind
// (late: a call's mean real time over its line time / speed; 1 is on
// time).
// Tune with LINE_BENCH_CALLS (default 20), LINE_BENCH_SPEED (5) and
// LINE_BENCH_SECONDS of line time per call (10).
func BenchmarkSwitch(b *testing.B) {
	calls, speed, seconds := envInt("LINE_BENCH_CALLS", 20), envInt("LINE_BENCH_SPEED", 5), envInt("LINE_BENCH_SECONDS", 10)
	for range b.N {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperSwitch$", "-test.count=1")
		cmd.Env = append(os.Environ(), "LINE_HELPER_SPEED="+strconv.Itoa(speed))
		out, err := cmd.StdoutPipe()
		if err != nil {
			b.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		addr, err := bufio.NewReader(out).ReadString('\n')
		if err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			b.Fatalf("reading the switch's address: %v", err)
		}
		addr = addr[:len(addr)-1]
		go func() { // drain the test's own output
			var buf [512]byte
			for {
				if _, err := out.Read(buf[:]); err != nil {
					return
				}
			}
		}()
		cpu0 := selfCPU()
		elapsed := runCalls(b, addr, calls, seconds)
		partyCPU := selfCPU() - cpu0
		cmd.Process.Signal(os.Interrupt)
		if err := cmd.Wait(); err != nil {
			b.Fatalf("switch process: %v", err)
		}
		switchCPU := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
		callSeconds := float64(calls * seconds)
		b.ReportMetric(switchCPU.Seconds()/callSeconds, "switch-cpu/call-s")
		b.ReportMetric(partyCPU.Seconds()/callSeconds, "party-cpu/call-s")
		b.ReportMetric(elapsed.Seconds()*float64(speed)/float64(seconds), "late")
		b.ReportMetric(float64(calls*speed), "calls-in-real-time")
	}
}

// runCalls connects calls calls to one listener and has both parties of
// each send a tone and read for seconds of line time; it returns the
// mean real time of a call.
func runCalls(b *testing.B, addr string, calls, seconds int) time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	l, err := Listen(ctx, addr, "1", &ListenOptions{Lines: calls})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	n := seconds * audio.Rate
	src := tone(1000, -10, n)
	// Both send all the time; the caller hangs up after n samples, the
	// callee reads until then.
	talk := func(c *Call, caller bool) {
		go c.Write(src)
		buf := make([]float64, 1024)
		for got := 0; !caller || got < n; {
			k, err := c.Read(buf)
			if err != nil {
				if caller || !errors.Is(err, ErrHangup) {
					b.Error(err)
				}
				return
			}
			got += k
		}
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var total time.Duration // of the callers' calls, from answer to hangup
	for range calls {
		wg.Add(2)
		go func() {
			defer wg.Done()
			c, err := l.Accept(ctx)
			if err != nil {
				b.Error(err)
				return
			}
			talk(c, false)
		}()
		go func() {
			defer wg.Done()
			c, err := Dial(ctx, addr, "1", nil)
			if err != nil {
				b.Error(err)
				return
			}
			start := time.Now()
			talk(c, true)
			mu.Lock()
			total += time.Since(start)
			mu.Unlock()
			c.Hangup()
		}()
	}
	wg.Wait()
	return total / time.Duration(calls)
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkImpair is the signal processing alone, one direction of a call
// in 20 ms frames: the floor of the switch's cost (it runs two per call).
func BenchmarkImpair(b *testing.B) {
	l, err := impair.New(benchLine)
	if err != nil {
		b.Fatal(err)
	}
	in := tone(1000, -10, frameLen)
	b.ResetTimer()
	for range b.N {
		for range audio.Rate / frameLen {
			l.Process(in)
		}
	}
	b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "cpu/direction-s")
}
