"""The ``ace`` command line: parses options, runs the work in-process or on the fleet, draws progress.

Exit codes follow diff(1): 0 the nodes agree, 1 they differ, 2 trouble.
"""

from ace_api.cli.main import main, run

__all__ = ["main", "run"]
