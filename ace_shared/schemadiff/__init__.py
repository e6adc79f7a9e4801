"""schema-diff: every object of a schema, matched by identity, compared on every pair of nodes."""
