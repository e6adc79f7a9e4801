"""ace mtree: Merkle trees of block hashes kept on every node, so re-checking a large table
reads only what changed since the trees were last updated (see docs/mtree.md)."""
