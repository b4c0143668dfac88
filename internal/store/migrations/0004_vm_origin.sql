-- 0004: who asked for each VM. "mcp" marks VMs created through `banger mcp`,
-- which the daemon counts against [mcp] max_vms; "" is any other client.

ALTER TABLE vms ADD COLUMN origin TEXT NOT NULL DEFAULT '';
