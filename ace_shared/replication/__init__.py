"""Replication metadata behind one small interface: Spock, pglogical or native publications."""
