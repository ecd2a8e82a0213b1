package cli

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"cardlink/internal/server"
	"cardlink/internal/server/api"
	"cardlink/internal/server/auth"
	"cardlink/internal/server/pki"
	"cardlink/internal/store"
	_ "cardlink/internal/store/postgres" // backend for postgres:// URIs
	_ "cardlink/internal/store/sqlite"   // backend for sqlite: URIs
)

// defaultDataDir is where 'cardlink server' keeps its state when neither
// --data nor CARDLINK_DATA says otherwise: a directory beside where it
// runs, so that a deployment's data stays with the deployment and a first
// run shows plainly what it made.
const defaultDataDir = "cardlink-data"

const serverHelp = `
Runs the cardlink server: the device listener (--listen), where devices open
their Noise channel to authenticate card holders and approve purchases, and
the HTTP API (--http) for operators, relying parties and merchants. Approved
purchases are posted to the ledger in the store; every 10 seconds the server
expires purchase requests whose deadline passed and finishes postings a
crash interrupted. It runs until interrupted (SIGINT or SIGTERM), then
closes its listeners and waits for open connections.

With no flags it uses the data directory ./cardlink-data and, on first
start, creates in it everything it needs: the card issuer (issuer/, as
'cardlink issuer init' would), the SQLite database (cardlink.db), the
server's Noise static key (kept in the database) and the operator API key
(operator.key, mode 0600: keep it secret; 'cardlink device provision' uses
it). Later starts reuse them.

Every flag can also be set in the environment (CARDLINK_DATA, CARDLINK_LISTEN,
CARDLINK_HTTP, CARDLINK_STORE, CARDLINK_ISSUER) or in a JSON config file
(--config, CARDLINK_CONFIG) with the keys "data", "listen", "http", "store"
and "issuer"; a flag beats the environment, which beats the file. A listen
address with port 0 takes a free port; the real addresses are printed, and
written to --addr-file as two lines: "device ADDR" and "http URL".

--server-biometric (or CARDLINK_SERVER_BIOMETRIC=1) lets the server match
biometric templates that operators enrolled for cards (PUT
/v1/cards/{number}/biometric) when a device sends one ('cardlink device
auth --server-bio FILE'). Off by default: with it the server holds and sees
holders' templates, where card-side matching keeps them on the card.
` + ivrHelp

// serverConfig is the server command's configuration.
type serverConfig struct {
	Data   string `json:"data"`
	Listen string `json:"listen"`
	HTTP   string `json:"http"`
	Store  string `json:"store"`
	Issuer string `json:"issuer"`
}

// Validate checks the configuration after defaults were applied.
func (c *serverConfig) Validate() error {
	for _, a := range []struct{ name, addr string }{{"listen", c.Listen}, {"http", c.HTTP}} {
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			return fmt.Errorf("--%s %q: want host:port", a.name, a.addr)
		}
	}
	if c.Data == "" || c.Store == "" || c.Issuer == "" {
		return errors.New("empty data directory, store or issuer")
	}
	return nil
}

func serverCommand() *command {
	c := &command{name: "server", summary: "run the device listener and the HTTP API"}
	c.run = func(e *env, args []string) error {
		fs := newFlags(e, "cardlink server",
			"cardlink server [--data DIR] [--listen ADDR] [--http ADDR] [--store URI] [--issuer DIR] [--config FILE]", serverHelp)
		var cfg serverConfig
		fs.StringVar(&cfg.Data, "data", defaultDataDir, "data directory, created if missing")
		fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:7430", "device listener address")
		fs.StringVar(&cfg.HTTP, "http", "127.0.0.1:7431", "HTTP API address")
		fs.StringVar(&cfg.Store, "store", "", "store URI, sqlite:PATH or postgres://... (default sqlite:DATA/cardlink.db)")
		fs.StringVar(&cfg.Issuer, "issuer", "", "issuer directory, created on first start (default DATA/issuer)")
		configFile := fs.String("config", os.Getenv("CARDLINK_CONFIG"), "JSON config file")
		addrFile := fs.String("addr-file", "", "file to write the listening addresses to, once listening")
		verbose := fs.Bool("v", false, "log every connection, not only failures")
		serverBio := fs.Bool("server-biometric", os.Getenv("CARDLINK_SERVER_BIOMETRIC") == "1",
			"match biometric templates on the server against the ones operators enrolled")
		lineFlags := addIVRFlags(fs)
		if err := parse(fs, args); err != nil {
			return err
		}
		if fs.NArg() > 0 {
			return usagef("server: unexpected argument %q", fs.Arg(0))
		}
		if err := cfg.resolve(fs, *configFile); err != nil {
			return err
		}
		level := slog.LevelWarn
		if *verbose {
			level = slog.LevelInfo
		}
		log := slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: level}))
		return runServer(e, cfg, *addrFile, *serverBio, lineFlags, log)
	}
	return c
}

// resolve applies the environment and the config file to the flags not
// set on the command line, then the defaults that depend on the data
// directory, and validates.
func (c *serverConfig) resolve(fs *flag.FlagSet, file string) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var fromFile serverConfig
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return fmt.Errorf("reading config: %w", err)
		}
		dec := json.NewDecoder(strings.NewReader(string(b)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&fromFile); err != nil {
			return withHint(fmt.Errorf("reading config %s: %w", file, err),
				`the file is JSON with the keys "data", "listen", "http", "store" and "issuer"`)
		}
	}
	for _, f := range []struct {
		name     string
		field    *string
		fromFile string
	}{
		{"data", &c.Data, fromFile.Data},
		{"listen", &c.Listen, fromFile.Listen},
		{"http", &c.HTTP, fromFile.HTTP},
		{"store", &c.Store, fromFile.Store},
		{"issuer", &c.Issuer, fromFile.Issuer},
	} {
		if set[f.name] {
			continue
		}
		if v := os.Getenv("CARDLINK_" + strings.ToUpper(f.name)); v != "" {
			*f.field = v
		} else if f.fromFile != "" {
			*f.field = f.fromFile
		}
	}
	if c.Store == "" {
		c.Store = "sqlite:" + filepath.Join(c.Data, "cardlink.db")
	}
	if c.Issuer == "" {
		c.Issuer = filepath.Join(c.Data, "issuer")
	}
	if err := c.Validate(); err != nil {
		return usagef("server: %v", err)
	}
	return nil
}

// runServer sets up the data directory and serves until e.ctx ends.
func runServer(e *env, cfg serverConfig, addrFile string, serverBio bool, lineFlags *ivrFlags, log *slog.Logger) error {
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	if err := os.MkdirAll(cfg.Data, 0o700); err != nil {
		return fmt.Errorf("creating data directory: %w", err)
	}
	iss, created, err := loadOrInitIssuer(cfg.Issuer)
	if err != nil {
		return err
	}
	if created {
		fmt.Fprintf(e.stdout, "created issuer in %s\n", cfg.Issuer)
	}
	keyPath := filepath.Join(cfg.Data, "operator.key")
	opHash, created, err := loadOrCreateOperatorKey(keyPath)
	if err != nil {
		return err
	}
	if created {
		fmt.Fprintf(e.stdout, "created operator key in %s\n", keyPath)
	}
	st, err := store.Open(ctx, cfg.Store)
	if err != nil {
		return err
	}
	defer st.Close()
	if _, err := server.EnsureKey(ctx, st); err != nil {
		return err
	}
	notifier := api.NewNotifier(ctx, api.NotifierConfig{Store: st, Logger: log})
	defer notifier.Close()
	svc, err := auth.New(auth.Config{
		Store:  st,
		CA:     iss.CA(),
		CRL:    crlLoader(iss, log),
		Logger: log,
		Notify: notifier.Notify,

		ServerBiometric: serverBio,
	})
	if err != nil {
		return err
	}

	var lc net.ListenConfig
	dl, err := lc.Listen(ctx, "tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listening for devices: %w", err)
	}
	defer dl.Close()
	hl, err := lc.Listen(ctx, "tcp", cfg.HTTP)
	if err != nil {
		return fmt.Errorf("listening for HTTP: %w", err)
	}
	defer hl.Close()
	httpURL := "http://" + hl.Addr().String()
	fmt.Fprintf(e.stdout, "device listener on %s\n", dl.Addr())
	fmt.Fprintf(e.stdout, "HTTP API on %s\n", httpURL)
	fmt.Fprintf(e.stdout, "operator key in %s\n", keyPath)
	if addrFile != "" {
		if err := writeFileAtomic(addrFile, fmt.Appendf(nil, "device %s\nhttp %s\n", dl.Addr(), httpURL)); err != nil {
			return err
		}
	}

	apiCfg := api.Config{Store: st, OperatorKeyHash: opHash, Notify: notifier.Notify, Logger: log}
	srvCfg := server.Config{Auth: svc, Store: st, Logger: log}
	stopPurchases, err := wirePurchases(ctx, purchaseDeps{store: st, auth: svc, issuer: iss, notifier: notifier, log: log}, &srvCfg, &apiCfg)
	if err != nil {
		return err
	}
	// Runs after both listeners have stopped (below): no purchase is in
	// flight any more when the ledger closes.
	defer stopPurchases()
	hs := &http.Server{
		Handler:           api.New(apiCfg),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		// Requests in flight at shutdown finish (Shutdown waits for them).
		BaseContext: func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	srv := server.New(srvCfg)
	waitIVR, err := lineFlags.start(ctx, e, srv, st, log)
	if err != nil {
		return err
	}
	defer waitIVR() // the calls end with ctx, before the ledger closes
	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(ctx, dl) }()
	go func() {
		err := hs.Serve(hl)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		errc <- err
	}()
	var first error
	received := 0
	select {
	case <-ctx.Done():
	case first = <-errc:
		received++
	}
	// Stop both: the device listener ends with ctx, the HTTP server with
	// Shutdown (bounded, then closed).
	cancel()
	sctx, stop := context.WithTimeout(context.Background(), 10*time.Second)
	defer stop()
	if err := hs.Shutdown(sctx); err != nil {
		hs.Close()
	}
	for ; received < 2; received++ {
		if err := <-errc; err != nil && first == nil {
			first = err
		}
	}
	if first != nil {
		return first
	}
	fmt.Fprintln(e.stdout, "server stopped")
	return nil
}

// loadOrInitIssuer loads the issuer in dir, creating it first if dir holds
// none.
func loadOrInitIssuer(dir string) (*pki.Issuer, bool, error) {
	if _, err := os.Stat(filepath.Join(dir, "ca.pem")); errors.Is(err, fs.ErrNotExist) {
		iss, err := pki.Init(dir, "cardlink issuer")
		if err != nil {
			return nil, false, err
		}
		return iss, true, nil
	}
	iss, err := pki.Load(dir)
	if err != nil {
		return nil, false, err
	}
	return iss, false, nil
}

// loadOrCreateOperatorKey returns the SHA-256 of the operator key in path,
// creating the file (mode 0600) with a new random key if it does not exist.
func loadOrCreateOperatorKey(path string) ([]byte, bool, error) {
	b, err := os.ReadFile(path)
	created := false
	if errors.Is(err, fs.ErrNotExist) {
		raw := make([]byte, 32)
		rand.Read(raw)
		b = []byte(base64.RawURLEncoding.EncodeToString(raw) + "\n")
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, false, fmt.Errorf("creating operator key: %w", err)
		}
		if _, err := f.Write(b); err != nil {
			f.Close()
			os.Remove(path)
			return nil, false, fmt.Errorf("creating operator key: %w", err)
		}
		if err := f.Close(); err != nil {
			os.Remove(path)
			return nil, false, fmt.Errorf("creating operator key: %w", err)
		}
		created = true
	} else if err != nil {
		return nil, false, fmt.Errorf("reading operator key: %w", err)
	}
	key := strings.TrimSpace(string(b))
	if key == "" {
		return nil, false, fmt.Errorf("reading operator key: %s is empty", path)
	}
	sum := sha256.Sum256([]byte(key))
	return sum[:], created, nil
}

// crlLoader returns the issuer's CRL for the auth service, re-read from
// the issuer directory at most every crlRefresh so that 'cardlink issuer
// revoke' takes effect without a restart. The server holds the issuer's
// key, so it also signs a fresh CRL (pki.Issuer.UpdateCRL) when the
// current one is within a day of going stale: the auth service refuses
// every card while the CRL is stale. A CRL that cannot be read keeps the
// last good one (logged).
func crlLoader(iss *pki.Issuer, log *slog.Logger) func() *x509.RevocationList {
	const (
		crlRefresh = 10 * time.Second
		crlMargin  = 24 * time.Hour
	)
	var (
		mu     sync.Mutex
		crl    *x509.RevocationList
		loaded time.Time
	)
	return func() *x509.RevocationList {
		mu.Lock()
		defer mu.Unlock()
		now := time.Now()
		if now.Sub(loaded) < crlRefresh && crl != nil {
			return crl
		}
		loaded = now
		c, err := iss.CRL()
		if err == nil && c.NextUpdate.Before(now.Add(crlMargin)) || errors.Is(err, fs.ErrNotExist) {
			c, err = iss.UpdateCRL(now)
		}
		if err != nil {
			log.Warn("reading CRL", "err", err)
			return crl
		}
		crl = c
		return crl
	}
}

// writeFileAtomic writes data to path through a temporary file and a
// rename, so that a reader sees all of it or nothing.
func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
