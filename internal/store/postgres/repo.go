package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"cardlink/internal/store"
)

// PutChallenge implements store.Challenges.
func (s *Store) PutChallenge(ctx context.Context, c store.Challenge) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO challenges (value, card, session, purpose, expires) VALUES ($1, $2, $3, $4, $5)`,
		blob(c.Value), c.Card, blob(c.Session), c.Purpose, ts(c.Expires))
	if isCode(err, sqlstateUnique) {
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
	var exp *time.Time
	err := s.pool.QueryRow(ctx, `DELETE FROM challenges WHERE value = $1 AND card = $2 AND session = $3 RETURNING purpose, expires`,
		blob(value), card, blob(session)).Scan(&c.Purpose, &exp)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Challenge{}, fmt.Errorf("taking challenge: %w", store.ErrNotFound)
	}
	if err != nil {
		return store.Challenge{}, fmt.Errorf("taking challenge: %w", err)
	}
	c.Expires = fromTS(exp)
	if !c.Expires.After(now) {
		return store.Challenge{}, fmt.Errorf("taking challenge: %w", store.ErrExpired)
	}
	return c, nil
}

// DeleteExpiredChallenges implements store.Challenges.
func (s *Store) DeleteExpiredChallenges(ctx context.Context, now time.Time) (int, error) {
	res, err := s.pool.Exec(ctx, `DELETE FROM challenges WHERE expires <= $1`, now.UTC())
	if err != nil {
		return 0, fmt.Errorf("deleting expired challenges: %w", err)
	}
	return int(res.RowsAffected()), nil
}

// PutCard implements store.Cards.
func (s *Store) PutCard(ctx context.Context, c store.Card, now time.Time) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO cards (number, cert, issuer_key_id, counter, created) VALUES ($1, $2, $3, 0, $4)
		ON CONFLICT (number) DO UPDATE SET cert = excluded.cert, issuer_key_id = excluded.issuer_key_id`,
		c.Number, blob(c.Cert), blob(c.IssuerKeyID), now.UTC())
	if err != nil {
		return fmt.Errorf("storing card: %w", err)
	}
	return nil
}

// Card implements store.Cards.
func (s *Store) Card(ctx context.Context, number string) (store.Card, error) {
	c := store.Card{Number: number}
	var counter int64
	var created, revoked, cloned *time.Time
	err := s.pool.QueryRow(ctx, `SELECT cert, issuer_key_id, counter, created, revoked_at, cloned_at FROM cards WHERE number = $1`,
		number).Scan(&c.Cert, &c.IssuerKeyID, &counter, &created, &revoked, &cloned)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Card{}, fmt.Errorf("reading card: %w", store.ErrNotFound)
	}
	if err != nil {
		return store.Card{}, fmt.Errorf("reading card: %w", err)
	}
	c.Counter = uint32(counter)
	c.Created, c.RevokedAt, c.ClonedAt = fromTS(created), fromTS(revoked), fromTS(cloned)
	return c, nil
}

// advanceSQL sets a card's counter if it grows and the card is not revoked.
const advanceSQL = `UPDATE cards SET counter = $1 WHERE number = $2 AND counter < $3 AND revoked_at IS NULL`

// AdvanceCounter implements store.Cards: a conditional UPDATE, and on
// refusal the reason, and the clone flag, in the same transaction.
func (s *Store) AdvanceCounter(ctx context.Context, number string, counter uint32, now time.Time) error {
	// The usual case, the counter grew, is one statement.
	res, err := s.pool.Exec(ctx, advanceSQL, counter, number, counter)
	if err != nil {
		return fmt.Errorf("advancing card counter: %w", err)
	}
	if res.RowsAffected() == 1 {
		return nil
	}
	// Refused: find out why, and flag a replay, in one transaction that
	// tries once more (the card may have changed meanwhile).
	err = s.tx(ctx, func(tx pgx.Tx) error {
		res, err := tx.Exec(ctx, advanceSQL, counter, number, counter)
		if err != nil {
			return err
		}
		if res.RowsAffected() == 1 {
			return nil
		}
		var revoked *time.Time
		err = tx.QueryRow(ctx, `SELECT revoked_at FROM cards WHERE number = $1`, number).Scan(&revoked)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return store.ErrNotFound
		case err != nil:
			return err
		case revoked != nil:
			return store.ErrRevoked
		}
		if _, err := tx.Exec(ctx, `UPDATE cards SET cloned_at = COALESCE(cloned_at, $1) WHERE number = $2`,
			now.UTC(), number); err != nil {
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
	return s.revoke(ctx, `UPDATE cards SET revoked_at = COALESCE(revoked_at, $1) WHERE number = $2`, now, number, "revoking card")
}

// revoke runs an UPDATE that sets a time on the row with key, ErrNotFound
// when there is none.
func (s *Store) revoke(ctx context.Context, query string, now time.Time, key any, what string) error {
	res, err := s.pool.Exec(ctx, query, now.UTC(), key)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if res.RowsAffected() == 0 {
		return fmt.Errorf("%s: %w", what, store.ErrNotFound)
	}
	return nil
}

// AddDevice implements store.Devices.
func (s *Store) AddDevice(ctx context.Context, d store.Device, now time.Time) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO devices (id, static_key, name, created) VALUES ($1, $2, $3, $4)`,
		d.ID, blob(d.StaticKey), d.Name, now.UTC())
	if isCode(err, sqlstateUnique) {
		return fmt.Errorf("adding device: %w", store.ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("adding device: %w", err)
	}
	return nil
}

// Device implements store.Devices.
func (s *Store) Device(ctx context.Context, id string) (store.Device, error) {
	return s.device(ctx, `SELECT id, static_key, name, created, revoked_at FROM devices WHERE id = $1`, id)
}

// DeviceByKey implements store.Devices.
func (s *Store) DeviceByKey(ctx context.Context, staticKey []byte) (store.Device, error) {
	return s.device(ctx, `SELECT id, static_key, name, created, revoked_at FROM devices WHERE static_key = $1`, blob(staticKey))
}

func (s *Store) device(ctx context.Context, query string, key any) (store.Device, error) {
	var d store.Device
	var created, revoked *time.Time
	err := s.pool.QueryRow(ctx, query, key).Scan(&d.ID, &d.StaticKey, &d.Name, &created, &revoked)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Device{}, fmt.Errorf("reading device: %w", store.ErrNotFound)
	}
	if err != nil {
		return store.Device{}, fmt.Errorf("reading device: %w", err)
	}
	d.Created, d.RevokedAt = fromTS(created), fromTS(revoked)
	return d, nil
}

// RevokeDevice implements store.Devices.
func (s *Store) RevokeDevice(ctx context.Context, id string, now time.Time) error {
	return s.revoke(ctx, `UPDATE devices SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2`, now, id, "revoking device")
}

// SetPIN implements store.PINs.
func (s *Store) SetPIN(ctx context.Context, p store.PIN) error {
	if p.MaxTries < 1 {
		return fmt.Errorf("setting PIN: MaxTries %d, want at least 1", p.MaxTries)
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO pins (card, hash, salt, params, tries, max_tries) VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (card) DO UPDATE SET hash = excluded.hash, salt = excluded.salt, params = excluded.params,
			tries = excluded.tries, max_tries = excluded.max_tries`,
		p.Card, blob(p.Hash), blob(p.Salt), p.Params, p.MaxTries, p.MaxTries)
	if isCode(err, sqlstateForeignKey) {
		return fmt.Errorf("setting PIN: card: %w", store.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("setting PIN: %w", err)
	}
	return nil
}

const pinColumns = `card, hash, salt, params, tries, max_tries`

func scanPIN(row pgx.Row) (store.PIN, error) {
	var p store.PIN
	err := row.Scan(&p.Card, &p.Hash, &p.Salt, &p.Params, &p.Tries, &p.MaxTries)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.PIN{}, store.ErrNotFound
	}
	return p, err
}

// PIN implements store.PINs.
func (s *Store) PIN(ctx context.Context, card string) (store.PIN, error) {
	p, err := scanPIN(s.pool.QueryRow(ctx, `SELECT `+pinColumns+` FROM pins WHERE card = $1`, card))
	if err != nil {
		return store.PIN{}, fmt.Errorf("reading PIN: %w", err)
	}
	return p, nil
}

// DecrementPINTries implements store.PINs.
func (s *Store) DecrementPINTries(ctx context.Context, card string) (store.PIN, error) {
	// One statement takes the try; the read after a refusal only names it.
	p, err := scanPIN(s.pool.QueryRow(ctx, `UPDATE pins SET tries = tries - 1 WHERE card = $1 AND tries > 0 RETURNING `+pinColumns, card))
	if errors.Is(err, store.ErrNotFound) {
		var one int
		switch err = s.pool.QueryRow(ctx, `SELECT 1 FROM pins WHERE card = $1`, card).Scan(&one); {
		case errors.Is(err, pgx.ErrNoRows):
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
	res, err := s.pool.Exec(ctx, `UPDATE pins SET tries = max_tries WHERE card = $1`, card)
	if err == nil && res.RowsAffected() == 0 {
		err = store.ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("resetting PIN tries: %w", err)
	}
	return nil
}

// PutRelyingParty implements store.RelyingParties.
func (s *Store) PutRelyingParty(ctx context.Context, rp store.RelyingParty, now time.Time) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO relying_parties (id, name, key_hash, webhook_url, webhook_secret, policy, created)
		VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (id) DO UPDATE SET name = excluded.name, key_hash = excluded.key_hash, webhook_url = excluded.webhook_url,
			webhook_secret = excluded.webhook_secret, policy = excluded.policy`,
		rp.ID, rp.Name, blob(rp.KeyHash), rp.WebhookURL, blob(rp.WebhookSecret), rp.Policy, now.UTC())
	if isCode(err, sqlstateUnique) {
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
	return s.relyingParty(ctx, `SELECT `+rpColumns+` FROM relying_parties WHERE id = $1`, id)
}

// RelyingPartyByKey implements store.RelyingParties.
func (s *Store) RelyingPartyByKey(ctx context.Context, keyHash []byte) (store.RelyingParty, error) {
	return s.relyingParty(ctx, `SELECT `+rpColumns+` FROM relying_parties WHERE key_hash = $1`, blob(keyHash))
}

func (s *Store) relyingParty(ctx context.Context, query string, key any) (store.RelyingParty, error) {
	var rp store.RelyingParty
	var created *time.Time
	err := s.pool.QueryRow(ctx, query, key).Scan(&rp.ID, &rp.Name, &rp.KeyHash, &rp.WebhookURL, &rp.WebhookSecret, &rp.Policy, &created)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.RelyingParty{}, fmt.Errorf("reading relying party: %w", store.ErrNotFound)
	}
	if err != nil {
		return store.RelyingParty{}, fmt.Errorf("reading relying party: %w", err)
	}
	rp.Created = fromTS(created)
	return rp, nil
}

// CreateAuthRequest implements store.AuthRequests.
func (s *Store) CreateAuthRequest(ctx context.Context, r store.AuthRequest, now time.Time) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO auth_requests (id, relying_party, card, policy, status, result, created, updated, expires)
		VALUES ($1, $2, $3, $4, $5, NULL, $6, $7, $8)`,
		r.ID, r.RelyingParty, r.Card, r.Policy, store.AuthPending, now.UTC(), now.UTC(), ts(r.Expires))
	switch {
	case isCode(err, sqlstateUnique):
		return fmt.Errorf("creating auth request: %w", store.ErrConflict)
	case isCode(err, sqlstateForeignKey):
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
	res, err := s.pool.Exec(ctx, `UPDATE auth_requests SET status = $1, result = $2, updated = $3 WHERE id = $4 AND status = $5`,
		status, result, now.UTC(), id, store.AuthPending)
	if err == nil && res.RowsAffected() == 0 {
		// Refused: the read only names the reason.
		var one int
		switch err = s.pool.QueryRow(ctx, `SELECT 1 FROM auth_requests WHERE id = $1`, id).Scan(&one); {
		case errors.Is(err, pgx.ErrNoRows):
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
	var created, updated, expires *time.Time
	if err := row.Scan(&r.ID, &r.RelyingParty, &r.Card, &r.Policy, &r.Status, &r.Result, &created, &updated, &expires); err != nil {
		return store.AuthRequest{}, err
	}
	r.Created, r.Updated, r.Expires = fromTS(created), fromTS(updated), fromTS(expires)
	return r, nil
}

// AuthRequest implements store.AuthRequests.
func (s *Store) AuthRequest(ctx context.Context, id string) (store.AuthRequest, error) {
	r, err := scanAuth(s.pool.QueryRow(ctx, `SELECT `+authColumns+` FROM auth_requests WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return store.AuthRequest{}, fmt.Errorf("reading auth request: %w", store.ErrNotFound)
	}
	if err != nil {
		return store.AuthRequest{}, fmt.Errorf("reading auth request: %w", err)
	}
	return r, nil
}

// PendingAuthRequests implements store.AuthRequests.
func (s *Store) PendingAuthRequests(ctx context.Context, card string, now time.Time) ([]store.AuthRequest, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+authColumns+` FROM auth_requests
		WHERE card = $1 AND status = $2 AND expires > $3 ORDER BY created, id`, card, store.AuthPending, now.UTC())
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
	_, err := s.pool.Exec(ctx, `INSERT INTO server_keys (public, private, created) VALUES ($1, $2, $3)`,
		blob(k.Public), blob(k.Private), now.UTC())
	if isCode(err, sqlstateUnique) {
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
	rows, err := s.pool.Query(ctx, `SELECT public, private, created, retired_at FROM server_keys `+
		where+` ORDER BY created DESC, public`)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer rows.Close()
	var ks []store.ServerKey
	for rows.Next() {
		var k store.ServerKey
		var created, retired *time.Time
		if err := rows.Scan(&k.Public, &k.Private, &created, &retired); err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		k.Created, k.RetiredAt = fromTS(created), fromTS(retired)
		ks = append(ks, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return ks, nil
}

// RetireServerKey implements store.ServerKeys.
//
// Under READ COMMITTED a plain "UPDATE … WHERE (SELECT count(*) … ) > 1"
// is not enough: two transactions retiring two different keys each count
// two current keys in their own snapshot, touch different rows, and both
// commit. So the transaction first locks every current key with SELECT …
// FOR UPDATE, in one order (by public) so that two retirers cannot
// deadlock. A second retirer blocks on the rows the first one locked;
// when the first commits, PostgreSQL re-checks each row it waited for
// against the WHERE clause on its newest version, drops the key the first
// one retired, and so the second sees the current keys as they are after
// the first retire. A key added concurrently may be missed, which can
// only make it refuse, never retire the last key.
func (s *Store) RetireServerKey(ctx context.Context, public []byte, now time.Time) error {
	return s.tx(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT public FROM server_keys WHERE retired_at IS NULL ORDER BY public FOR UPDATE`)
		if err != nil {
			return fmt.Errorf("retiring server key: %w", err)
		}
		current, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
		if err != nil {
			return fmt.Errorf("retiring server key: %w", err)
		}
		if !slices.ContainsFunc(current, func(p []byte) bool { return bytes.Equal(p, public) }) {
			// Unknown, or retired already (kept).
			var one int
			err := tx.QueryRow(ctx, `SELECT 1 FROM server_keys WHERE public = $1`, blob(public)).Scan(&one)
			if errors.Is(err, pgx.ErrNoRows) {
				return fmt.Errorf("retiring server key: %w", store.ErrNotFound)
			}
			if err != nil {
				return fmt.Errorf("retiring server key: %w", err)
			}
			return nil
		}
		if len(current) <= 1 {
			return fmt.Errorf("retiring server key: %w", store.ErrLastKey)
		}
		if _, err := tx.Exec(ctx, `UPDATE server_keys SET retired_at = $1 WHERE public = $2`, now.UTC(), blob(public)); err != nil {
			return fmt.Errorf("retiring server key: %w", err)
		}
		return nil
	})
}
