"""ACE's front doors: the ``ace`` command line (:mod:`ace_api.cli`) and the REST API (:mod:`ace_api.rest`).

Both only parse, validate and hand work on: in-process to :mod:`ace_shared`, or
to the fleet through :mod:`ace_workers.client`. Neither holds domain logic.
"""
