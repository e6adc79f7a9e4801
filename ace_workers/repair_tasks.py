"""table-repair and table-rerun as fleet tasks (placeholders until their core lands)."""
