"""A real ACE worker that dies whole at one chosen moment, for the host-loss tests.

Run in place of ``python -m celery -A ace_workers``. With
``ACE_TEST_DIE_BEFORE_MERGE=1`` in its environment, the first of its
processes that has counted the last batch of a diff's chord (or of a Merkle
tree build's) and is about to send the merge (the build's finish) SIGKILLs the worker's whole process group (main process and
pool, as when the host dies) instead: the one moment at which nothing else
in the fleet has heard that the batches are all done.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from celery.canvas import Signature

_send = Signature.apply_async
MERGES = ("ace.merge_diff", "ace.mtree_finish")


def _die_before_merge(self: Signature, *args: Any, **kwargs: Any) -> Any:
    if self.task in MERGES and os.environ.get("ACE_TEST_DIE_BEFORE_MERGE"):
        os.killpg(os.getpgid(0), signal.SIGKILL)
    return _send(self, *args, **kwargs)


Signature.apply_async = _die_before_merge

if __name__ == "__main__":
    from celery.__main__ import main

    sys.argv = ["celery", "-A", "ace_workers", *sys.argv[1:]]
    sys.exit(main())
