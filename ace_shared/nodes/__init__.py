"""Reaching the nodes of a cluster: cluster files, connections, sessions, identifiers, table shape,
and the user's table filter, judged by PostgreSQL's own grammar."""
