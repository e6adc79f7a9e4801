"""spock-diff: each node's replication sets and subscriptions, compared pair by pair, with hints."""
