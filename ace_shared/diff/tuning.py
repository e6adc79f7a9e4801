"""How the differ works through a range: its strategy and its sizes, carried by the job.

None of this changes what a diff finds, only how many queries and rows it takes:
every strategy writes the same file (``tests/test_diff_strategies.py`` proves it).
The values are a :class:`DiffTuning`, frozen and part of the job's
:class:`~ace_shared.diff.request.DiffSpec`, so a test that forces a strategy or a
small leaf passes it in with the job rather than changing the differ's module.
:class:`DensityHints` carry what one range learnt to the next ranges of the same
job; whoever runs the job's batches owns them and passes them to the differ.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any


class Strategy(str, Enum):
    """How a range that differs is compared."""

    AUTO = "auto"  # chosen per range (see differ.RangeDiffer)
    NARROW = "narrow"  # always narrow, level by level, to the differing sub-ranges
    STREAM = "stream"  # always stream every row's key and hash of the whole range


@dataclass(frozen=True)
class DiffTuning:
    """The differ's sizes; the defaults are what users get."""

    strategy: Strategy = Strategy.AUTO
    leaf_rows: int = 4000  # a sub-range this small is streamed whole rather than cut again
    dense_share: float = 0.5  # stream a range once more than this share of its sub-ranges differ
    stream_rows: int = 20_000  # most rows a node sends in one stream query (~3 MB per node)
    fetch_keys: int = 5_000  # about the most differing keys whose rows one query fetches
    # a table estimated at no more rows is planned from every key, a larger one from a sample
    exact_plan_rows: int = 200_000

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "strategy": self.strategy.value}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> DiffTuning:
        """The tuning :meth:`to_dict` wrote; the defaults for a job planned without one."""
        if not d:
            return cls()
        return cls(Strategy(d["strategy"]), int(d["leaf_rows"]), float(d["dense_share"]),
                   int(d["stream_rows"]), int(d["fetch_keys"]),
                   int(d.get("exact_plan_rows", cls.exact_plan_rows)))


class DensityHints:
    """Per job, whether the range finished last differed almost everywhere.

    Ranges of one job run in many batches, each with its own differ; the hint lets
    the next one skip a first hash pass that would only say "everything differs"
    again. It is only a guess: a wrong one costs one pass, never a different result.
    The in-process runner keeps one for its job; a worker process one for every job
    whose batches it runs (the oldest jobs forgotten first).
    """

    KEEP = 64  # jobs remembered; the oldest is forgotten first

    def __init__(self) -> None:
        self._dense: dict[str, bool] = {}
        self._steps: dict[str, dict[str, int]] = {}
        self._lock = threading.Lock()

    def get(self, job: str) -> bool:
        return self._dense.get(job, False)

    def set(self, job: str, dense: bool) -> None:
        with self._lock:
            self._dense.pop(job, None)
            self._dense[job] = dense
            while len(self._dense) > self.KEEP:
                del self._dense[next(iter(self._dense))]

    def count(self, job: str, step: str) -> None:
        """Note a step a differ of ``job`` took: ``"narrow"`` (a range hashed again in
        smaller parts) or ``"whole"`` (a range streamed without its first hash pass)."""
        with self._lock:
            steps = self._steps.setdefault(job, {})
            steps[step] = steps.get(step, 0) + 1
            while len(self._steps) > self.KEEP:
                del self._steps[next(iter(self._steps))]

    def steps(self, job: str) -> dict[str, int]:
        """How often ``job``'s differs took each step so far (see :meth:`count`)."""
        with self._lock:
            return dict(self._steps.get(job, {}))
