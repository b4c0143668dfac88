package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/bangerdev/banger/internal/model"
)

// RecordNetObject records a host network object banger is about to create
// (record first, create second: a crash in between leaves a record cleanup
// can act on). Recording it again for the same VM returns the existing
// record; for another VM, ErrExists.
func (s *Store) RecordNetObject(ctx context.Context, o model.NetObject) (model.NetObject, error) {
	if o.Kind == "" || o.Name == "" {
		return model.NetObject{}, fmt.Errorf("record net object: kind and name are required")
	}
	if o.CreatedAt.IsZero() {
		o.CreatedAt = s.now()
	}
	o.CreatedAt = storedTime(o.CreatedAt)
	var out model.NetObject
	err := s.write(ctx, func(tx *sql.Tx) error {
		cur, err := scanNetObject(tx.QueryRowContext(ctx,
			`SELECT `+netObjectColumns+` FROM net_objects WHERE kind = ? AND name = ?`, o.Kind, o.Name))
		switch {
		case err == nil && cur.VMID == o.VMID:
			out = cur
			return nil
		case err == nil:
			return fmt.Errorf("recorded for vm %q: %w", cur.VMID, ErrExists)
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		out = o
		_, err = tx.ExecContext(ctx, `INSERT INTO net_objects (`+netObjectColumns+`) VALUES (?, ?, ?, ?)`,
			o.Kind, o.Name, o.VMID, encodeTime(o.CreatedAt))
		return err
	})
	if err != nil {
		return model.NetObject{}, fmt.Errorf("record %s %q: %w", o.Kind, o.Name, err)
	}
	return out, nil
}

// RemoveNetObject forgets a host network object once it is gone; removing
// an unknown one is not an error.
func (s *Store) RemoveNetObject(ctx context.Context, kind, name string) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM net_objects WHERE kind = ? AND name = ?`, kind, name)
		return err
	})
	if err != nil {
		return fmt.Errorf("remove record of %s %q: %w", kind, name, err)
	}
	return nil
}

const netObjectColumns = `kind, name, vm_id, created_at`

func scanNetObject(sc scanner) (model.NetObject, error) {
	var o model.NetObject
	var created string
	if err := sc.Scan(&o.Kind, &o.Name, &o.VMID, &created); err != nil {
		return o, err
	}
	return o, decodeTimes(created, &o.CreatedAt)
}

// ListNetObjectsByVM returns the objects recorded for the VM, by kind and name.
func (s *Store) ListNetObjectsByVM(ctx context.Context, vmID string) ([]model.NetObject, error) {
	out, err := list(ctx, s.db, scanNetObject,
		`SELECT `+netObjectColumns+` FROM net_objects WHERE vm_id = ? ORDER BY kind, name`, vmID)
	if err != nil {
		return nil, fmt.Errorf("list net objects of vm %s: %w", vmID, err)
	}
	return out, nil
}

// ListNetObjects returns every recorded object, by kind and name.
func (s *Store) ListNetObjects(ctx context.Context) ([]model.NetObject, error) {
	out, err := list(ctx, s.db, scanNetObject, `SELECT `+netObjectColumns+` FROM net_objects ORDER BY kind, name`)
	if err != nil {
		return nil, fmt.Errorf("list net objects: %w", err)
	}
	return out, nil
}
