package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"cardlink/internal/store"
)

// PutChallenge implements store.Challenges.
func (s *Store) PutChallenge(ctx context.Context, c store.Challenge) error {
	_, err := s.w.ExecContext(ctx, `INSERT INTO challenges (value, card, session, purpose, expires) VALUES (?, ?, ?, ?, ?)`,
		blob(c.Value), c.Card, blob(c.Session), c.Purpose, micros(c.Expires))
	if isUnique(err) {
		return fmt.Errorf("storing challenge: %w", store.ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("storing challenge: %w", err)
	}
	return nil
}

// TakeChallenge implements store.Challenges: one DELETE … RETURNING.
func (s *Store) TakeChallenge(ctx context.Context, value []byte, card string, session []byte, now time.Time) (store.Challenge, error) {
	c := store.Challenge{Value: value, Card: card, Session: session}
	var exp sql.NullInt64
	err := s.w.QueryRowContext(ctx, `DELETE FROM challenges WHERE value = ? AND card = ? AND session = ? RETURNING purpose, expires`,
		blob(value), card, blob(session)).Scan(&c.Purpose, &exp)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Challenge{}, fmt.Errorf("taking challenge: %w", store.ErrNotFound)
	}
	if err != nil {
		return store.Challenge{}, fmt.Errorf("taking challenge: %w", err)
	}
	c.Expires = fromMicros(exp)
	if !c.Expires.After(now) {
		return store.Challenge{}, fmt.Errorf("taking challenge: %w", store.ErrExpired)
	}
	return c, nil
}

// DeleteExpiredChallenges implements store.Challenges.
func (s *Store) DeleteExpiredChallenges(ctx context.Context, now time.Time) (int, error) {
	res, err := s.w.ExecContext(ctx, `DELETE FROM challenges WHERE expires <= ?`, now.UnixMicro())
	if err != nil {
		return 0, fmt.Errorf("deleting expired challenges: %w", err)
	}
	n, err := res.RowsAffected()
	return int(n), err
}

// PutCard implements store.Cards.
func (s *Store) PutCard(ctx context.Context, c store.Card, now time.Time) error {
	_, err := s.w.ExecContext(ctx, `INSERT INTO cards (number, cert, issuer_key_id, counter, created) VALUES (?, ?, ?, 0, ?)
		ON CONFLICT (number) DO UPDATE SET cert = excluded.cert, issuer_key_id = excluded.issuer_key_id`,
		c.Number, blob(c.Cert), blob(c.IssuerKeyID), now.UnixMicro())
	if err != nil {
		return fmt.Errorf("storing card: %w", err)
	}
	return nil
}

// Card implements store.Cards.
func (s *Store) Card(ctx context.Context, number string) (store.Card, error) {
	c := store.Card{Number: number}
	var counter int64
	var created, revoked, cloned sql.NullInt64
	err := s.row(ctx, `SELECT cert, issuer_key_id, counter, created, revoked_at, cloned_at FROM cards WHERE number = ?`,
		number).Scan(&c.Cert, &c.IssuerKeyID, &counter, &created, &revoked, &cloned)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Card{}, fmt.Errorf("reading card: %w", store.ErrNotFound)
	}
	if err != nil {
		return store.Card{}, fmt.Errorf("reading card: %w", err)
	}
	c.Counter = uint32(counter)
	c.Created, c.RevokedAt, c.ClonedAt = fromMicros(created), fromMicros(revoked), fromMicros(cloned)
	return c, nil
}

// advanceSQL sets a card's counter if it grows and the card is not revoked.
const advanceSQL = `UPDATE cards SET counter = ? WHERE number = ? AND counter < ? AND revoked_at IS NULL`

// AdvanceCounter implements store.Cards: a conditional UPDATE, and on
// refusal the reason, and the clone flag, in the same transaction.
func (s *Store) AdvanceCounter(ctx context.Context, number string, counter uint32, now time.Time) error {
	// The usual case, the counter grew, is one statement.
	res, err := s.w.ExecContext(ctx, advanceSQL, counter, number, counter)
	if err != nil {
		return fmt.Errorf("advancing card counter: %w", err)
	}
	if affected(res) == 1 {
		return nil
	}
	// Refused: find out why, and flag a replay, in one transaction that
	// tries once more (the card may have changed meanwhile).
	err = s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, advanceSQL, counter, number, counter)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 1 {
			return err
		}
		var revoked sql.NullInt64
		err = tx.QueryRowContext(ctx, `SELECT revoked_at FROM cards WHERE number = ?`, number).Scan(&revoked)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return store.ErrNotFound
		case err != nil:
			return err
		case revoked.Valid:
			return store.ErrRevoked
		}
		if _, err := tx.ExecContext(ctx, `UPDATE cards SET cloned_at = COALESCE(cloned_at, ?) WHERE number = ?`,
			now.UnixMicro(), number); err != nil {
			return err
		}
		return commit{store.ErrCounterReplay}
	})
	if err != nil {
		return fmt.Errorf("advancing card counter: %w", err)
	}
	return nil
}

// RevokeCard implements store.Cards.
func (s *Store) RevokeCard(ctx context.Context, number string, now time.Time) error {
	return s.revoke(ctx, `UPDATE cards SET revoked_at = COALESCE(revoked_at, ?) WHERE number = ?`, now, number, "revoking card")
}

// revoke runs an UPDATE that sets a time on the row with key, ErrNotFound
// when there is none.
func (s *Store) revoke(ctx context.Context, query string, now time.Time, key any, what string) error {
	res, err := s.w.ExecContext(ctx, query, now.UnixMicro(), key)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if n == 0 {
		return fmt.Errorf("%s: %w", what, store.ErrNotFound)
	}
	return nil
}

// AddDevice implements store.Devices.
func (s *Store) AddDevice(ctx context.Context, d store.Device, now time.Time) error {
	_, err := s.w.ExecContext(ctx, `INSERT INTO devices (id, static_key, name, created) VALUES (?, ?, ?, ?)`,
		d.ID, blob(d.StaticKey), d.Name, now.UnixMicro())
	if isUnique(err) {
		return fmt.Errorf("adding device: %w", store.ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("adding device: %w", err)
	}
	return nil
}

// Device implements store.Devices.
func (s *Store) Device(ctx context.Context, id string) (store.Device, error) {
	return s.device(ctx, `SELECT id, static_key, name, created, revoked_at FROM devices WHERE id = ?`, id)
}

// DeviceByKey implements store.Devices.
func (s *Store) DeviceByKey(ctx context.Context, staticKey []byte) (store.Device, error) {
	return s.device(ctx, `SELECT id, static_key, name, created, revoked_at FROM devices WHERE static_key = ?`, blob(staticKey))
}

func (s *Store) device(ctx context.Context, query string, key any) (store.Device, error) {
	var d store.Device
	var created, revoked sql.NullInt64
	err := s.row(ctx, query, key).Scan(&d.ID, &d.StaticKey, &d.Name, &created, &revoked)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Device{}, fmt.Errorf("reading device: %w", store.ErrNotFound)
	}
	if err != nil {
		return store.Device{}, fmt.Errorf("reading device: %w", err)
	}
	d.Created, d.RevokedAt = fromMicros(created), fromMicros(revoked)
	return d, nil
}

// RevokeDevice implements store.Devices.
func (s *Store) RevokeDevice(ctx context.Context, id string, now time.Time) error {
	return s.revoke(ctx, `UPDATE devices SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?`, now, id, "revoking device")
}

// SetPIN implements store.PINs.
func (s *Store) SetPIN(ctx context.Context, p store.PIN) error {
	if p.MaxTries < 1 {
		return fmt.Errorf("setting PIN: MaxTries %d, want at least 1", p.MaxTries)
	}
	_, err := s.w.ExecContext(ctx, `INSERT INTO pins (card, hash, salt, params, tries, max_tries) VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (card) DO UPDATE SET hash = excluded.hash, salt = excluded.salt, params = excluded.params,
			tries = excluded.tries, max_tries = excluded.max_tries`,
		p.Card, blob(p.Hash), blob(p.Salt), p.Params, p.MaxTries, p.MaxTries)
	if isForeignKey(err) {
		return fmt.Errorf("setting PIN: card: %w", store.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("setting PIN: %w", err)
	}
	return nil
}

const pinColumns = `card, hash, salt, params, tries, max_tries`

func scanPIN(row *sql.Row) (store.PIN, error) {
	var p store.PIN
	err := row.Scan(&p.Card, &p.Hash, &p.Salt, &p.Params, &p.Tries, &p.MaxTries)
	if errors.Is(err, sql.ErrNoRows) {
		return store.PIN{}, store.ErrNotFound
	}
	return p, err
}

// PIN implements store.PINs.
func (s *Store) PIN(ctx context.Context, card string) (store.PIN, error) {
	p, err := scanPIN(s.row(ctx, `SELECT `+pinColumns+` FROM pins WHERE card = ?`, card))
	if err != nil {
		return store.PIN{}, fmt.Errorf("reading PIN: %w", err)
	}
	return p, nil
}

// DecrementPINTries implements store.PINs.
func (s *Store) DecrementPINTries(ctx context.Context, card string) (store.PIN, error) {
	// One statement takes the try; the read after a refusal only names it.
	p, err := scanPIN(s.w.QueryRowContext(ctx, `UPDATE pins SET tries = tries - 1 WHERE card = ? AND tries > 0 RETURNING `+pinColumns, card))
	if errors.Is(err, store.ErrNotFound) {
		var one int
		switch err = s.row(ctx, `SELECT 1 FROM pins WHERE card = ?`, card).Scan(&one); {
		case errors.Is(err, sql.ErrNoRows):
			err = store.ErrNotFound
		case err == nil:
			err = store.ErrLocked
		}
	}
	if err != nil {
		return store.PIN{}, fmt.Errorf("taking a PIN try: %w", err)
	}
	return p, nil
}

// ResetPINTries implements store.PINs.
func (s *Store) ResetPINTries(ctx context.Context, card string) error {
	res, err := s.w.ExecContext(ctx, `UPDATE pins SET tries = max_tries WHERE card = ?`, card)
	if err == nil {
		var n int64
		if n, err = res.RowsAffected(); err == nil && n == 0 {
			err = store.ErrNotFound
		}
	}
	if err != nil {
		return fmt.Errorf("resetting PIN tries: %w", err)
	}
	return nil
}

// PutRelyingParty implements store.RelyingParties.
func (s *Store) PutRelyingParty(ctx context.Context, rp store.RelyingParty, now time.Time) error {
	_, err := s.w.ExecContext(ctx, `INSERT INTO relying_parties (id, name, key_hash, webhook_url, webhook_secret, policy, created)
		VALUES (?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET name = excluded.name, key_hash = excluded.key_hash, webhook_url = excluded.webhook_url,
			webhook_secret = excluded.webhook_secret, policy = excluded.policy`,
		rp.ID, rp.Name, blob(rp.KeyHash), rp.WebhookURL, blob(rp.WebhookSecret), rp.Policy, now.UnixMicro())
	if isUnique(err) {
		return fmt.Errorf("storing relying party: %w", store.ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("storing relying party: %w", err)
	}
	return nil
}

const rpColumns = `id, name, key_hash, webhook_url, webhook_secret, policy, created`

// RelyingParty implements store.RelyingParties.
func (s *Store) RelyingParty(ctx context.Context, id string) (store.RelyingParty, error) {
	return s.relyingParty(ctx, `SELECT `+rpColumns+` FROM relying_parties WHERE id = ?`, id)
}

// RelyingPartyByKey implements store.RelyingParties.
func (s *Store) RelyingPartyByKey(ctx context.Context, keyHash []byte) (store.RelyingParty, error) {
	return s.relyingParty(ctx, `SELECT `+rpColumns+` FROM relying_parties WHERE key_hash = ?`, blob(keyHash))
}

func (s *Store) relyingParty(ctx context.Context, query string, key any) (store.RelyingParty, error) {
	var rp store.RelyingParty
	var created sql.NullInt64
	err := s.row(ctx, query, key).Scan(&rp.ID, &rp.Name, &rp.KeyHash, &rp.WebhookURL, &rp.WebhookSecret, &rp.Policy, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return store.RelyingParty{}, fmt.Errorf("reading relying party: %w", store.ErrNotFound)
	}
	if err != nil {
		return store.RelyingParty{}, fmt.Errorf("reading relying party: %w", err)
	}
	rp.Created = fromMicros(created)
	return rp, nil
}

// CreateAuthRequest implements store.AuthRequests.
func (s *Store) CreateAuthRequest(ctx context.Context, r store.AuthRequest, now time.Time) error {
	_, err := s.w.ExecContext(ctx, `INSERT INTO auth_requests (id, relying_party, card, policy, status, result, created, updated, expires)
		VALUES (?, ?, ?, ?, ?, NULL, ?, ?, ?)`,
		r.ID, r.RelyingParty, r.Card, r.Policy, store.AuthPending, now.UnixMicro(), now.UnixMicro(), micros(r.Expires))
	switch {
	case isUnique(err):
		return fmt.Errorf("creating auth request: %w", store.ErrConflict)
	case isForeignKey(err):
		return fmt.Errorf("creating auth request: relying party: %w", store.ErrNotFound)
	case err != nil:
		return fmt.Errorf("creating auth request: %w", err)
	}
	return nil
}

// FinishAuthRequest implements store.AuthRequests.
func (s *Store) FinishAuthRequest(ctx context.Context, id string, status store.AuthStatus, result []byte, now time.Time) error {
	if status == store.AuthPending {
		return fmt.Errorf("finishing auth request: to pending: %w", store.ErrConflict)
	}
	res, err := s.w.ExecContext(ctx, `UPDATE auth_requests SET status = ?, result = ?, updated = ? WHERE id = ? AND status = ?`,
		status, result, now.UnixMicro(), id, store.AuthPending)
	if err == nil && affected(res) == 0 {
		// Refused: the read only names the reason.
		var one int
		switch err = s.row(ctx, `SELECT 1 FROM auth_requests WHERE id = ?`, id).Scan(&one); {
		case errors.Is(err, sql.ErrNoRows):
			err = store.ErrNotFound
		case err == nil:
			err = store.ErrConflict
		}
	}
	if err != nil {
		return fmt.Errorf("finishing auth request: %w", err)
	}
	return nil
}

const authColumns = `id, relying_party, card, policy, status, result, created, updated, expires`

type scanner interface{ Scan(...any) error }

func scanAuth(row scanner) (store.AuthRequest, error) {
	var r store.AuthRequest
	var created, updated, expires sql.NullInt64
	if err := row.Scan(&r.ID, &r.RelyingParty, &r.Card, &r.Policy, &r.Status, &r.Result, &created, &updated, &expires); err != nil {
		return store.AuthRequest{}, err
	}
	r.Created, r.Updated, r.Expires = fromMicros(created), fromMicros(updated), fromMicros(expires)
	return r, nil
}

// AuthRequest implements store.AuthRequests.
func (s *Store) AuthRequest(ctx context.Context, id string) (store.AuthRequest, error) {
	r, err := scanAuth(s.row(ctx, `SELECT `+authColumns+` FROM auth_requests WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return store.AuthRequest{}, fmt.Errorf("reading auth request: %w", store.ErrNotFound)
	}
	if err != nil {
		return store.AuthRequest{}, fmt.Errorf("reading auth request: %w", err)
	}
	return r, nil
}

// PendingAuthRequests implements store.AuthRequests.
func (s *Store) PendingAuthRequests(ctx context.Context, card string, now time.Time) ([]store.AuthRequest, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+authColumns+` FROM auth_requests
		WHERE card = ? AND status = ? AND expires > ? ORDER BY created, id`, card, store.AuthPending, now.UnixMicro())
	if err != nil {
		return nil, fmt.Errorf("listing pending auth requests: %w", err)
	}
	defer rows.Close()
	var rs []store.AuthRequest
	for rows.Next() {
		r, err := scanAuth(rows)
		if err != nil {
			return nil, fmt.Errorf("listing pending auth requests: %w", err)
		}
		rs = append(rs, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing pending auth requests: %w", err)
	}
	return rs, nil
}

// AddServerKey implements store.ServerKeys.
func (s *Store) AddServerKey(ctx context.Context, k store.ServerKey, now time.Time) error {
	_, err := s.w.ExecContext(ctx, `INSERT INTO server_keys (public, private, created) VALUES (?, ?, ?)`,
		blob(k.Public), blob(k.Private), now.UnixMicro())
	if isUnique(err) {
		return fmt.Errorf("adding server key: %w", store.ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("adding server key: %w", err)
	}
	return nil
}

// ServerKeys implements store.ServerKeys.
func (s *Store) ServerKeys(ctx context.Context) ([]store.ServerKey, error) {
	return s.serverKeys(ctx, `WHERE retired_at IS NULL`, "listing server keys")
}

// ServerKeyHistory implements store.ServerKeys.
func (s *Store) ServerKeyHistory(ctx context.Context) ([]store.ServerKey, error) {
	return s.serverKeys(ctx, ``, "listing server key history")
}

// serverKeys returns the server keys the where clause selects, newest
// first.
func (s *Store) serverKeys(ctx context.Context, where, what string) ([]store.ServerKey, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT public, private, created, retired_at FROM server_keys `+
		where+` ORDER BY created DESC, public`)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer rows.Close()
	var ks []store.ServerKey
	for rows.Next() {
		var k store.ServerKey
		var created, retired sql.NullInt64
		if err := rows.Scan(&k.Public, &k.Private, &created, &retired); err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		k.Created, k.RetiredAt = fromMicros(created), fromMicros(retired)
		ks = append(ks, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return ks, nil
}

// RetireServerKey implements store.ServerKeys: the check for another
// current key and the update share one BEGIN IMMEDIATE transaction, which
// holds the database's write lock from its start, so no other writer (on
// this Store, another Store or another process) can retire a key between
// them.
func (s *Store) RetireServerKey(ctx context.Context, public []byte, now time.Time) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		var retired sql.NullInt64
		err := tx.QueryRowContext(ctx, `SELECT retired_at FROM server_keys WHERE public = ?`, blob(public)).Scan(&retired)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("retiring server key: %w", store.ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("retiring server key: %w", err)
		}
		if retired.Valid {
			return nil // kept
		}
		var current int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM server_keys WHERE retired_at IS NULL`).Scan(&current); err != nil {
			return fmt.Errorf("retiring server key: %w", err)
		}
		if current <= 1 {
			return fmt.Errorf("retiring server key: %w", store.ErrLastKey)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE server_keys SET retired_at = ? WHERE public = ?`, now.UnixMicro(), blob(public)); err != nil {
			return fmt.Errorf("retiring server key: %w", err)
		}
		return nil
	})
}

// affected returns the rows a statement changed; the driver cannot fail
// to report it (modernc.org/sqlite reads sqlite3_changes).
func affected(res sql.Result) int64 {
	n, err := res.RowsAffected()
	if err != nil {
		return -1
	}
	return n
}
