-- 0010: a snapshot may keep its guest RAM in a file of its own (clones map
-- it copy-on-write and share its pages); its state file then holds only
-- the device state. memory_bytes and memory_sha256 are that file's size
-- and SHA-256, checked before any fork; 0 and '' when the RAM is in the
-- state file, as in every snapshot taken before this migration.

ALTER TABLE snapshots ADD COLUMN memory_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE snapshots ADD COLUMN memory_sha256 TEXT NOT NULL DEFAULT '';
