"""Reaching the nodes of a cluster: cluster files, connections, sessions, identifiers, table shape."""
