package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"cardlink/internal/store"
)

// SetBiometric implements store.Biometrics.
func (s *Store) SetBiometric(ctx context.Context, b store.Biometric) error {
	if b.MaxTries < 1 || b.Threshold < 0 {
		return fmt.Errorf("setting biometric: MaxTries %d, Threshold %d; want at least 1 and 0", b.MaxTries, b.Threshold)
	}
	_, err := s.w.ExecContext(ctx, `INSERT INTO biometrics (card, template, threshold, tries, max_tries) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (card) DO UPDATE SET template = excluded.template, threshold = excluded.threshold,
			tries = excluded.tries, max_tries = excluded.max_tries`,
		b.Card, blob(b.Template), b.Threshold, b.MaxTries, b.MaxTries)
	if isForeignKey(err) {
		return fmt.Errorf("setting biometric: card: %w", store.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("setting biometric: %w", err)
	}
	return nil
}

const bioColumns = `card, template, threshold, tries, max_tries`

func scanBiometric(row *sql.Row) (store.Biometric, error) {
	var b store.Biometric
	err := row.Scan(&b.Card, &b.Template, &b.Threshold, &b.Tries, &b.MaxTries)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Biometric{}, store.ErrNotFound
	}
	return b, err
}

// Biometric implements store.Biometrics.
func (s *Store) Biometric(ctx context.Context, card string) (store.Biometric, error) {
	b, err := scanBiometric(s.row(ctx, `SELECT `+bioColumns+` FROM biometrics WHERE card = ?`, card))
	if err != nil {
		return store.Biometric{}, fmt.Errorf("reading biometric: %w", err)
	}
	return b, nil
}

// DecrementBiometricTries implements store.Biometrics.
func (s *Store) DecrementBiometricTries(ctx context.Context, card string) (store.Biometric, error) {
	// One statement takes the try; the read after a refusal only names it.
	b, err := scanBiometric(s.w.QueryRowContext(ctx, `UPDATE biometrics SET tries = tries - 1 WHERE card = ? AND tries > 0 RETURNING `+bioColumns, card))
	if errors.Is(err, store.ErrNotFound) {
		var one int
		switch err = s.row(ctx, `SELECT 1 FROM biometrics WHERE card = ?`, card).Scan(&one); {
		case errors.Is(err, sql.ErrNoRows):
			err = store.ErrNotFound
		case err == nil:
			err = store.ErrLocked
		}
	}
	if err != nil {
		return store.Biometric{}, fmt.Errorf("taking a biometric try: %w", err)
	}
	return b, nil
}

// ResetBiometricTries implements store.Biometrics.
func (s *Store) ResetBiometricTries(ctx context.Context, card string) error {
	res, err := s.w.ExecContext(ctx, `UPDATE biometrics SET tries = max_tries WHERE card = ?`, card)
	if err == nil && affected(res) == 0 {
		err = store.ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("resetting biometric tries: %w", err)
	}
	return nil
}

// DeleteBiometric implements store.Biometrics.
func (s *Store) DeleteBiometric(ctx context.Context, card string) error {
	return s.delete(ctx, `DELETE FROM biometrics WHERE card = ?`, card, "deleting biometric")
}

// DeletePIN implements store.PINs.
func (s *Store) DeletePIN(ctx context.Context, card string) error {
	return s.delete(ctx, `DELETE FROM pins WHERE card = ?`, card, "deleting PIN")
}

// delete runs a DELETE of the row with key, ErrNotFound when there is
// none.
func (s *Store) delete(ctx context.Context, query string, key any, what string) error {
	res, err := s.w.ExecContext(ctx, query, key)
	if err == nil && affected(res) == 0 {
		err = store.ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}
