package cli

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"cardlink/internal/cardfile"
	"cardlink/internal/channel"
	"cardlink/internal/device"
	"cardlink/internal/iso7816"
	"cardlink/internal/link"
	"cardlink/internal/protocol"
	"cardlink/internal/txn"
	"cardlink/internal/wallet"
)

// deviceMemoryFile is the device memory's file name in a device directory.
const deviceMemoryFile = "device.nvm"

func deviceCommand() *command {
	g := &command{
		name:    "device",
		summary: "provision a device; run it, or authenticate and pay through it",
		subs: []*command{deviceProvisionCommand(), deviceRunCommand(), deviceScriptCommand(), deviceSettingsCommand(),
			deviceAuthCommand(), deviceBuyCommand(), deviceLoadCommand(), deviceUnloadCommand(), deviceInlineCommand()},
	}
	// 'cardlink device --card FILE ...' (flags, no subcommand) runs the
	// interactive device, as 'cardlink device run' does; anything else is
	// the group's.
	g.run = func(e *env, args []string) error {
		if len(args) > 0 && strings.HasPrefix(args[0], "-") {
			switch args[0] {
			case "-h", "-help", "--help":
			default:
				return deviceRun(e, args)
			}
		}
		return dispatch(e, &command{name: g.name, summary: g.summary, subs: g.subs}, []string{"cardlink"}, args)
	}
	return g
}

const deviceProvisionHelp = `
Creates a device in DEVDIR: its memory file (device.nvm) with a new Noise
static key pair, registers the public key with the server's HTTP API
(POST /v1/devices, with the operator key that 'cardlink server' wrote to
its data directory), and pins the server keys the server answers with.
From then on the device talks only to a server holding one of those keys.

The operator key is read from --operator-key-file, or from --operator-key,
or from CARDLINK_OPERATOR_KEY.`

func deviceProvisionCommand() *command {
	c := &command{name: "provision", summary: "create a device and register it with a server"}
	c.run = func(e *env, args []string) error {
		fs := newFlags(e, "cardlink device provision",
			"cardlink device provision --dir DEVDIR --server ADDR --http URL --operator-key-file FILE [--name NAME]", deviceProvisionHelp)
		dir := fs.String("dir", "", "device directory to create (required)")
		server := fs.String("server", "", "the server's device-listener address, host:port (required)")
		api := fs.String("http", "", "the server's HTTP API base URL, e.g. http://127.0.0.1:7431 (required)")
		keyFile := fs.String("operator-key-file", "", "file holding the operator key")
		keyFlag := fs.String("operator-key", "", "the operator key itself (visible in the process list: prefer --operator-key-file or CARDLINK_OPERATOR_KEY)")
		name := fs.String("name", "", "the device's name on the server (default: the directory's name)")
		timeout := fs.Duration("timeout", 30*time.Second, "how long to wait for the server")
		if err := parse(fs, args); err != nil {
			return err
		}
		if err := required(fs, "dir", "server", "http"); err != nil {
			return err
		}
		if _, _, err := net.SplitHostPort(*server); err != nil {
			return usagef("device provision: --server %q: want host:port", *server)
		}
		key := strings.TrimSpace(*keyFlag)
		if key == "" { // not the flag's default, which -h would print
			key = strings.TrimSpace(os.Getenv("CARDLINK_OPERATOR_KEY"))
		}
		if *keyFile != "" {
			b, err := os.ReadFile(*keyFile)
			if err != nil {
				return fmt.Errorf("reading operator key: %w", err)
			}
			key = strings.TrimSpace(string(b))
		}
		if key == "" {
			return withHint(usagef("device provision: no operator key"),
				"pass --operator-key-file DATA/operator.key (written by 'cardlink server')")
		}
		if *name == "" {
			*name = filepath.Base(filepath.Clean(*dir))
		}
		path := filepath.Join(*dir, deviceMemoryFile)
		if _, err := os.Stat(path); err == nil {
			return fmt.Errorf("device provision: %s already exists; refusing to replace a device's identity", path)
		}
		static, err := channel.GenerateKey(nil)
		if err != nil {
			return err
		}
		// Make the memory file first, so that a directory we cannot write
		// fails before the server knows the key; remove it on failure.
		if err := os.MkdirAll(*dir, 0o700); err != nil {
			return fmt.Errorf("creating device directory: %w", err)
		}
		mem, err := device.CreateMemory(path)
		if err != nil {
			return err
		}
		ok := false
		defer func() {
			mem.Close()
			if !ok {
				os.Remove(path)
			}
		}()
		ctx, cancel := context.WithTimeout(e.ctx, *timeout)
		defer cancel()
		reg, err := registerDevice(ctx, *api, key, *name, static.Public)
		if err != nil {
			return err
		}
		id := device.Identity{ID: reg.ID, Static: static, ServerKeys: reg.keys, Server: *server}
		if err := mem.SetIdentity(id); err != nil {
			return withHint(err, "the server registered device "+reg.ID+"; revoke it (POST /v1/devices/"+reg.ID+"/revoke)")
		}
		ok = true
		fmt.Fprintf(e.stdout, "device %s provisioned in %s\n", reg.ID, *dir)
		fmt.Fprintf(e.stdout, "server %s, %d pinned key(s)\n", *server, len(reg.keys))
		return nil
	}
	return c
}

// registration is the API's answer to POST /v1/devices.
type registration struct {
	ID         string   `json:"id"`
	ServerKeys []string `json:"server_keys"`
	keys       [][]byte
}

// registerDevice registers the static public key with the HTTP API.
func registerDevice(ctx context.Context, base, operatorKey, name string, pub []byte) (*registration, error) {
	body, _ := json.Marshal(map[string]string{"name": name, "static_key": base64.StdEncoding.EncodeToString(pub)})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(base, "/")+"/v1/devices", bytes.NewReader(body))
	if err != nil {
		return nil, usagef("device provision: --http %q: %v", base, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+operatorKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("registering device: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return nil, fmt.Errorf("registering device: %w", err)
	}
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		var p struct {
			Title  string `json:"title"`
			Detail string `json:"detail"`
		}
		msg := resp.Status
		if json.Unmarshal(b, &p) == nil && p.Title != "" {
			msg = p.Title
			if p.Detail != "" {
				msg += ": " + p.Detail
			}
		}
		return nil, fmt.Errorf("registering device: server answered %s", msg)
	}
	var r registration
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("registering device: decoding the answer: %w", err)
	}
	for _, s := range r.ServerKeys {
		k, err := base64.StdEncoding.DecodeString(s)
		if err != nil || len(k) != channel.KeyLen {
			return nil, fmt.Errorf("registering device: the server sent a bad server key %q", s)
		}
		r.keys = append(r.keys, k)
	}
	if r.ID == "" || len(r.keys) == 0 || len(r.keys) > device.MaxServerKeys {
		return nil, fmt.Errorf("registering device: the answer has no id or %d server keys", len(r.keys))
	}
	return &r, nil
}

const deviceAuthHelp = `
Authenticates the holder of the card in FILE to the server the device in
DEVDIR was provisioned for, headless: the device opens its secure channel
(refusing any server but the pinned one), asks for a challenge, has the card
sign it and prints the server's verdict. Exit status 0 means the holder is
authenticated; 1, with a one-line reason, anything else.

Holder verification: --pin (checked by the card), --online-pin (checked by
the server, sent encrypted), --bio FILE (a template matched by the card),
--server-bio FILE (a template matched by the server, where its operator
enrolled one and enabled it: the card signs no verification and the server
sees the template), or none (the server's policy decides whether that is
enough).

The device dials the newest of its pinned server keys and falls back to the
older ones. When the server has rotated its key ('cardlink server-key'), it
tells the device its current keys inside the channel, and the device pins
them in DEVDIR/device.nvm (one atomic update) and says so.`

func deviceAuthCommand() *command {
	c := &command{name: "auth", summary: "authenticate a card holder to the server"}
	c.run = func(e *env, args []string) error {
		fs := newFlags(e, "cardlink device auth",
			"cardlink device auth --card FILE --device DEVDIR [--pin PIN | --online-pin PIN | --bio FILE | --server-bio FILE] [--server ADDR]", deviceAuthHelp)
		hf := addHolderFlags(fs)
		timeout := fs.Duration("timeout", time.Minute, "how long the whole authentication may take")
		if err := parse(fs, args); err != nil {
			return err
		}
		if err := required(fs, "card", "device"); err != nil {
			return err
		}
		opts, err := hf.options("device auth")
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(e.ctx, *timeout)
		defer cancel()
		ds, err := hf.open(ctx, e)
		if err != nil {
			return err
		}
		defer ds.close()
		opts.Memory, opts.Redial = ds.mem, ds.redial
		res, err := device.Authenticate(ctx, ds.link, ds.id, ds.card, opts)
		if res.ServerKeys != nil {
			fmt.Fprintf(e.stdout, "server key rotated: %d key(s) now pinned, newest %s\n", len(res.ServerKeys), base64.StdEncoding.EncodeToString(res.ServerKeys[0]))
		}
		if err != nil {
			return authError(err)
		}
		if !res.OK() {
			msg := fmt.Sprintf("card %s not authenticated: %s", res.CardNumber, res.Code)
			if res.Code == protocol.CodePINIncorrect {
				msg += fmt.Sprintf(" (%d tries left)", res.TriesLeft)
			}
			if res.Code == protocol.CodeCVMNotAccepted && res.Accepted != 0 {
				var flags []string
				for _, m := range []struct {
					cvm  txn.CVM
					flag string
				}{{txn.CVMOfflinePIN, "--pin"}, {txn.CVMOnlinePIN, "--online-pin"}, {txn.CVMBiometric, "--bio"}, {txn.CVMNone, "no verification"}} {
					if res.Accepted.Has(m.cvm) {
						flags = append(flags, m.flag)
					}
				}
				return withHint(errors.New(msg), "the server accepts: "+strings.Join(flags, ", "))
			}
			return errors.New(msg)
		}
		fmt.Fprintf(e.stdout, "card %s authenticated: %s, counter %d\n", res.CardNumber, res.CVM, res.Counter)
		return nil
	}
	return c
}

// authError adds hints to the common failures of device auth.
func authError(err error) error {
	switch {
	case errors.Is(err, device.ErrServerRefused):
		return withHint(err, "the server is not the one this device was provisioned for, or it does not know (or has revoked) the device",
			"if the server's key was rotated and the old key retired before this device connected, provision the device again")
	case errors.Is(err, iso7816.ErrBlocked):
		return withHint(err, "unblock the PIN with the PUK")
	}
	return err
}

// holderFlags are the flags that device auth and device buy share: the
// card, the device and how the holder is verified.
type holderFlags struct {
	card, dir, server         *string
	pin, onlinePIN, bio, sbio *string
}

func addHolderFlags(fs *flag.FlagSet) *holderFlags {
	return &holderFlags{
		card:      fs.String("card", "", "card file (required)"),
		dir:       fs.String("device", "", "device directory made by 'cardlink device provision' (required)"),
		server:    fs.String("server", "", "the server's device-listener address (default: the provisioned one)"),
		pin:       fs.String("pin", "", "PIN for the card to verify (offline PIN)"),
		onlinePIN: fs.String("online-pin", "", "PIN for the server to verify (online PIN)"),
		bio:       fs.String("bio", "", "file holding a biometric template for the card to match"),
		sbio:      fs.String("server-bio", "", "file holding a biometric template for the server to match"),
	}
}

// options returns the holder verification the flags ask for.
func (h *holderFlags) options(cmd string) (device.AuthOptions, error) {
	opts := device.AuthOptions{PIN: *h.pin, OnlinePIN: *h.onlinePIN}
	n := 0
	for _, s := range []string{*h.pin, *h.onlinePIN, *h.bio, *h.sbio} {
		if s != "" {
			n++
		}
	}
	if n > 1 {
		return opts, usagef("%s: give at most one of --pin, --online-pin, --bio and --server-bio", cmd)
	}
	if *h.bio != "" {
		t, err := readTemplate(*h.bio)
		if err != nil {
			return opts, err
		}
		opts.Biometric = t
	}
	if *h.sbio != "" {
		t, err := readTemplate(*h.sbio)
		if err != nil {
			return opts, err
		}
		opts.ServerBiometric = t
	}
	return opts, nil
}

// deviceSession is an open device memory, card and link to the server.
type deviceSession struct {
	id     device.Identity
	mem    *device.Memory
	card   *wallet.Client
	link   link.Link
	redial func(ctx context.Context) (link.Link, error)
	closes []func() error
}

func (d *deviceSession) close() {
	for i := len(d.closes) - 1; i >= 0; i-- {
		d.closes[i]()
	}
}

// open opens the device memory (its identity; a rotation of the server
// key updates the pinned keys there), the card's wallet applet and a link
// to the server. The caller closes the session.
func (h *holderFlags) open(ctx context.Context, e *env) (_ *deviceSession, err error) {
	ds := &deviceSession{}
	defer func() {
		if err != nil {
			ds.close()
		}
	}()
	mem, err := device.OpenMemory(filepath.Join(*h.dir, deviceMemoryFile))
	if err != nil {
		return nil, withHint(err, "create a device with 'cardlink device provision --dir "+*h.dir+" ...'")
	}
	ds.closes = append(ds.closes, mem.Close)
	ds.mem = mem
	if ds.id, err = mem.Identity(); err != nil {
		return nil, err
	}
	if *h.server != "" {
		ds.id.Server = *h.server
	}
	f, err := cardfile.Open(*h.card)
	if err != nil {
		return nil, err
	}
	ds.closes = append(ds.closes, f.Close)
	conn, err := f.Connect(e.ctx)
	if err != nil {
		return nil, err
	}
	ds.closes = append(ds.closes, conn.Close)
	if ds.card, err = wallet.Select(e.ctx, conn); err != nil {
		return nil, err
	}
	server := ds.id.Server
	ds.redial = func(ctx context.Context) (link.Link, error) {
		var d net.Dialer
		nc, err := d.DialContext(ctx, "tcp", server)
		if err != nil {
			return nil, fmt.Errorf("connecting to server: %w", err)
		}
		return nc, nil
	}
	nc, err := ds.redial(ctx)
	if err != nil {
		return nil, err
	}
	ds.closes = append(ds.closes, nc.Close)
	ds.link = nc
	return ds, nil
}
