package cli

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"cardlink/internal/money"
)

// defaultAPI is the HTTP API's URL when --http does not say otherwise:
// where 'cardlink server' listens by default.
const defaultAPI = "http://127.0.0.1:7431"

// maxAnswer bounds an answer body the CLI reads (statements may be long).
const maxAnswer = 16 << 20

// keyKind is which API key a command needs.
type keyKind int

const (
	merchantKeyKind keyKind = iota
	operatorKeyKind
)

// apiFlags are the flags of every command that calls the HTTP API: its
// URL and the API key.
type apiFlags struct {
	kind    keyKind
	base    *string
	keyFile *string
	key     *string
	timeout *time.Duration
}

// addAPIFlags adds --http, the key flags of kind and --timeout to fs.
func addAPIFlags(fs *flag.FlagSet, kind keyKind) *apiFlags {
	a := &apiFlags{kind: kind}
	a.base = fs.String("http", defaultAPI, "the server's HTTP API base URL")
	switch kind {
	case operatorKeyKind:
		a.keyFile = fs.String("operator-key-file", "", "file holding the operator key (DATA/operator.key)")
		a.key = fs.String("operator-key", "", "the operator key itself (visible in the process list: prefer --operator-key-file or CARDLINK_OPERATOR_KEY)")
	default:
		a.keyFile = fs.String("key-file", "", "file holding the merchant's API key")
		a.key = fs.String("key", "", "the merchant's API key itself (visible in the process list: prefer --key-file or CARDLINK_MERCHANT_KEY)")
	}
	a.timeout = fs.Duration("timeout", 30*time.Second, "how long each call to the server may take")
	return a
}

// client resolves the flags into an API client; cmd names the command for
// messages ("merchant item add").
func (a *apiFlags) client(cmd string) (*apiClient, error) {
	// The environment is read here, not as the flag's default, so that
	// -h does not print the key.
	key := strings.TrimSpace(*a.key)
	if key == "" {
		key = strings.TrimSpace(os.Getenv(a.kind.env()))
	}
	if *a.keyFile != "" {
		b, err := os.ReadFile(*a.keyFile)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", a.kind, err)
		}
		key = strings.TrimSpace(string(b))
	}
	if key == "" {
		return nil, withHint(usagef("%s: no %s", cmd, a.kind), a.kind.hint())
	}
	u, err := url.Parse(*a.base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, usagef("%s: --http %q: want a URL such as %s", cmd, *a.base, defaultAPI)
	}
	return &apiClient{base: strings.TrimSuffix(*a.base, "/"), key: key, kind: a.kind,
		hc: &http.Client{Timeout: *a.timeout}}, nil
}

func (k keyKind) String() string {
	if k == operatorKeyKind {
		return "operator key"
	}
	return "merchant key"
}

// env is the environment variable that holds the key.
func (k keyKind) env() string {
	if k == operatorKeyKind {
		return "CARDLINK_OPERATOR_KEY"
	}
	return "CARDLINK_MERCHANT_KEY"
}

func (k keyKind) hint() string {
	if k == operatorKeyKind {
		return "pass --operator-key-file DATA/operator.key (written by 'cardlink server'), or set CARDLINK_OPERATOR_KEY"
	}
	return "pass --key-file FILE or set CARDLINK_MERCHANT_KEY to the API key 'cardlink merchant create' printed"
}

// apiClient calls the HTTP API with one API key.
type apiClient struct {
	base string
	key  string
	kind keyKind
	hc   *http.Client
}

// apiCall is one request to the API.
type apiCall struct {
	method string
	path   string            // starts with "/"; already escaped
	query  url.Values        // may be nil
	body   any               // JSON-encoded when not nil
	header map[string]string // extra headers
	what   string            // gerund phrase for errors: "creating merchant"
	// notFound, if set, is the hint for a 404 answer.
	notFound string
}

// problem is an RFC 9457 problem details object as the API sends it.
type problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
}

// slug is the problem type without the API's prefix.
func (p *problem) slug() string {
	if i := strings.LastIndexByte(p.Type, '/'); i >= 0 {
		return p.Type[i+1:]
	}
	return p.Type
}

// apiError is an error answer of the API.
type apiError struct {
	what    string
	status  int
	problem problem // zero when the body was not a problem
}

func (e *apiError) Error() string {
	msg := e.problem.Detail
	if msg == "" {
		msg = e.problem.Title
	}
	if msg == "" {
		msg = fmt.Sprintf("server answered %d %s", e.status, http.StatusText(e.status))
	}
	return e.what + ": " + strings.TrimSuffix(msg, ".")
}

// do sends c and returns the answer's body when the status is 2xx; else
// an error (an *apiError inside a hint) with the problem's detail.
func (cl *apiClient) do(ctx context.Context, c apiCall) ([]byte, http.Header, error) {
	u := cl.base + c.path
	if len(c.query) > 0 {
		u += "?" + c.query.Encode()
	}
	var body io.Reader
	if c.body != nil {
		b, err := json.Marshal(c.body)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", c.what, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, c.method, u, body)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", c.what, err)
	}
	if c.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+cl.key)
	for k, v := range c.header {
		req.Header.Set(k, v)
	}
	resp, err := cl.hc.Do(req)
	if err != nil {
		return nil, nil, withHint(fmt.Errorf("%s: %w", c.what, err),
			"is 'cardlink server' running with its HTTP API at "+cl.base+"? pass --http URL")
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return nil, nil, fmt.Errorf("%s: reading the answer: %w", c.what, err)
	}
	if resp.StatusCode/100 == 2 {
		return b, resp.Header, nil
	}
	e := &apiError{what: c.what, status: resp.StatusCode}
	json.Unmarshal(b, &e.problem) // a body that is no problem leaves it zero
	if e.status == http.StatusNotFound && c.notFound != "" {
		return nil, nil, withHint(e, c.notFound)
	}
	return nil, nil, withHint(e, cl.hintFor(e))
}

// doJSON is do, then decodes the answer's JSON into out.
func (cl *apiClient) doJSON(ctx context.Context, c apiCall, out any) (http.Header, error) {
	b, h, err := cl.do(ctx, c)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, out); err != nil {
		return nil, fmt.Errorf("%s: decoding the answer: %w", c.what, err)
	}
	return h, nil
}

// hintFor says what to do about an error answer.
func (cl *apiClient) hintFor(e *apiError) string {
	switch slug := e.problem.slug(); {
	case e.status == http.StatusUnauthorized:
		return "the server refused the " + cl.kind.String() + "; " + cl.kind.hint()
	case slug == "not-found" || e.status == http.StatusNotFound:
		return "check the id (and that it is yours); the server answered 404"
	case slug == "refund-too-large":
		return "see what was refunded already with 'cardlink merchant refunds ID'"
	case slug == "idempotency-key-reused":
		return "an idempotency key stands for one request: use a new key for a different one"
	case slug == "sold-out":
		return "the item's stock is 0; add a new item with --stock"
	case e.problem.Type != "":
		return fmt.Sprintf("the server answered %d %s (%s)", e.status, e.problem.Title, slug)
	}
	return fmt.Sprintf("the server answered %d %s", e.status, http.StatusText(e.status))
}

// parseAmountFlag converts a decimal amount ("12.50") in currency cur to
// a positive money.Amount; flag names the flag for messages.
func parseAmountFlag(cmd, flag, amount, cur string) (money.Amount, error) {
	c, err := money.ParseCurrency(strings.ToUpper(strings.TrimSpace(cur)))
	if err != nil {
		return money.Amount{}, usagef("%s: --currency: %v", cmd, err)
	}
	a, err := money.ParseAmount(strings.TrimSpace(amount) + " " + string(c))
	if err != nil {
		example, _, _ := strings.Cut(money.Amount{Minor: 1250, Currency: c}.String(), " ")
		return money.Amount{}, withHint(usagef("%s: --%s %q: want a decimal number", cmd, flag, amount),
			fmt.Sprintf("give at most %d fraction digits for %s, e.g. --%s %s", c.Exponent(), c, flag, example))
	}
	if a.Minor <= 0 {
		return money.Amount{}, usagef("%s: --%s %q: want a positive amount", cmd, flag, amount)
	}
	return a, nil
}

// parseTimeFlag reads an RFC 3339 time or a date (midnight UTC); "" is
// the zero time.
func parseTimeFlag(cmd, flag, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	return time.Time{}, usagef("%s: --%s %q: want a date (2026-11-28) or an RFC 3339 time (2026-11-28T20:00:00Z)", cmd, flag, s)
}

// newIdempotencyKey draws a key for a call that needs one when the user
// gave none.
func newIdempotencyKey() string {
	b := make([]byte, 12)
	rand.Read(b)
	return "cli-" + hex.EncodeToString(b)
}

// parseOneArg parses args with fs, flags before and after the one
// positional argument (name in messages), and returns that argument.
func parseOneArg(fs *flag.FlagSet, args []string, name string) (string, error) {
	var pos []string
	for {
		if err := parse(fs, args); err != nil {
			return "", err
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	switch len(pos) {
	case 1:
		return pos[0], nil
	case 0:
		return "", withHint(usagef("%s: missing %s", shortName(fs), name), "run '"+fs.Name()+" -h' for help")
	}
	return "", usagef("%s: unexpected argument %q", shortName(fs), pos[1])
}

// noArgs is the usage error of a command given arguments it takes none of.
func noArgs(fs *flag.FlagSet) error {
	if fs.NArg() > 0 {
		return usagef("%s: unexpected argument %q", shortName(fs), fs.Arg(0))
	}
	return nil
}

// groupReference writes a reference code in groups of four digits.
func groupReference(ref string) string { return groupDigits(ref) }

// isAPIStatus reports whether err is the API's answer with this status.
func isAPIStatus(err error, status int) bool {
	var e *apiError
	return errors.As(err, &e) && e.status == status
}
