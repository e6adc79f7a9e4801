"""How long work says how far it is: a :class:`Progress` callback.

The core calls it with the units done and the units in all (nodes repaired, ranges
compared); a worker passes one that records them in the task store and sends a
progress event, the CLI none. It is called from the thread doing the work, so it
must return quickly and must not raise.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """``progress(done, total)``: ``done`` of ``total`` units of the work are finished."""

    def __call__(self, done: int, total: int, /) -> None: ...
