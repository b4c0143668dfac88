package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Operation kinds the journal records.
const (
	OpCreate = "create"
	OpStart  = "start"
	OpStop   = "stop"
	OpRemove = "remove"
	// OpFork is one clone of vm fork (and vm run --from/--template):
	// recovered as a create, rolled back whole.
	OpFork = "fork"
)

// Operation is a journal row: a mutating VM operation under way. It is
// written before the operation's first side effect and deleted when the
// operation ends; one found at daemon start was cut short by a crash.
type Operation struct {
	ID        int64       `json:"id"`
	OpID      string      `json:"op_id,omitempty"`
	Kind      string      `json:"kind"`
	VMID      string      `json:"vm_id"`
	VMName    string      `json:"vm_name,omitempty"`
	Step      string      `json:"step,omitempty"` // the last step begun
	Created   OpResources `json:"created"`
	StartedAt time.Time   `json:"started_at"`
	UpdatedAt time.Time   `json:"updated_at"`
}

// OpResources is what an operation made so far, for a recovery to undo.
type OpResources struct {
	Record       bool   `json:"record,omitempty"` // the vm row is this operation's
	Dir          string `json:"dir,omitempty"`
	Disk         string `json:"disk,omitempty"`
	Tap          string `json:"tap,omitempty"`
	IP           string `json:"ip,omitempty"` // the lease
	PID          int    `json:"pid,omitempty"`
	PIDStartTime uint64 `json:"pid_start_time,omitempty"`
}

const opColumns = `id, op_id, kind, vm_id, vm_name, step, created, started_at, updated_at`

func scanOperation(sc scanner) (Operation, error) {
	var o Operation
	var created, started, updated string
	if err := sc.Scan(&o.ID, &o.OpID, &o.Kind, &o.VMID, &o.VMName, &o.Step, &created, &started, &updated); err != nil {
		return o, err
	}
	if err := json.Unmarshal([]byte(created), &o.Created); err != nil {
		return o, fmt.Errorf("decode operation %d resources: %w", o.ID, err)
	}
	return o, decodeTimes(started, &o.StartedAt, updated, &o.UpdatedAt)
}

// BeginOperation journals an operation about to start and returns it with
// its id.
func (s *Store) BeginOperation(ctx context.Context, o Operation) (Operation, error) {
	if o.Kind == "" || o.VMID == "" {
		return o, errors.New("journal operation: kind and vm id are required")
	}
	now := storedTime(s.now())
	o.StartedAt, o.UpdatedAt = now, now
	created, err := json.Marshal(o.Created)
	if err != nil {
		return o, fmt.Errorf("journal %s of vm %q: %w", o.Kind, o.VMName, err)
	}
	err = s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO operations (op_id, kind, vm_id, vm_name, step, created, started_at, updated_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, o.OpID, o.Kind, o.VMID, o.VMName, o.Step, string(created), encodeTime(now), encodeTime(now))
		if err != nil {
			return err
		}
		o.ID, err = res.LastInsertId()
		return err
	})
	if err != nil {
		return o, fmt.Errorf("journal %s of vm %q: %w", o.Kind, o.VMName, err)
	}
	return o, nil
}

// UpdateOperation records the step an operation reached and what it made.
func (s *Store) UpdateOperation(ctx context.Context, id int64, step string, created OpResources) error {
	b, err := json.Marshal(created)
	if err != nil {
		return fmt.Errorf("journal step %s: %w", step, err)
	}
	err = s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE operations SET step = ?, created = ?, updated_at = ? WHERE id = ?`,
			step, string(b), encodeTime(storedTime(s.now())), id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("operation %d: %w", id, ErrNotFound)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("journal step %s: %w", step, err)
	}
	return nil
}

// EndOperation deletes an operation's row: it finished, or was undone.
// Ending one that is gone is not an error.
func (s *Store) EndOperation(ctx context.Context, id int64) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM operations WHERE id = ?`, id)
		return err
	})
	if err != nil {
		return fmt.Errorf("end journalled operation %d: %w", id, err)
	}
	return nil
}

// ListOperations returns the journal, oldest first.
func (s *Store) ListOperations(ctx context.Context) ([]Operation, error) {
	out, err := list(ctx, s.db, scanOperation, `SELECT `+opColumns+` FROM operations ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list journalled operations: %w", err)
	}
	return out, nil
}
