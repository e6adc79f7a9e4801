"""repset-diff: a replication set's membership on every node, then a table-diff per table."""
