"""table-diff: validate a request, plan key ranges, hash and narrow them on every node, merge.

:mod:`~ace_shared.diff.job` is the one pipeline (plan, cut into batches, run a
batch, merge) that both executors drive: :mod:`~ace_shared.diff.local` on a
thread pool, ``ace_workers.diff`` on the fleet. :mod:`~ace_shared.diff.workdir`
is the only module that knows a task's work folder.
"""
