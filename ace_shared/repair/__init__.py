"""table-repair: turn a diff file into per-node work and apply it, one transaction per node."""
