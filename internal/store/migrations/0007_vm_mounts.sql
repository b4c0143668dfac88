-- 0007: host directories shared with each VM (model.Mount list as JSON)
-- and the working directory vm exec and vm run default to (--workspace).
-- VMs made before this migration share nothing.

ALTER TABLE vms ADD COLUMN mounts TEXT NOT NULL DEFAULT '[]';
ALTER TABLE vms ADD COLUMN workdir TEXT NOT NULL DEFAULT '';
