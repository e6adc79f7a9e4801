"""table-rerun: check again only the keys an earlier diff file listed."""
