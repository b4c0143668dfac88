package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/bangerdev/banger/internal/model"
)

// ErrPoolExhausted: every usable address of the pool is leased.
var ErrPoolExhausted = errors.New("address pool exhausted")

// AllocateLease gives the VM with vmID the lowest free IPv4 address of pool,
// never the pool's network or broadcast address nor any of reserved (the
// gateway). The lease carries the VM's MAC as stored. A VM that already holds
// a lease in the pool gets that lease again, so a retried create does not
// leak addresses. Uniqueness holds across goroutines (one writer at a time)
// and across processes (the leases table's primary key).
//
// The VM row's IP field is not changed: the caller records the address.
func (s *Store) AllocateLease(ctx context.Context, vmID string, pool netip.Prefix, reserved []netip.Addr) (model.Lease, error) {
	if !pool.IsValid() || !pool.Addr().Is4() {
		return model.Lease{}, fmt.Errorf("allocate address for vm %s: pool %s is not an IPv4 prefix", vmID, pool)
	}
	pool = pool.Masked()
	var lease model.Lease
	err := s.write(ctx, func(tx *sql.Tx) error {
		held, err := scanLease(tx.QueryRowContext(ctx, `SELECT `+leaseColumns+` FROM leases WHERE vm_id = ?`, vmID))
		switch {
		case err == nil:
			if a, perr := netip.ParseAddr(held.IP); perr == nil && pool.Contains(a) {
				lease = held
				return nil
			}
			return fmt.Errorf("vm already holds %s, outside pool %s: release it first: %w", held.IP, pool, ErrExists)
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		var mac string
		err = tx.QueryRowContext(ctx, `SELECT mac FROM vms WHERE id = ?`, vmID).Scan(&mac)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("vm: %w", ErrNotFound)
		}
		if err != nil {
			return err
		}
		ips, err := list(ctx, tx, func(sc scanner) (string, error) {
			var ip string
			return ip, sc.Scan(&ip)
		}, `SELECT ip FROM leases`)
		if err != nil {
			return err
		}
		taken := make(map[netip.Addr]bool, len(ips)+len(reserved))
		for _, ip := range ips {
			if a, err := netip.ParseAddr(ip); err == nil {
				taken[a] = true
			}
		}
		for _, a := range reserved {
			taken[a] = true
		}
		ip, usable, ok := lowestFree(pool, taken)
		if !ok {
			return fmt.Errorf("all %d usable addresses of %s are leased or reserved (network, broadcast and %d reserved excluded): %w",
				usable, pool, len(reserved), ErrPoolExhausted)
		}
		lease = model.Lease{IP: ip.String(), VMID: vmID, MAC: mac, CreatedAt: storedTime(s.now())}
		_, err = tx.ExecContext(ctx, `INSERT INTO leases (`+leaseColumns+`) VALUES (?, ?, ?, ?)`,
			lease.IP, lease.VMID, lease.MAC, encodeTime(lease.CreatedAt))
		if isConstraint(err) {
			return fmt.Errorf("address %s: %w", lease.IP, ErrExists)
		}
		return err
	})
	if err != nil {
		return model.Lease{}, fmt.Errorf("allocate address for vm %s in %s: %w", vmID, pool, err)
	}
	return lease, nil
}

// lowestFree walks the pool from its first host address; usable counts
// host addresses seen, for the exhaustion message.
func lowestFree(pool netip.Prefix, taken map[netip.Addr]bool) (ip netip.Addr, usable int, ok bool) {
	network := pool.Addr()
	for a := network.Next(); a.IsValid() && pool.Contains(a); a = a.Next() {
		next := a.Next()
		if !next.IsValid() || !pool.Contains(next) {
			break // a is the broadcast address
		}
		usable++
		if !taken[a] {
			return a, usable, true
		}
	}
	return netip.Addr{}, usable, false
}

const leaseColumns = `ip, vm_id, mac, created_at`

func scanLease(sc scanner) (model.Lease, error) {
	var l model.Lease
	var created string
	if err := sc.Scan(&l.IP, &l.VMID, &l.MAC, &created); err != nil {
		return l, err
	}
	return l, decodeTimes(created, &l.CreatedAt)
}

// ReleaseLease frees the VM's address; releasing none is not an error.
func (s *Store) ReleaseLease(ctx context.Context, vmID string) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM leases WHERE vm_id = ?`, vmID)
		return err
	})
	if err != nil {
		return fmt.Errorf("release address of vm %s: %w", vmID, err)
	}
	return nil
}

// LeaseForVM returns the VM's lease, or ErrNotFound.
func (s *Store) LeaseForVM(ctx context.Context, vmID string) (model.Lease, error) {
	l, err := scanLease(s.db.QueryRowContext(ctx, `SELECT `+leaseColumns+` FROM leases WHERE vm_id = ?`, vmID))
	if errors.Is(err, sql.ErrNoRows) {
		return model.Lease{}, fmt.Errorf("lease of vm %s: %w", vmID, ErrNotFound)
	}
	if err != nil {
		return model.Lease{}, fmt.Errorf("get lease of vm %s: %w", vmID, err)
	}
	return l, nil
}

// ListLeases returns every lease in address order.
func (s *Store) ListLeases(ctx context.Context) ([]model.Lease, error) {
	ls, err := list(ctx, s.db, scanLease, `SELECT `+leaseColumns+` FROM leases`)
	if err != nil {
		return nil, fmt.Errorf("list leases: %w", err)
	}
	slices.SortFunc(ls, func(a, b model.Lease) int {
		x, _ := netip.ParseAddr(a.IP)
		y, _ := netip.ParseAddr(b.IP)
		return x.Compare(y)
	})
	return ls, nil
}
