package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/bangerdev/banger/internal/model"
)

const vmColumns = `id, name, state, state_reason, image, kernel, vmm, cpus, memory_mib, disk_bytes,
	init_mode, boot_id, dir, ip, mac, tap, pid, pid_start_time, control_socket, agent_socket,
	console_log, created_at, updated_at, started_at, network, origin, policy, publish, mounts, workdir`

// vmPlaceholders has one "?" per column of vmColumns.
var vmPlaceholders = strings.TrimSuffix(strings.Repeat("?,", strings.Count(vmColumns, ",")+1), ",")

func vmArgs(v model.VM) []any {
	return []any{v.ID, v.Name, string(v.State), v.StateReason, v.Image, v.Kernel, v.VMM, v.CPUs, v.MemoryMiB, v.DiskBytes,
		v.InitMode, v.BootID, v.Dir, v.IP, v.MAC, v.Tap, v.PID, int64(v.PIDStartTime), v.ControlSocket, v.AgentSocket,
		v.ConsoleLog, encodeTime(v.CreatedAt), encodeTime(v.UpdatedAt), encodeTime(v.StartedAt), v.Network, v.Origin, encodePolicy(v.Policy), encodePublish(v.Publish), encodeMounts(v.Mounts), v.Workdir}
}

func scanVM(sc scanner) (model.VM, error) {
	var v model.VM
	var state, created, updated, started, pol, pub, mounts string
	var startTime int64
	err := sc.Scan(&v.ID, &v.Name, &state, &v.StateReason, &v.Image, &v.Kernel, &v.VMM, &v.CPUs, &v.MemoryMiB, &v.DiskBytes,
		&v.InitMode, &v.BootID, &v.Dir, &v.IP, &v.MAC, &v.Tap, &v.PID, &startTime, &v.ControlSocket, &v.AgentSocket,
		&v.ConsoleLog, &created, &updated, &started, &v.Network, &v.Origin, &pol, &pub, &mounts, &v.Workdir)
	if err != nil {
		return v, err
	}
	v.State = model.VMState(state)
	v.PIDStartTime = uint64(startTime) // stored as the same 64 bits
	if err := json.Unmarshal([]byte(pol), &v.Policy); err != nil {
		return v, fmt.Errorf("decode policy of vm %q: %w", v.Name, err)
	}
	if err := json.Unmarshal([]byte(pub), &v.Publish); err != nil {
		return v, fmt.Errorf("decode published ports of vm %q: %w", v.Name, err)
	}
	if mounts == "[]" {
		mounts = "null" // none: a nil list, as the VM was made
	}
	if err := json.Unmarshal([]byte(mounts), &v.Mounts); err != nil {
		return v, fmt.Errorf("decode mounts of vm %q: %w", v.Name, err)
	}
	return v, decodeTimes(created, &v.CreatedAt, updated, &v.UpdatedAt, started, &v.StartedAt)
}

// CreateVM inserts a new VM. An empty ID gets a fresh one, an empty State
// is creating, an empty Network is isolated, and a zero CreatedAt is now. A name or id already taken gives
// ErrExists.
func (s *Store) CreateVM(ctx context.Context, vm model.VM) (model.VM, error) {
	if vm.ID == "" {
		id, err := model.NewVMID()
		if err != nil {
			return model.VM{}, fmt.Errorf("create vm %q: %w", vm.Name, err)
		}
		vm.ID = id
	}
	if vm.State == "" {
		vm.State = model.StateCreating
	}
	if vm.Network == "" {
		vm.Network = model.NetworkIsolated
	}
	now := s.now()
	if vm.CreatedAt.IsZero() {
		vm.CreatedAt = now
	}
	vm.UpdatedAt = now
	if err := vm.Validate(); err != nil {
		return model.VM{}, fmt.Errorf("create vm: %w", err)
	}
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO vms (`+vmColumns+`) VALUES (`+vmPlaceholders+`)`, vmArgs(vm)...)
		return err
	})
	if isConstraint(err) {
		return model.VM{}, fmt.Errorf("create vm %q: a vm with this name or id %w", vm.Name, ErrExists)
	}
	if err != nil {
		return model.VM{}, fmt.Errorf("create vm %q: %w", vm.Name, err)
	}
	vm = roundTimes(vm)
	s.notify(ctx, nil, &vm)
	return vm, nil
}

// GetVM finds a VM by name or by id; a name wins over an id that happens to
// spell the same.
func (s *Store) GetVM(ctx context.Context, ref string) (model.VM, error) {
	v, err := scanVM(s.db.QueryRowContext(ctx,
		`SELECT `+vmColumns+` FROM vms WHERE name = ?1 OR id = ?1 ORDER BY name = ?1 DESC LIMIT 1`, ref))
	if errors.Is(err, sql.ErrNoRows) {
		return model.VM{}, fmt.Errorf("vm %q: %w", ref, ErrNotFound)
	}
	if err != nil {
		return model.VM{}, fmt.Errorf("get vm %q: %w", ref, err)
	}
	return v, nil
}

// ListVMs returns every VM ordered by name.
func (s *Store) ListVMs(ctx context.Context) ([]model.VM, error) {
	vms, err := list(ctx, s.db, scanVM, `SELECT `+vmColumns+` FROM vms ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list vms: %w", err)
	}
	return vms, nil
}

// UpdateVM writes every field of the VM with vm.ID except CreatedAt, and
// sets UpdatedAt. A change of State must be a valid transition
// (model.ErrInvalidTransition otherwise), checked against the stored state in
// the same transaction.
func (s *Store) UpdateVM(ctx context.Context, vm model.VM) (model.VM, error) {
	if err := vm.Validate(); err != nil {
		return model.VM{}, fmt.Errorf("update vm: %w", err)
	}
	var out, prev model.VM
	err := s.write(ctx, func(tx *sql.Tx) error {
		cur, err := scanVM(tx.QueryRowContext(ctx, `SELECT `+vmColumns+` FROM vms WHERE id = ?`, vm.ID))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("vm %q (id %s): %w", vm.Name, vm.ID, ErrNotFound)
		}
		if err != nil {
			return err
		}
		if cur.State != vm.State {
			if err := model.CheckTransition(cur.State, vm.State); err != nil {
				return err
			}
		}
		vm.CreatedAt = cur.CreatedAt
		vm.UpdatedAt = s.now()
		args := vmArgs(vm)
		_, err = tx.ExecContext(ctx, `UPDATE vms SET (`+vmColumns+`) = (`+vmPlaceholders+`) WHERE id = ?`,
			append(args, vm.ID)...)
		if isConstraint(err) {
			return fmt.Errorf("another vm is named %q: %w", vm.Name, ErrExists)
		}
		out = roundTimes(vm)
		prev = cur
		return err
	})
	if err != nil {
		return model.VM{}, fmt.Errorf("update vm %q: %w", vm.Name, err)
	}
	s.notify(ctx, &prev, &out)
	return out, nil
}

// SetVMState moves the VM with id to state to, recording why, if
// model.CanTransition allows it; otherwise model.ErrInvalidTransition.
func (s *Store) SetVMState(ctx context.Context, id string, to model.VMState, reason string) (model.VM, error) {
	var out, prev model.VM
	err := s.write(ctx, func(tx *sql.Tx) error {
		cur, err := scanVM(tx.QueryRowContext(ctx, `SELECT `+vmColumns+` FROM vms WHERE id = ?`, id))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("vm id %s: %w", id, ErrNotFound)
		}
		if err != nil {
			return err
		}
		if err := model.CheckTransition(cur.State, to); err != nil {
			return fmt.Errorf("vm %q: %w", cur.Name, err)
		}
		prev = cur
		cur.State, cur.StateReason, cur.UpdatedAt = to, reason, s.now()
		if _, err := tx.ExecContext(ctx, `UPDATE vms SET state = ?, state_reason = ?, updated_at = ? WHERE id = ?`,
			string(to), reason, encodeTime(cur.UpdatedAt), id); err != nil {
			return err
		}
		out = roundTimes(cur)
		return nil
	})
	if err != nil {
		return model.VM{}, fmt.Errorf("set state of vm %s to %s: %w", id, to, err)
	}
	s.notify(ctx, &prev, &out)
	return out, nil
}

// DeleteVM removes the VM with id, and with it its lease, guest sessions and
// pinned host keys. Its net objects stay recorded until removed.
func (s *Store) DeleteVM(ctx context.Context, id string) error {
	var prev model.VM
	err := s.write(ctx, func(tx *sql.Tx) error {
		cur, err := scanVM(tx.QueryRowContext(ctx, `SELECT `+vmColumns+` FROM vms WHERE id = ?`, id))
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		prev = cur
		return expectOne(tx.ExecContext(ctx, `DELETE FROM vms WHERE id = ?`, id))
	})
	if err != nil {
		return fmt.Errorf("delete vm id %s: %w", id, err)
	}
	s.notify(ctx, &prev, nil)
	return nil
}

// expectOne turns "no row affected" into ErrNotFound.
func expectOne(res sql.Result, err error) error {
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// roundTimes returns vm with its times as they read back from the store
// (UTC, nanoseconds, no monotonic reading), so a returned VM equals a
// re-read one.
func roundTimes(vm model.VM) model.VM {
	vm.CreatedAt, vm.UpdatedAt, vm.StartedAt = storedTime(vm.CreatedAt), storedTime(vm.UpdatedAt), storedTime(vm.StartedAt)
	return vm
}

func storedTime(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC().Round(0)
}

// encodePolicy stores a VM's policy as JSON ("{}" when empty).
func encodePolicy(p model.VMPolicy) string {
	b, err := json.Marshal(p)
	if err != nil { // plain strings, bools and ints: cannot fail
		panic(fmt.Sprintf("encode vm policy: %v", err))
	}
	return string(b)
}

// encodePublish stores a VM's published ports as JSON ("{}" when none).
func encodePublish(p model.VMPublish) string {
	b, err := json.Marshal(p)
	if err != nil { // bools and ints: cannot fail
		panic(fmt.Sprintf("encode vm publish: %v", err))
	}
	return string(b)
}

// encodeMounts stores a VM's shared directories as JSON ("[]" when none).
func encodeMounts(ms []model.Mount) string {
	if len(ms) == 0 {
		return "[]"
	}
	b, err := json.Marshal(ms)
	if err != nil { // plain strings and bools: cannot fail
		panic(fmt.Sprintf("encode vm mounts: %v", err))
	}
	return string(b)
}
