"""ACE's domain core: comparing and repairing tables across the nodes of a cluster.

It imports neither Celery, Flask nor click, so the CLI, the REST API and the
Celery workers all call the same code. One subpackage per capability:

- :mod:`ace_shared.nodes`: cluster files, connections, node sessions, identifiers, table shape.
- :mod:`ace_shared.diff`: table-diff: request, key ranges, SQL, planning, the range differ,
  the work folder, merging, the in-process runner.
- :mod:`ace_shared.difffile`: the diff-file format (read and write), its view, CSV and HTML.
- :mod:`ace_shared.repair` and :mod:`ace_shared.rerun`: acting on a diff file.
- :mod:`ace_shared.autorepair`: Spock exceptions and insert-insert conflicts.
- :mod:`ace_shared.tasks`: the task store, status names, task ids, schedules.
- :mod:`ace_shared.config` and :mod:`ace_shared.errors` at the top.
"""
