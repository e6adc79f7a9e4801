"""table-diff: validate a request, plan key ranges, hash and narrow them on every node, merge."""
