package cli

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"cardlink/internal/channel"
	"cardlink/internal/server"
	"cardlink/internal/store"
)

func serverKeyCommand() *command {
	return &command{
		name:    "server-key",
		summary: "list, rotate and retire the server's Noise static keys",
		subs:    []*command{serverKeyListCommand(), serverKeyRotateCommand(), serverKeyRetireCommand()},
	}
}

// serverKeyRotation explains a rotation; every server-key command's help
// ends with it.
const serverKeyRotation = `
Every device pins the server's static public keys when it is provisioned
and talks only to a server holding one of them. To replace the key without
stranding devices:

  1. 'cardlink server-key rotate' adds a new key. Old and new are both
     current: running servers accept either from their next connection on,
     and devices provisioned from now on pin both.
  2. Each device that connects with the old key is told the current keys
     inside its authenticated channel, pins them, and uses the new key from
     then on. Give devices time to connect: a device that does not connect
     during this overlap keeps only the old key.
  3. 'cardlink server-key retire --key OLD' retires the old key. A device
     that still pins only the old key can no longer connect and must be
     provisioned again. The last current key cannot be retired.

The keys live in the store (--store, default the SQLite database in the
data directory --data), shared by every server instance on it. --data and
--store default to CARDLINK_DATA and CARDLINK_STORE, as for 'cardlink
server'.`

// serverKeyFlags adds --data and --store to fs and returns a function that
// opens the store they name after parsing.
func serverKeyFlags(flags *flag.FlagSet) func(ctx context.Context) (store.Store, error) {
	data := flags.String("data", envOr("CARDLINK_DATA", defaultDataDir), "the server's data directory")
	uri := flags.String("store", os.Getenv("CARDLINK_STORE"), "store URI, sqlite:PATH or postgres://... (default sqlite:DATA/cardlink.db)")
	return func(ctx context.Context) (store.Store, error) {
		if *uri == "" {
			if _, err := os.Stat(*data); errors.Is(err, fs.ErrNotExist) {
				return nil, withHint(fmt.Errorf("no data directory %s", *data),
					"run 'cardlink server --data "+*data+"' once to create it, or pass --data or --store")
			}
			*uri = "sqlite:" + filepath.Join(*data, "cardlink.db")
		}
		return store.Open(ctx, *uri)
	}
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

const serverKeyListHelp = `
Lists the server's static public keys (base64), newest first: the newest
key is the one devices dial first, "current" keys are still accepted, and
"retired" keys no longer are. Each line says when the key was added and,
if it was, retired (UTC), so that you can judge how long the overlap has
run before you retire a key.` + "\n" + serverKeyRotation

func serverKeyListCommand() *command {
	c := &command{name: "list", summary: "list the server keys with when each was added and retired"}
	c.run = func(e *env, args []string) error {
		fs := newFlags(e, "cardlink server-key list", "cardlink server-key list [--data DIR] [--store URI]", serverKeyListHelp)
		open := serverKeyFlags(fs)
		if err := parse(fs, args); err != nil {
			return err
		}
		if fs.NArg() > 0 {
			return usagef("server-key list: unexpected argument %q", fs.Arg(0))
		}
		st, err := open(e.ctx)
		if err != nil {
			return err
		}
		defer st.Close()
		keys, err := st.ServerKeyHistory(e.ctx)
		if err != nil {
			return err
		}
		if len(keys) == 0 {
			return withHint(errors.New("the store holds no server key"),
				"'cardlink server' creates one on first start; 'cardlink server-key rotate' adds one")
		}
		newest := true
		for _, k := range keys {
			status := "current"
			switch {
			case !k.RetiredAt.IsZero():
				status = "retired"
			case newest:
				status, newest = "newest", false
			}
			line := fmt.Sprintf("%s  %-7s  added %s", base64.StdEncoding.EncodeToString(k.Public), status, utc(k.Created))
			if !k.RetiredAt.IsZero() {
				line += "  retired " + utc(k.RetiredAt)
			}
			fmt.Fprintln(e.stdout, line)
		}
		return nil
	}
	return c
}

func utc(t time.Time) string {
	if t.IsZero() {
		return "unknown"
	}
	return t.UTC().Format(time.RFC3339)
}

const serverKeyRotateHelp = `
Adds a new server static key, the newest from now on, beside the current
ones. Running servers accept it from their next connection; devices that
connect with an older key learn it then. Retire the old key with 'cardlink
server-key retire' once the devices have moved.` + "\n" + serverKeyRotation

func serverKeyRotateCommand() *command {
	c := &command{name: "rotate", summary: "add a new server key, current beside the old ones"}
	c.run = func(e *env, args []string) error {
		fs := newFlags(e, "cardlink server-key rotate", "cardlink server-key rotate [--data DIR] [--store URI]", serverKeyRotateHelp)
		open := serverKeyFlags(fs)
		if err := parse(fs, args); err != nil {
			return err
		}
		if fs.NArg() > 0 {
			return usagef("server-key rotate: unexpected argument %q", fs.Arg(0))
		}
		st, err := open(e.ctx)
		if err != nil {
			return err
		}
		defer st.Close()
		pub, err := server.RotateKey(e.ctx, st, time.Now())
		if err != nil {
			return err
		}
		keys, err := st.ServerKeys(e.ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "added server key %s\n", base64.StdEncoding.EncodeToString(pub))
		fmt.Fprintf(e.stdout, "%d current key(s); devices on an older key learn the new one when they next connect\n", len(keys))
		return nil
	}
	return c
}

const serverKeyRetireHelp = `
Retires the current server key KEY (base64 as 'cardlink server-key list'
prints it, or 64 hex digits): servers stop accepting it from their next
connection. A device that still pins only KEY — one that did not connect
since the newer key was added — can no longer connect and must be
provisioned again. The last current key cannot be retired: add a new one
first with 'cardlink server-key rotate'.` + "\n" + serverKeyRotation

func serverKeyRetireCommand() *command {
	c := &command{name: "retire", summary: "retire an old server key once devices have moved"}
	c.run = func(e *env, args []string) error {
		fs := newFlags(e, "cardlink server-key retire", "cardlink server-key retire --key KEY [--data DIR] [--store URI]", serverKeyRetireHelp)
		open := serverKeyFlags(fs)
		keyFlag := fs.String("key", "", "the key to retire, base64 or hex (required)")
		if err := parse(fs, args); err != nil {
			return err
		}
		if err := required(fs, "key"); err != nil {
			return err
		}
		if fs.NArg() > 0 {
			return usagef("server-key retire: unexpected argument %q", fs.Arg(0))
		}
		pub, err := parseServerKey(*keyFlag)
		if err != nil {
			return withHint(usagef("server-key retire: --key: %v", err), "copy the key from 'cardlink server-key list'")
		}
		st, err := open(e.ctx)
		if err != nil {
			return err
		}
		defer st.Close()
		err = server.RetireKey(e.ctx, st, pub, time.Now())
		switch {
		case errors.Is(err, server.ErrLastKey):
			return withHint(err, "add a new key first with 'cardlink server-key rotate'")
		case errors.Is(err, store.ErrNotFound):
			return withHint(fmt.Errorf("%s is not a current server key (unknown or already retired)", base64.StdEncoding.EncodeToString(pub)),
				"see 'cardlink server-key list'")
		case err != nil:
			return err
		}
		fmt.Fprintf(e.stdout, "retired server key %s\n", base64.StdEncoding.EncodeToString(pub))
		fmt.Fprintln(e.stdout, "devices that still pin only this key can no longer connect: provision them again")
		return nil
	}
	return c
}

// parseServerKey reads a server public key written as 64 hex digits or in
// base64 (standard or URL alphabet, padded or not).
func parseServerKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if len(s) == 2*channel.KeyLen {
		if b, err := hex.DecodeString(s); err == nil {
			return b, nil
		}
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			if len(b) != channel.KeyLen {
				return nil, fmt.Errorf("%d bytes, want %d", len(b), channel.KeyLen)
			}
			return b, nil
		}
	}
	return nil, errors.New("neither base64 nor 64 hex digits")
}
