package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/bangerdev/banger/internal/model"
)

const snapshotColumns = `id, name, kind, source_vm, source_vm_id, image, kernel, vmm, cpus, memory_mib, disk_bytes,
	init_mode, network, policy, boot_id, mac, dir, state_bytes, state_sha256, disk_alloc_bytes, created_at,
	memory_bytes, memory_sha256`

var snapshotPlaceholders = strings.TrimSuffix(strings.Repeat("?,", strings.Count(snapshotColumns, ",")+1), ",")

func scanSnapshot(sc scanner) (model.Snapshot, error) {
	var s model.Snapshot
	var pol, created string
	err := sc.Scan(&s.ID, &s.Name, &s.Kind, &s.SourceVM, &s.SourceVMID, &s.Image, &s.Kernel, &s.VMM, &s.CPUs, &s.MemoryMiB, &s.DiskBytes,
		&s.InitMode, &s.Network, &pol, &s.BootID, &s.MAC, &s.Dir, &s.StateBytes, &s.StateSHA, &s.DiskAlloc, &created,
		&s.MemoryBytes, &s.MemorySHA)
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal([]byte(pol), &s.Policy); err != nil {
		return s, fmt.Errorf("decode policy of snapshot %q: %w", s.Name, err)
	}
	return s, decodeTimes(created, &s.CreatedAt)
}

// CreateSnapshot records a snapshot whose files are complete. A name taken
// gives ErrExists.
func (s *Store) CreateSnapshot(ctx context.Context, sn model.Snapshot) (model.Snapshot, error) {
	if err := model.ValidateSnapshotName(sn.Name); err != nil {
		return sn, fmt.Errorf("create snapshot: %w", err)
	}
	if sn.CreatedAt.IsZero() {
		sn.CreatedAt = s.now()
	}
	sn.CreatedAt = storedTime(sn.CreatedAt)
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO snapshots (`+snapshotColumns+`) VALUES (`+snapshotPlaceholders+`)`,
			sn.ID, sn.Name, sn.Kind, sn.SourceVM, sn.SourceVMID, sn.Image, sn.Kernel, sn.VMM, sn.CPUs, sn.MemoryMiB, sn.DiskBytes,
			sn.InitMode, sn.Network, encodePolicy(sn.Policy), sn.BootID, sn.MAC, sn.Dir, sn.StateBytes, sn.StateSHA, sn.DiskAlloc, encodeTime(sn.CreatedAt),
			sn.MemoryBytes, sn.MemorySHA)
		return err
	})
	if isConstraint(err) {
		return sn, fmt.Errorf("create snapshot %q: a snapshot with this name %w", sn.Name, ErrExists)
	}
	if err != nil {
		return sn, fmt.Errorf("create snapshot %q: %w", sn.Name, err)
	}
	return sn, nil
}

// GetSnapshot finds a snapshot by name or id, with the VMs forked from it.
func (s *Store) GetSnapshot(ctx context.Context, ref string) (model.Snapshot, error) {
	sn, err := scanSnapshot(s.db.QueryRowContext(ctx,
		`SELECT `+snapshotColumns+` FROM snapshots WHERE name = ?1 OR id = ?1 ORDER BY name = ?1 DESC LIMIT 1`, ref))
	if errors.Is(err, sql.ErrNoRows) {
		return sn, fmt.Errorf("snapshot %q: %w", ref, ErrNotFound)
	}
	if err != nil {
		return sn, fmt.Errorf("get snapshot %q: %w", ref, err)
	}
	if sn.Users, err = s.snapshotUsers(ctx, sn.ID); err != nil {
		return sn, err
	}
	return sn, nil
}

// ListSnapshots returns every snapshot ordered by name, with their users.
func (s *Store) ListSnapshots(ctx context.Context) ([]model.Snapshot, error) {
	out, err := list(ctx, s.db, scanSnapshot, `SELECT `+snapshotColumns+` FROM snapshots ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list snapshots: %w", err)
	}
	for i := range out {
		if out[i].Users, err = s.snapshotUsers(ctx, out[i].ID); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (s *Store) snapshotUsers(ctx context.Context, id string) ([]string, error) {
	names, err := list(ctx, s.db, func(sc scanner) (string, error) {
		var n string
		return n, sc.Scan(&n)
	}, `SELECT v.name FROM vm_snapshot f JOIN vms v ON v.id = f.vm_id WHERE f.snapshot_id = ? ORDER BY v.name`, id)
	if err != nil {
		return nil, fmt.Errorf("list vms forked from snapshot %s: %w", id, err)
	}
	return names, nil
}

// RecordFork records that the VM vmID was forked from snapshot snapID.
func (s *Store) RecordFork(ctx context.Context, vmID, snapID string) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO vm_snapshot (vm_id, snapshot_id) VALUES (?, ?)`, vmID, snapID)
		return err
	})
	if err != nil {
		return fmt.Errorf("record vm %s forked from snapshot %s: %w", vmID, snapID, err)
	}
	return nil
}

// DeleteSnapshot removes a snapshot's row. With force, the records of VMs
// forked from it go too (the VMs stay); without, a snapshot with forked
// VMs gives ErrInUse.
func (s *Store) DeleteSnapshot(ctx context.Context, id string, force bool) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		if force {
			if _, err := tx.ExecContext(ctx, `DELETE FROM vm_snapshot WHERE snapshot_id = ?`, id); err != nil {
				return err
			}
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM snapshots WHERE id = ?`, id)
		if isForeignKey(err) || isConstraint(err) {
			return ErrInUse
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("delete snapshot %s: %w", id, err)
	}
	return nil
}
