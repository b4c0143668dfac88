-- 0002: what a running VM needs beyond its definition: its guest address
-- lease, the identity that lets a restarted daemon re-adopt its VMM
-- (boot_id, pid_start_time), the commands run in it, its pinned SSH host
-- keys, and the host network objects made for it.

ALTER TABLE vms ADD COLUMN boot_id TEXT NOT NULL DEFAULT '';
-- Field 22 of /proc/PID/stat: with pid, tells our VMM from a recycled pid.
ALTER TABLE vms ADD COLUMN pid_start_time INTEGER NOT NULL DEFAULT 0;

-- One address per VM, one VM per address; both enforced here so that two
-- concurrent allocations can never hand out the same address.
CREATE TABLE leases (
    ip         TEXT PRIMARY KEY,
    vm_id      TEXT NOT NULL UNIQUE REFERENCES vms (id) ON DELETE CASCADE,
    mac        TEXT NOT NULL,
    created_at TEXT NOT NULL
) STRICT;

CREATE TABLE guest_sessions (
    id         TEXT PRIMARY KEY,
    vm_id      TEXT NOT NULL REFERENCES vms (id) ON DELETE CASCADE,
    op_id      TEXT NOT NULL DEFAULT '',
    command    TEXT NOT NULL, -- JSON array of argv
    started_at TEXT NOT NULL,
    ended_at   TEXT,          -- NULL while the command runs
    exit_code  INTEGER        -- NULL while the command runs
) STRICT;

CREATE INDEX guest_sessions_vm ON guest_sessions (vm_id, started_at);

CREATE TABLE host_keys (
    vm_id     TEXT NOT NULL REFERENCES vms (id) ON DELETE CASCADE,
    algorithm TEXT NOT NULL,
    key       TEXT NOT NULL, -- authorized_keys form
    pinned_at TEXT NOT NULL,
    PRIMARY KEY (vm_id, algorithm)
) STRICT;

-- No foreign key on vm_id: the record of a tap must outlive its VM's row
-- until the tap itself is gone, so a crash between the two leaves a trace
-- that cleanup can find. '' marks shared objects (bridge, NAT table).
CREATE TABLE net_objects (
    kind       TEXT NOT NULL,
    name       TEXT NOT NULL,
    vm_id      TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    PRIMARY KEY (kind, name)
) STRICT;

CREATE INDEX net_objects_vm ON net_objects (vm_id);
