"""schedule_jobs naming their command, and schedule_config's rerun_after."""

from __future__ import annotations

import pytest

from ace_shared.errors import ConfigError
from ace_shared.tasks.schedule import scheduled_diffs

JOBS = ({"name": "sets", "cluster_name": "c", "command": "repset-diff", "repset_name": "default",
         "args": {"nodes": "n1,n2"}},
        {"name": "tab", "cluster_name": "c", "table_name": "public.t"})


def test_a_job_names_its_command_and_rerun_after() -> None:
    got = scheduled_diffs(JOBS, ({"job_name": "sets", "run_frequency": "10m", "enabled": True,
                                  "rerun_after": "1h"},
                                 {"job_name": "tab", "crontab_schedule": "0 0 * * *",
                                  "enabled": True}), "5m")
    assert [(s.name, s.command, s.rerun_after) for s in got] == [
        ("sets", "repset-diff", 3600), ("tab", "table-diff", None)]
    assert got[0].options == {"nodes": "n1,n2", "cluster_name": "c", "repset_name": "default"}


@pytest.mark.parametrize("job, words", [
    ({"name": "x", "cluster_name": "c", "command": "repset-diff", "table_name": "a.b"},
     "needs repset_name"),
    ({"name": "x", "cluster_name": "c", "command": "spock-diff"}, "use table-diff or repset-diff"),
])
def test_bad_jobs_are_one_sentence(job: dict, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        scheduled_diffs((job,), (), "5m")


def test_a_bad_rerun_after_is_one_sentence() -> None:
    with pytest.raises(ConfigError, match="rerun_after of tab must look like"):
        scheduled_diffs(JOBS, ({"job_name": "tab", "run_frequency": "10m", "enabled": True,
                                "rerun_after": "soon"},), "5m")
