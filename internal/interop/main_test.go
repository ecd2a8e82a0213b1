//go:build pcsc && cgo

package interop

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"cardlink/internal/card"
	"cardlink/internal/card/nvm"
	"cardlink/internal/cardfile"
	"cardlink/internal/reader/pcsc"
)

// The reader names pcscd gives vpcd's two slots.
const (
	readerName  = "Virtual PCD 00 00" // the attached card file
	spareReader = "Virtual PCD 00 01" // in-process cards of single tests
)

// Files of the system pcscd (fixed in pcsc-lite 1.9: PCSCLITE_CSOCK_NAME
// moves the client's socket, not the daemon's).
const (
	pcscdSocket = "/run/pcscd/pcscd.comm"
	pcscdPID    = "/run/pcscd/pcscd.pid"
)

// Bounds on the harness.
const (
	buildTimeout = 5 * time.Minute  // go build of cardlink
	readyTimeout = 30 * time.Second // pcscd socket, card in the reader
	stopTimeout  = 10 * time.Second // a child's exit after SIGTERM
	toolTimeout  = 60 * time.Second // one external tool run
)

// The card the harness issues.
const (
	walletPIN = "1234"
	walletPUK = "12345678"
)

// h is the harness TestMain sets up: a pcscd of our own with vpcd on free
// ports, and a fresh card file attached by the cardlink binary.
var h harness

type harness struct {
	skip string // why every test skips; "" when the harness is up

	dir       string // temporary directory for everything
	bin       string // the cardlink binary
	issuerDir string
	cardPath  string
	port      int // vpcd's first slot; the spare slot is port+1
	atr       []byte

	pcscdArgs  []string
	pcscd      *exec.Cmd
	pcscdDone  chan error
	attach     *exec.Cmd
	attachDone chan error
}

func TestMain(m *testing.M) {
	// Children die with the thread that started them (Pdeathsig): start
	// them all from the main thread, which lives as long as the process.
	runtime.LockOSThread()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	err := h.setup()
	var skip *skipError
	switch {
	case errors.As(err, &skip):
		h.skip = skip.reason
	case err != nil:
		fmt.Fprintf(os.Stderr, "interop: setting up: %v\n", err)
		h.teardown()
		h.dumpLogs()
		return 1
	}
	code := m.Run()
	if err := h.teardown(); err != nil {
		fmt.Fprintf(os.Stderr, "interop: tearing down: %v\n", err)
		code = 1
	}
	if code != 0 {
		h.dumpLogs()
	}
	if h.dir != "" {
		os.RemoveAll(h.dir)
	}
	return code
}

type skipError struct{ reason string }

func (e *skipError) Error() string { return e.reason }

// need skips t when the harness is not up.
func (h *harness) need(t testing.TB) {
	t.Helper()
	if h.skip != "" {
		t.Skip(h.skip)
	}
}

func (h *harness) setup() error {
	if _, err := exec.LookPath("pcscd"); err != nil {
		return &skipError{"pcscd not installed: run scripts/pcsc-deps.sh (Debian packages pcscd, vsmartcard-vpcd, opensc, ...)"}
	}
	lib := vpcdDriver()
	if _, err := os.Stat(lib); err != nil {
		return &skipError{"vsmartcard's vpcd driver not installed (" + lib + "): run scripts/pcsc-deps.sh"}
	}
	if os.Geteuid() != 0 {
		return &skipError{"the interop tests run their own pcscd, whose socket is " + pcscdSocket + ": run them as root"}
	}
	if err := clearStalePcscd(); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "cardlink-interop-")
	if err != nil {
		return err
	}
	h.dir = dir
	if h.port, err = freePortPair(); err != nil {
		return err
	}
	conf := filepath.Join(dir, "reader.conf.d")
	if err := os.Mkdir(conf, 0o755); err != nil {
		return err
	}
	vpcdConf := fmt.Sprintf("FRIENDLYNAME \"Virtual PCD\"\nDEVICENAME   /dev/null:0x%X\nLIBPATH      %s\nCHANNELID    0x%X\n", h.port, lib, h.port)
	if err := os.WriteFile(filepath.Join(conf, "vpcd"), []byte(vpcdConf), 0o644); err != nil {
		return err
	}
	h.atr, err = cardATR()
	if err != nil {
		return err
	}

	// The card: issuer and card made by the cardlink binary itself.
	if err := h.build(); err != nil {
		return err
	}
	h.issuerDir = filepath.Join(dir, "issuer")
	h.cardPath = filepath.Join(dir, "interop.card")
	if out, err := h.cardlink("issuer", "init", "--dir", h.issuerDir); err != nil {
		return fmt.Errorf("cardlink issuer init: %v\n%s", err, out)
	}
	if out, err := h.cardlink("card", "new", "--issuer", h.issuerDir, "--out", h.cardPath, "--pin", walletPIN, "--puk", walletPUK); err != nil {
		return fmt.Errorf("cardlink card new: %v\n%s", err, out)
	}

	// pcscd in the foreground, with our vpcd configuration.
	h.pcscdArgs = []string{"--foreground", "--debug", "--apdu", "--config", conf}
	h.pcscd, h.pcscdDone, err = h.start("pcscd.log", "pcscd", h.pcscdArgs...)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	if err := waitSocket(ctx, h.pcscdDone); err != nil {
		return fmt.Errorf("waiting for pcscd: %w", err)
	}

	// The card goes into the first slot.
	h.attach, h.attachDone, err = h.start("attach.log", h.bin, "card", "attach", "--card", h.cardPath, "--vpcd", fmt.Sprintf("127.0.0.1:%d", h.port))
	if err != nil {
		return err
	}
	if err := waitCard(ctx, readerName); err != nil {
		return fmt.Errorf("waiting for the card in %q: %w", readerName, err)
	}
	return nil
}

// vpcdDriver returns the vpcd IFD handler named in the system's reader
// configuration.
func vpcdDriver() string {
	const fallback = "/usr/lib/pcsc/drivers/serial/libifdvpcd.so"
	b, err := os.ReadFile("/etc/reader.conf.d/vpcd")
	if err != nil {
		return fallback
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == "LIBPATH" {
			return f[1]
		}
	}
	return fallback
}

// clearStalePcscd refuses to run next to a live pcscd and removes what a
// dead one left behind.
func clearStalePcscd() error {
	if b, err := os.ReadFile(pcscdPID); err == nil {
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		if pid > 0 && syscall.Kill(pid, 0) == nil {
			return fmt.Errorf("a pcscd (pid %d) is running already; the interop tests start their own: stop it first (systemctl stop pcscd.socket pcscd, or kill %d)", pid, pid)
		}
	}
	if conn, err := net.Dial("unix", pcscdSocket); err == nil {
		conn.Close()
		return fmt.Errorf("something serves %s already (a pcscd under systemd socket activation?); stop it first (systemctl stop pcscd.socket pcscd)", pcscdSocket)
	}
	for _, f := range []string{pcscdPID, pcscdSocket} {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("removing stale %s: %w", f, err)
		}
	}
	return nil
}

// freePortPair returns a loopback port p such that p and p+1 are free now
// (vpcd listens on both, one per slot).
func freePortPair() (int, error) {
	for range 20 {
		l1, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		p := l1.Addr().(*net.TCPAddr).Port
		l2, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p+1))
		l1.Close()
		if err == nil {
			l2.Close()
			return p, nil
		}
	}
	return 0, errors.New("no two free consecutive ports")
}

// cardATR returns the ATR of a cardlink card, built in memory.
func cardATR() ([]byte, error) {
	c, err := newMemCard()
	if err != nil {
		return nil, err
	}
	return c.ATR(), nil
}

// newMemCard returns a blank cardlink card with NVM in memory.
func newMemCard() (*card.Card, error) {
	med := nvm.NewMemMedium(nvm.MediumSize(cardfile.Capacity))
	if err := nvm.Format(med, cardfile.Capacity); err != nil {
		return nil, err
	}
	mem, err := nvm.Open(med)
	if err != nil {
		return nil, err
	}
	return card.New(card.Config{NVM: mem, Applets: cardfile.Applets()})
}

// build builds the cardlink binary into h.dir.
func (h *harness) build() error {
	// go test puts its own toolchain first in PATH.
	gotool, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("building cardlink: %w", err)
	}
	h.bin = filepath.Join(h.dir, "cardlink")
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, gotool, "build", "-tags", "pcsc", "-o", h.bin, "cardlink/cmd/cardlink")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("building cardlink: %v\n%s", err, out)
	}
	return nil
}

// cardlink runs the cardlink binary to completion.
func (h *harness) cardlink(args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), toolTimeout)
	defer cancel()
	return exec.CommandContext(ctx, h.bin, args...).CombinedOutput()
}

// start starts a long-running child with its output in h.dir/logName; it
// is killed if this process dies. done receives its exit.
func (h *harness) start(logName, name string, args ...string) (*exec.Cmd, chan error, error) {
	log, err := os.Create(filepath.Join(h.dir, logName))
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, nil, fmt.Errorf("starting %s: %w", name, err)
	}
	done := make(chan error, 1)
	go func() {
		err := cmd.Wait()
		log.Close()
		done <- err
	}()
	return cmd, done, nil
}

// waitSocket waits until pcscd accepts connections on its socket.
func waitSocket(ctx context.Context, exited chan error) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if conn, err := net.Dial("unix", pcscdSocket); err == nil {
			conn.Close()
			return nil
		}
		select {
		case err := <-exited:
			exited <- err
			return fmt.Errorf("pcscd exited: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// waitCard waits until pcscd lists name and it holds a card.
func waitCard(ctx context.Context, name string) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		r, err := pcsc.Open(ctx, name)
		if err == nil {
			if err := r.Wait(ctx, false); err == nil {
				return nil
			} else if ctx.Err() != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-tick.C:
		}
	}
}

// stop sends SIGTERM to a child and waits for its exit, killing it when it
// does not stop in time.
func stop(cmd *exec.Cmd, done chan error) error {
	if cmd == nil {
		return nil
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		return err
	case <-time.After(stopTimeout):
		cmd.Process.Kill()
		<-done
		return fmt.Errorf("%s did not stop within %v of SIGTERM", cmd.Path, stopTimeout)
	}
}

// teardown stops the card, then pcscd. "cardlink card attach" must exit 0
// on SIGTERM and must have logged its connection.
func (h *harness) teardown() error {
	var errs []error
	if h.attach != nil {
		if err := stop(h.attach, h.attachDone); err != nil {
			errs = append(errs, fmt.Errorf("cardlink card attach: %w", err))
		}
		log, _ := os.ReadFile(filepath.Join(h.dir, "attach.log"))
		for _, want := range []string{"card attached to vpcd", "card power event", "stopped"} {
			if !bytes.Contains(log, []byte(want)) {
				errs = append(errs, fmt.Errorf("cardlink card attach: log lacks %q", want))
			}
		}
		h.attach = nil
	}
	if h.pcscd != nil {
		if err := stop(h.pcscd, h.pcscdDone); err != nil {
			errs = append(errs, fmt.Errorf("pcscd: %w", err))
		}
		h.pcscd = nil
	}
	return errors.Join(errs...)
}

// dumpLogs prints the tail of the children's logs.
func (h *harness) dumpLogs() {
	for _, name := range []string{"attach.log", "pcscd.log"} {
		b, err := os.ReadFile(filepath.Join(h.dir, name))
		if err != nil {
			continue
		}
		if len(b) > 8000 {
			b = b[len(b)-8000:]
		}
		fmt.Fprintf(os.Stderr, "--- %s (tail)\n%s\n", name, b)
	}
}

// tool runs an external program, bounded by toolTimeout, and returns its
// combined output. It skips t when the program is not installed.
func tool(t testing.TB, name string, args ...string) (string, error) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Skipf("%s not installed: run scripts/pcsc-deps.sh", name)
	}
	ctx, cancel := context.WithTimeout(t.Context(), toolTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = t.TempDir()
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("%w (after %v)", ctx.Err(), toolTimeout)
	}
	return string(out), err
}

// mustTool is tool that fails t when the program fails.
func mustTool(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := tool(t, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// readerIndex returns the number opensc-tool gives name.
func readerIndex(t testing.TB, name string) string {
	t.Helper()
	out := mustTool(t, "opensc-tool", "--list-readers")
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) > 2 && strings.HasSuffix(line, name) {
			return f[0]
		}
	}
	t.Fatalf("opensc-tool --list-readers does not list %q:\n%s", name, out)
	return ""
}
