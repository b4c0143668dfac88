-- 0003: each VM's network mode. Isolated VMs reach only the host (and the
-- outside through it); shared VMs also reach each other. VMs made before
-- this migration become isolated, banger's default.

ALTER TABLE vms ADD COLUMN network TEXT NOT NULL DEFAULT 'isolated';
