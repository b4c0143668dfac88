-- 0009: the operations journal. A mutating VM operation (create, start,
-- stop, remove) writes its row before its first side effect, updates the
-- step it reached and what it made (pid + start time, tap, lease, disk) as
-- it goes, and deletes the row when it ends, done or undone. A row found at
-- daemon start is an operation a crash interrupted: the daemon finishes or
-- rolls it back from what the row says (vmlife.Manager.Recover).
-- No foreign key on vm_id: the row is written before the VM's and must
-- outlive it until what it lists is gone.

CREATE TABLE operations (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    op_id      TEXT NOT NULL DEFAULT '',
    kind       TEXT NOT NULL,
    vm_id      TEXT NOT NULL,
    vm_name    TEXT NOT NULL DEFAULT '',
    step       TEXT NOT NULL DEFAULT '',
    created    TEXT NOT NULL DEFAULT '{}', -- JSON: store.OpResources
    started_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
) STRICT;

CREATE INDEX operations_vm ON operations (vm_id);
