-- 0006: snapshots (vm snapshot, template create) and which VMs were forked
-- from which snapshot. A snapshot keeps its files in its own dir: the
-- memory and device state (state_bytes, state_sha256, checked before any
-- restore) and a copy of the source's root disk. kind is "snapshot" or
-- "template"; boot_id is the id the source's agent answered with when it
-- was taken (a clone answers with it until it is given its own).

CREATE TABLE snapshots (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    kind         TEXT NOT NULL DEFAULT 'snapshot',
    source_vm    TEXT NOT NULL,
    source_vm_id TEXT NOT NULL,
    image        TEXT NOT NULL,
    kernel       TEXT NOT NULL,
    vmm          TEXT NOT NULL,
    cpus         INTEGER NOT NULL,
    memory_mib   INTEGER NOT NULL,
    disk_bytes   INTEGER NOT NULL,
    init_mode    TEXT NOT NULL,
    network      TEXT NOT NULL,
    policy       TEXT NOT NULL DEFAULT '{}',
    boot_id      TEXT NOT NULL,
    mac          TEXT NOT NULL DEFAULT '',
    dir          TEXT NOT NULL,
    state_bytes  INTEGER NOT NULL,
    state_sha256 TEXT NOT NULL,
    disk_alloc_bytes INTEGER NOT NULL DEFAULT 0,
    created_at   TEXT NOT NULL
);

-- A VM forked from a snapshot; the row goes with the VM.
CREATE TABLE vm_snapshot (
    vm_id       TEXT PRIMARY KEY REFERENCES vms(id) ON DELETE CASCADE,
    snapshot_id TEXT NOT NULL REFERENCES snapshots(id)
);
CREATE INDEX vm_snapshot_by_snapshot ON vm_snapshot(snapshot_id);
