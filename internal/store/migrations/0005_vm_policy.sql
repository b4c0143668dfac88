-- 0005: each VM's policy overrides (model.VMPolicy as JSON): destinations
-- the host drops for it and guest ports vm forward refuses. VMs made before
-- this migration have none: the defaults (metadata always dropped) apply.

ALTER TABLE vms ADD COLUMN policy TEXT NOT NULL DEFAULT '{}';
