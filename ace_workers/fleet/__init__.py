"""The fleet's machinery, apart from the tasks it runs.

Leases, published task states, counters, slots, connection permits, the
sweep for lost work, message signing, metrics and each process's sessions
(:mod:`ace_workers.fleet.runtime`). None of it imports a task module or the
app's module (import-linter holds it to that): the app imports the machinery
and registers its worker bootsteps, never the other way round.
"""
