-- 0001: the core records: images, kernels and the VMs made from them.
-- Times are TEXT in a fixed-width UTC form (see store/codec.go) so that they
-- sort as strings and read well in the sqlite3 shell; '' means "never".
-- Enumerations (state, vmm, init_mode) are checked by the model, not by CHECK
-- constraints, so adding a value needs no table rebuild.

CREATE TABLE images (
    name       TEXT PRIMARY KEY,
    source     TEXT NOT NULL,
    digest     TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    path       TEXT NOT NULL,
    created_at TEXT NOT NULL
) STRICT;

CREATE TABLE kernels (
    name        TEXT PRIMARY KEY,
    release     TEXT NOT NULL,
    source      TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    path        TEXT NOT NULL,
    vmlinux     TEXT NOT NULL DEFAULT '',
    modules_dir TEXT NOT NULL DEFAULT '',
    vmms        TEXT NOT NULL DEFAULT '[]', -- JSON array of driver names
    created_at  TEXT NOT NULL
) STRICT;

-- A VM names its image and kernel without a foreign key: whether an artifact
-- in use may be deleted is the daemon's policy (ImageInUse, KernelInUse).
CREATE TABLE vms (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    state          TEXT NOT NULL,
    state_reason   TEXT NOT NULL DEFAULT '',
    image          TEXT NOT NULL,
    kernel         TEXT NOT NULL,
    vmm            TEXT NOT NULL,
    cpus           INTEGER NOT NULL,
    memory_mib     INTEGER NOT NULL,
    disk_bytes     INTEGER NOT NULL,
    init_mode      TEXT NOT NULL,
    dir            TEXT NOT NULL,
    ip             TEXT NOT NULL DEFAULT '',
    mac            TEXT NOT NULL DEFAULT '',
    tap            TEXT NOT NULL DEFAULT '',
    pid            INTEGER NOT NULL DEFAULT 0,
    control_socket TEXT NOT NULL DEFAULT '',
    agent_socket   TEXT NOT NULL DEFAULT '',
    console_log    TEXT NOT NULL DEFAULT '',
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    started_at     TEXT NOT NULL DEFAULT ''
) STRICT;

CREATE INDEX vms_image ON vms (image);
CREATE INDEX vms_kernel ON vms (kernel);
