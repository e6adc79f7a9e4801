"""Every task's name, written once.

A task is registered under its name (``@app.task(name=names.TABLE_DIFF)``), and
everything that sends one by name uses the same constant: the fleet client
(:data:`BY_COMMAND`), the beat schedule, and the merge watch, which sends a chord's
merge again when the worker that should have sent it died. A renamed task cannot then
leave a sender behind. The names are part of the message format: queued messages
carry them, so a name must not change while messages under it may still be queued.
"""

from __future__ import annotations

from typing import Final

# table-diff (ace_workers/diff.py)
TABLE_DIFF: Final = "ace.table_diff"
DIFF_RANGES: Final = "ace.diff_ranges"
MERGE_DIFF: Final = "ace.merge_diff"
DIFF_FAILED: Final = "ace.diff_failed"
# table-repair and table-rerun (ace_workers/repair.py)
TABLE_REPAIR: Final = "ace.table_repair"
TABLE_RERUN: Final = "ace.table_rerun"
RERUN_BATCH: Final = "ace.rerun_batch"
MERGE_RERUN: Final = "ace.merge_rerun"
# Merkle trees (ace_workers/mtree.py)
MTREE: Final = "ace.mtree"
MTREE_HASH: Final = "ace.mtree_hash"
MTREE_FINISH: Final = "ace.mtree_finish"
MTREE_FAILED: Final = "ace.mtree_failed"
MTREE_LEAVES: Final = "ace.mtree_leaves"
# schema-diff, repset-diff and spock-diff (ace_workers/checks.py)
SPOCK_DIFF: Final = "ace.spock_diff"
REPSET_DIFF: Final = "ace.repset_diff"
SCHEMA_DIFF: Final = "ace.schema_diff"
CHECKS_COLLECT: Final = "ace.checks_collect"
# the scheduler's (ace_workers/schedule.py, recheck.py, autorepair.py)
SCHEDULED_DIFF: Final = "ace.scheduled_diff"
SCHEDULED_RECHECK: Final = "ace.scheduled_recheck"
SCHEDULED_VERDICT: Final = "ace.scheduled_verdict"
AUTO_REPAIR_POLL: Final = "ace.auto_repair_poll"
AUTO_REPAIR_REPAIR: Final = "ace.auto_repair_repair"
# beat's hourly removal of old work and results (ace_workers/retention.py)
RETENTION: Final = "ace.retention"

# what the front doors submit: the task of each command
BY_COMMAND: Final = {
    "table-diff": TABLE_DIFF,
    "table-repair": TABLE_REPAIR,
    "table-rerun": TABLE_RERUN,
    "schema-diff": SCHEMA_DIFF,
    "repset-diff": REPSET_DIFF,
    "spock-diff": SPOCK_DIFF,
    "mtree": MTREE,
}
