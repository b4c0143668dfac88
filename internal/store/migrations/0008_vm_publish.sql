-- 0008: which guest ports the daemon publishes on the host's loopback while
-- the VM runs (model.VMPublish as JSON). VMs made before publish nothing.

ALTER TABLE vms ADD COLUMN publish TEXT NOT NULL DEFAULT '{}';
