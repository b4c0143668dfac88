package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/bangerdev/banger/internal/model"
)

// ErrHostKeyMismatch: a different key is already pinned for the VM and
// algorithm. Under trust-on-first-use this is the alarm.
var ErrHostKeyMismatch = errors.New("host key differs from the pinned key")

// StartGuestSession records a command started in a guest. An empty ID gets
// a fresh one; a zero StartedAt is now. Unknown VM: ErrNotFound.
func (s *Store) StartGuestSession(ctx context.Context, gs model.GuestSession) (model.GuestSession, error) {
	if gs.ID == "" {
		id, err := randomID()
		if err != nil {
			return model.GuestSession{}, fmt.Errorf("start guest session: %w", err)
		}
		gs.ID = id
	}
	if len(gs.Command) == 0 {
		return model.GuestSession{}, fmt.Errorf("start guest session in vm %s: empty command", gs.VMID)
	}
	if gs.StartedAt.IsZero() {
		gs.StartedAt = s.now()
	}
	gs.StartedAt = storedTime(gs.StartedAt)
	gs.EndedAt, gs.ExitCode = nil, nil
	cmd, err := json.Marshal(gs.Command)
	if err != nil {
		return model.GuestSession{}, fmt.Errorf("start guest session in vm %s: %w", gs.VMID, err)
	}
	err = s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO guest_sessions (id, vm_id, op_id, command, started_at) VALUES (?, ?, ?, ?, ?)`,
			gs.ID, gs.VMID, gs.OpID, string(cmd), encodeTime(gs.StartedAt))
		switch {
		case isForeignKey(err):
			return fmt.Errorf("vm: %w", ErrNotFound)
		case isConstraint(err):
			return fmt.Errorf("session id %s: %w", gs.ID, ErrExists)
		}
		return err
	})
	if err != nil {
		return model.GuestSession{}, fmt.Errorf("start guest session in vm %s: %w", gs.VMID, err)
	}
	return gs, nil
}

// EndGuestSession records that the session's command exited with exitCode.
func (s *Store) EndGuestSession(ctx context.Context, id string, exitCode int) (model.GuestSession, error) {
	var out model.GuestSession
	err := s.write(ctx, func(tx *sql.Tx) error {
		gs, err := scanGuestSession(tx.QueryRowContext(ctx, `SELECT `+sessionColumns+` FROM guest_sessions WHERE id = ?`, id))
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		if gs.EndedAt != nil {
			return fmt.Errorf("already ended at %s", gs.EndedAt.Format(timeLayout))
		}
		ended := storedTime(s.now())
		gs.EndedAt, gs.ExitCode = &ended, &exitCode
		out = gs
		_, err = tx.ExecContext(ctx, `UPDATE guest_sessions SET ended_at = ?, exit_code = ? WHERE id = ?`,
			encodeTime(ended), exitCode, id)
		return err
	})
	if err != nil {
		return model.GuestSession{}, fmt.Errorf("end guest session %s: %w", id, err)
	}
	return out, nil
}

const sessionColumns = `id, vm_id, op_id, command, started_at, ended_at, exit_code`

func scanGuestSession(sc scanner) (model.GuestSession, error) {
	var gs model.GuestSession
	var cmd, started string
	var ended sql.NullString
	var code sql.NullInt64
	if err := sc.Scan(&gs.ID, &gs.VMID, &gs.OpID, &cmd, &started, &ended, &code); err != nil {
		return gs, err
	}
	if err := json.Unmarshal([]byte(cmd), &gs.Command); err != nil {
		return gs, fmt.Errorf("decode command of guest session %s: %w", gs.ID, err)
	}
	if ended.Valid {
		t, err := decodeTime(ended.String)
		if err != nil {
			return gs, err
		}
		gs.EndedAt = &t
	}
	if code.Valid {
		c := int(code.Int64)
		gs.ExitCode = &c
	}
	return gs, decodeTimes(started, &gs.StartedAt)
}

// ListGuestSessions returns the VM's sessions, oldest first.
func (s *Store) ListGuestSessions(ctx context.Context, vmID string) ([]model.GuestSession, error) {
	out, err := list(ctx, s.db, scanGuestSession,
		`SELECT `+sessionColumns+` FROM guest_sessions WHERE vm_id = ? ORDER BY started_at, id`, vmID)
	if err != nil {
		return nil, fmt.Errorf("list guest sessions of vm %s: %w", vmID, err)
	}
	return out, nil
}

// PinHostKey pins the VM's host key for k.Algorithm on first use. Pinning
// the same key again returns the existing pin; a different key gives
// ErrHostKeyMismatch and changes nothing. Unknown VM: ErrNotFound.
func (s *Store) PinHostKey(ctx context.Context, k model.HostKey) (model.HostKey, error) {
	if k.VMID == "" || k.Algorithm == "" || k.Key == "" {
		return model.HostKey{}, fmt.Errorf("pin host key: vm id, algorithm and key are all required")
	}
	if k.PinnedAt.IsZero() {
		k.PinnedAt = s.now()
	}
	k.PinnedAt = storedTime(k.PinnedAt)
	var out model.HostKey
	err := s.write(ctx, func(tx *sql.Tx) error {
		cur, err := scanHostKey(tx.QueryRowContext(ctx,
			`SELECT `+hostKeyColumns+` FROM host_keys WHERE vm_id = ? AND algorithm = ?`, k.VMID, k.Algorithm))
		switch {
		case err == nil && cur.Key == k.Key:
			out = cur
			return nil
		case err == nil:
			return ErrHostKeyMismatch
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO host_keys (`+hostKeyColumns+`) VALUES (?, ?, ?, ?)`,
			k.VMID, k.Algorithm, k.Key, encodeTime(k.PinnedAt))
		if isForeignKey(err) {
			return fmt.Errorf("vm: %w", ErrNotFound)
		}
		out = k
		return err
	})
	if err != nil {
		return model.HostKey{}, fmt.Errorf("pin %s host key of vm %s: %w", k.Algorithm, k.VMID, err)
	}
	return out, nil
}

const hostKeyColumns = `vm_id, algorithm, key, pinned_at`

func scanHostKey(sc scanner) (model.HostKey, error) {
	var k model.HostKey
	var pinned string
	if err := sc.Scan(&k.VMID, &k.Algorithm, &k.Key, &pinned); err != nil {
		return k, err
	}
	return k, decodeTimes(pinned, &k.PinnedAt)
}

// GetHostKeys returns the VM's pinned keys ordered by algorithm; none is an
// empty list, not an error.
func (s *Store) GetHostKeys(ctx context.Context, vmID string) ([]model.HostKey, error) {
	out, err := list(ctx, s.db, scanHostKey,
		`SELECT `+hostKeyColumns+` FROM host_keys WHERE vm_id = ? ORDER BY algorithm`, vmID)
	if err != nil {
		return nil, fmt.Errorf("get host keys of vm %s: %w", vmID, err)
	}
	return out, nil
}

// ForgetHostKeys unpins every key of the VM; forgetting none is not an error.
func (s *Store) ForgetHostKeys(ctx context.Context, vmID string) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM host_keys WHERE vm_id = ?`, vmID)
		return err
	})
	if err != nil {
		return fmt.Errorf("forget host keys of vm %s: %w", vmID, err)
	}
	return nil
}
