//go:build unix

package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"cardlink/internal/hal/printer"
)

var tuiCapture = flag.String("tui-capture", "", "write the terminal as it shows the approved purchase to this file (for the docs)")

// tuiWait bounds each wait for a screen in the terminal.
const tuiWait = 30 * time.Second

// TestDeviceTUI runs 'cardlink device run' in a real terminal (tmux) against
// a real 'cardlink server': a holder types a merchant's reference code,
// reviews the purchase, types the PIN (masked), approves, and the server
// records the payment; the holder clicks OK with the mouse, pages the
// menu with F1, ends the session, takes the card out, resizes the window
// too small and back, and quits with Ctrl-C, which restores the terminal.
func TestDeviceTUI(t *testing.T) {
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Skip("tmux is not installed: the device's terminal UI is not tested in a real terminal (CI installs tmux)")
	}
	bin, err := exec.LookPath("cardlink") // the test binary, put on $PATH by testscript.Main
	if err != nil {
		t.Fatalf("finding cardlink: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	dir := t.TempDir()
	r := &cmdRunner{t: t, ctx: ctx, bin: bin, dir: dir}

	// A server on free loopback ports.
	srv := exec.CommandContext(ctx, bin, "server", "--data", "data", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--addr-file", "addrs")
	srv.Dir = dir
	var srvOut bytes.Buffer
	srv.Stdout, srv.Stderr = &srvOut, &srvOut
	if err := srv.Start(); err != nil {
		t.Fatalf("starting server: %v", err)
	}
	srvDone := make(chan error, 1)
	go func() { srvDone <- srv.Wait() }()
	defer func() {
		srv.Process.Signal(os.Interrupt)
		select {
		case <-srvDone:
		case <-time.After(tuiWait):
			srv.Process.Kill()
			<-srvDone
			t.Errorf("the server did not stop on SIGINT; its output:\n%s", srvOut.String())
		}
	}()
	addrs := r.waitFile("addrs")
	devAddr := submatch(t, `(?m)^device (\S+)$`, addrs)
	api := submatch(t, `(?m)^http (\S+)$`, addrs)

	// A device, a card the server has seen, a merchant with an item,
	// money in the holder's account and a purchase request.
	r.run("device", "provision", "--dir", "dev", "--name", "kiosk", "--server", devAddr, "--http", api, "--operator-key-file", "data/operator.key")
	r.run("card", "new", "--issuer", "data/issuer", "--out", "alice.card", "--pin", "1234", "--puk", "12345678", "--number", "9470000000000002", "--piv=false")
	r.run("device", "auth", "--card", "alice.card", "--device", "dev", "--pin", "1234")
	r.run("merchant", "create", "--name", "Corner Cafe", "--http", api, "--operator-key-file", "data/operator.key", "--key-out", "cafe.key")
	out := r.run("merchant", "item", "add", "--http", api, "--key-file", "cafe.key", "--name", "Gift voucher", "--price", "12.50", "--stock", "5", "--deliver", "voucher", "--payload", "GIFT-2026-XYZ")
	item := submatch(t, `(?m)^item (item_\w+) added`, out)
	r.run("account", "deposit", "--http", api, "--operator-key-file", "data/operator.key", "--card", "9470000000000002", "--amount", "50.00")
	out = r.run("merchant", "purchase", "--http", api, "--key-file", "cafe.key", "--item", item)
	pur := submatch(t, `(?m)^purchase (pur_\w+) `, out)
	code := strings.ReplaceAll(submatch(t, `(?m)^reference (\d{4} \d{4})$`, out), " ", "")

	// Without a terminal (a new session has no controlling tty) it says
	// so, with the usual one-line error.
	notty := exec.CommandContext(ctx, bin, "device", "run", "--card", "alice.card", "--device", "dev")
	notty.Dir = dir
	notty.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	notty.Env = append(os.Environ(), "TERM=xterm")
	if out, err := notty.CombinedOutput(); err == nil || !strings.Contains(string(out), "cardlink: tui: initializing the terminal: ") || !strings.Contains(string(out), "hint: run it in a terminal") {
		t.Errorf("device run without a terminal: %v\n%s", err, out)
	}

	// The device in an 80×30 terminal.
	// A built-in printer (the connector configuration) and a battery at 80%.
	if err := os.WriteFile(filepath.Join(dir, "peripherals.json"), []byte(`{"printer": {"attach": "builtin", "path": "receipts.escpos", "cut": true}, "sensor": {"attach": "none"}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	command := fmt.Sprintf("%s device run --card alice.card --device dev --peripherals peripherals.json --power battery --level 80 --log device.log 2>stderr.txt; echo exit status $?; exec cat", shellQuote(bin))
	tm := startTmux(t, dir, command)

	menu := tm.wait("the menu", "1 Sign in", "2 Buy ref", "Card  in", "Power", "battery", "████████░░")
	tm.logScreen("menu", menu)
	tm.send("2")
	tm.wait("the reference code entry", "Reference code:")
	tm.send(code[:4])
	tm.wait("four digits of the code", code[:4]+"____")
	tm.send(code[4:], "Enter")
	review := tm.wait("the review", "Corner Cafe", "Gift voucher", "12.50 EUR", "OK yes   CANCEL no")
	tm.logScreen("review", review)
	tm.send("Enter")
	tm.wait("the PIN entry", "PIN: ")
	tm.send("12")
	tm.wait("two stars", "PIN: **  ")
	tm.send("34")
	pin := tm.wait("the masked PIN", "PIN: ****")
	tm.logScreen("PIN", pin)
	if strings.Contains(pin, "1234") {
		t.Errorf("the PIN shows in clear:\n%s", pin)
	}
	tm.send("Enter")
	paid := tm.wait("the result", "Paid 12.50 EUR", "Corner Cafe")
	tm.logScreen("approved", paid)
	if f := *tuiCapture; f != "" {
		if err := os.WriteFile(f, []byte(paid), 0o644); err != nil {
			t.Errorf("writing the capture: %v", err)
		}
	}

	// The server has it.
	out = r.run("merchant", "status", "--http", api, "--key-file", "cafe.key", "--wait", "30s", pur)
	if !strings.Contains(out, pur+" approved: 12.50 EUR, Gift voucher") {
		t.Errorf("merchant status after the approval:\n%s", out)
	}

	// The printer printed the receipt.
	b, err := os.ReadFile(filepath.Join(dir, "receipts.escpos"))
	if err != nil {
		t.Fatalf("reading the receipt: %v", err)
	}
	doc, err := printer.Decode(b)
	if err != nil {
		t.Fatalf("decoding the receipt: %v", err)
	}
	if text := doc.Text(); !strings.Contains(text, "Corner Cafe") || !strings.Contains(text, "12.50") || doc.Cuts != 1 {
		t.Errorf("the receipt (%d cuts):\n%s\nwant Corner Cafe, 12.50 and one cut", doc.Cuts, text)
	}

	// OK with the mouse: a click on the OK key goes back to the menu.
	tm.click(paid, "[   OK   ]")
	tm.wait("the menu after a click on OK", "1 Sign in")
	// F1 pages the menu, and back.
	tm.send("F1")
	tm.wait("the second menu page", "7 Log", "9 Change PIN")
	tm.send("F1")
	tm.wait("the first menu page", "1 Sign in")
	// Cancel ends the session; i takes the card out.
	tm.send("Escape")
	tm.wait("the end of the session", "Thank you", "Remove card")
	tm.send("i")
	tm.wait("the idle screen", "Insert card", "Card  out")

	// Too small, then big enough again.
	tm.tmux("resize-window", "-t", tm.target, "-x", "40", "-y", "15")
	tm.wait("the too-small message", "Terminal too small")
	tm.tmux("resize-window", "-t", tm.target, "-x", "80", "-y", "30")
	tm.wait("the device again", "Insert card", "[   OK   ]")

	// Ctrl-C switches off and restores the terminal: the frame is gone
	// from the pane (tcell left the alternate screen), the shell's echo
	// shows, and the exit status is 0. (The shell then waits in cat: tmux
	// may lose a dead pane's last output, and kill-server ends it.)
	tm.send("C-c")
	end := tm.wait("the exit", "exit status ")
	if !strings.Contains(end, "exit status 0") {
		t.Errorf("after Ctrl-C the terminal shows\n%s\nwant exit status 0%s", end, tm.diagnostics())
	}
	if strings.Contains(end, "Insert card") || strings.Contains(end, "[   OK   ]") {
		t.Errorf("after exit the terminal still shows the device:\n%s", end)
	}

	// SIGTERM, as a service manager or kill sends it, also switches the
	// device off and restores the terminal.
	// This one starts with the card out of the reader.
	tm2 := tm.session("term", strings.Replace(command, " device run ", " device run --inserted=false ", 1))
	tm2.wait("the idle screen", "Insert card", "Card  out")
	tm2.send("i")
	tm2.wait("the menu", "1 Sign in", "Card  in")
	sh := strings.TrimSpace(tm2.tmux("display-message", "-p", "-t", tm2.target, "#{pane_pid}"))
	children, err := os.ReadFile("/proc/" + sh + "/task/" + sh + "/children")
	if err != nil || len(strings.Fields(string(children))) != 1 {
		t.Skipf("cannot find the device's process under the shell %s (%v, %q): SIGTERM not tested", sh, err, children)
	}
	pid, err := strconv.Atoi(strings.Fields(string(children))[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatalf("sending SIGTERM to %d: %v", pid, err)
	}
	end = tm2.wait("the exit on SIGTERM", "exit status ")
	if !strings.Contains(end, "exit status 0") || strings.Contains(end, "[   OK   ]") {
		t.Errorf("after SIGTERM the terminal shows\n%s\nwant exit status 0 and no device%s", end, tm2.diagnostics())
	}
}

// cmdRunner runs cardlink commands in a directory.
type cmdRunner struct {
	t   *testing.T
	ctx context.Context
	bin string
	dir string
}

// run runs cardlink with args and returns its standard output; it fails
// the test if the command fails.
func (c *cmdRunner) run(args ...string) string {
	c.t.Helper()
	cmd := exec.CommandContext(c.ctx, c.bin, args...)
	cmd.Dir = c.dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		c.t.Fatalf("cardlink %s: %v\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// waitFile waits until name exists in the directory and is not empty,
// and returns what it holds.
func (c *cmdRunner) waitFile(name string) string {
	c.t.Helper()
	deadline := time.Now().Add(tuiWait)
	for {
		if b, err := os.ReadFile(filepath.Join(c.dir, name)); err == nil && len(b) > 0 {
			return string(b)
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%s still missing or empty after %v", name, tuiWait)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// submatch returns the first submatch of re in s, failing the test if
// there is none.
func submatch(t *testing.T, re, s string) string {
	t.Helper()
	m := regexp.MustCompile(re).FindStringSubmatch(s)
	if m == nil {
		t.Fatalf("no match for %s in:\n%s", re, s)
	}
	return m[1]
}

// tmuxSession is a command running in a detached tmux session on a
// server of its own (its own socket), killed at the end of the test.
type tmuxSession struct {
	t      *testing.T
	dir    string
	socket string
	target string
	env    []string
}

// startTmux starts command (a shell command line) in an 80×30 window,
// without a status line.
func startTmux(t *testing.T, dir, command string) *tmuxSession {
	t.Helper()
	conf := filepath.Join(dir, "tmux.conf")
	if err := os.WriteFile(conf, []byte("set -g status off\nset -g default-terminal screen\nset -g escape-time 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TMUX=") && !strings.HasPrefix(kv, "LC_ALL=") && !strings.HasPrefix(kv, "TERM=") {
			env = append(env, kv)
		}
	}
	// tcell draws the frame in UTF-8 when the locale says so.
	env = append(env, "LC_ALL=C.UTF-8", "TERM=xterm")
	s := &tmuxSession{
		t:      t,
		dir:    dir,
		socket: "cardlink-tui-" + strconv.Itoa(os.Getpid()) + "-" + strconv.FormatInt(time.Now().UnixNano(), 36),
		target: "device",
		env:    env,
	}
	s.tmux("-f", conf, "new-session", "-d", "-s", s.target, "-x", "80", "-y", "30", "-c", dir, command)
	t.Cleanup(func() {
		cmd := exec.Command("tmux", "-L", s.socket, "kill-server")
		cmd.Env = s.env
		cmd.Run() // the server may be gone already
	})
	return s
}

// session starts command in another session, name, on the same tmux
// server.
func (s *tmuxSession) session(name, command string) *tmuxSession {
	s.t.Helper()
	n := *s
	n.target = name
	n.tmux("new-session", "-d", "-s", name, "-x", "80", "-y", "30", "-c", s.dir, command)
	return &n
}

// tmux runs a tmux command on the session's server and returns its
// output.
func (s *tmuxSession) tmux(args ...string) string {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), tuiWait)
	defer cancel()
	cmd := exec.CommandContext(ctx, "tmux", append([]string{"-u", "-L", s.socket}, args...)...)
	cmd.Env = s.env
	out, err := cmd.CombinedOutput()
	if err != nil {
		s.t.Fatalf("tmux %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// send sends keys as tmux names them (literal text, Enter, Escape,
// F1, C-c...).
func (s *tmuxSession) send(keys ...string) {
	s.t.Helper()
	s.tmux(append([]string{"send-keys", "-t", s.target}, keys...)...)
}

// capture returns the pane's text.
func (s *tmuxSession) capture() string {
	s.t.Helper()
	return s.tmux("capture-pane", "-p", "-t", s.target)
}

// wait polls the pane until it shows every one of texts, and returns
// it; after tuiWait it fails the test with the pane and the device's
// stderr and log.
func (s *tmuxSession) wait(what string, texts ...string) string {
	s.t.Helper()
	deadline := time.Now().Add(tuiWait)
	for {
		screen := s.capture()
		ok := true
		for _, x := range texts {
			if !strings.Contains(screen, x) {
				ok = false
				break
			}
		}
		if ok {
			return screen
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("waiting for %s (%q): after %v the terminal shows\n%s%s", what, texts, tuiWait, screen, s.diagnostics())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// click clicks the left mouse button on label, found in screen, by
// sending the SGR mouse report a terminal would send.
func (s *tmuxSession) click(screen, label string) {
	s.t.Helper()
	for y, line := range strings.Split(screen, "\n") {
		if i := strings.Index(line, label); i >= 0 {
			x := len([]rune(line[:i])) + len([]rune(label))/2
			for _, final := range []string{"M", "m"} { // press, release
				seq := fmt.Sprintf("\x1b[<0;%d;%d%s", x+1, y+1, final)
				args := []string{"send-keys", "-t", s.target, "-H"}
				for _, b := range []byte(seq) {
					args = append(args, fmt.Sprintf("%02x", b))
				}
				s.tmux(args...)
			}
			return
		}
	}
	s.t.Fatalf("no %q on the screen:\n%s", label, screen)
}

// logScreen logs a captured screen, trimmed of blank lines.
func (s *tmuxSession) logScreen(name, screen string) {
	s.t.Logf("%s:\n%s", name, trimScreen(screen))
}

// diagnostics returns the device's stderr and log, for a failure message.
func (s *tmuxSession) diagnostics() string {
	var b strings.Builder
	for _, f := range []string{"stderr.txt", "device.log"} {
		if data, err := os.ReadFile(filepath.Join(s.dir, f)); err == nil && len(data) > 0 {
			fmt.Fprintf(&b, "\n--- %s:\n%s", f, data)
		}
	}
	return b.String()
}

// trimScreen drops the blank lines around a screen and trailing spaces.
func trimScreen(screen string) string {
	var lines []string
	for _, l := range strings.Split(screen, "\n") {
		lines = append(lines, strings.TrimRight(l, " "))
	}
	return strings.Trim(strings.Join(lines, "\n"), "\n")
}

// shellQuote quotes s for sh.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
