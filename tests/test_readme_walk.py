"""Every example of README.md's "Using it" section, run as written on the demo cluster;
the ``ace`` commands of "The worker fleet" on a fleet, and "The API from
certificates to curl" against an ``ace api`` of that fleet.

The demo is built by the project's own scripts, with the commands
``deploy/setup.sh`` runs (``localcluster.py start --replication``,
``serve-role``, ``demo_data.py``, ``localcluster.py replicate``), on free
ports instead of 6432-6434 so that a demo already running is left alone. The
examples are read from the README itself, by the section's heading, so an
example that stops working (or a new one) is met here: each runs in ``bash``
from a folder laid out as the README assumes (``.venv``, ``cluster/``,
``out/``, ``.ace-local/cluster-admin``), after the set-up lines of its block and
the blocks before it (``. .venv/bin/activate``, ``export ...``), as in one shell. The only words replaced are the
README's placeholders ``<date>`` and ``<time>``, with those of the diff file the
first ``table-diff`` of ``public.customers`` wrote, as a reader would.

Each example's exit code and its output are checked against what the demo's
known divergence (``deploy/demo_data.py``) makes them; an example without an
expectation here must still succeed (exit 0 or 1, nothing on stderr but notes).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest
from fleet_helpers import Fleet, RedisServer, fleet_env
from localcluster import free_ports

REPO_ROOT = Path(__file__).resolve().parent.parent
SECTION = "## Using it"
DEMO_TABLES = 'public.customers,"Sales"."Order Items"'


@dataclass
class Demo:
    """The folder the README's examples run in, and how to run one."""

    workdir: Path
    local_dir: Path

    def bash(self, prelude: list[str], line: str, env_extra: dict[str, str] | None = None,
             ) -> subprocess.CompletedProcess[str]:
        script = "set -e\n" + "\n".join(prelude) + "\nset +e\n" + line + "\n"
        env = {**clean_env(), **(env_extra or {})}
        return subprocess.run(["bash", "-c", script], cwd=self.workdir, env=env,
                              capture_output=True, text=True, timeout=300, check=False)


def clean_env() -> dict[str, str]:
    """This process's environment without ACE's settings (other tests' clusters set some)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("ACE_", "PG"))}


def _deploy(*args: str) -> None:
    done = subprocess.run([sys.executable, *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300, check=False, env=clean_env())
    assert done.returncode == 0, (args, done.stdout, done.stderr)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """setup.sh's demo, step by step, on free ports; the README's folder layout around it."""
    work = tmp_path_factory.mktemp("readme")
    local = work / ".ace-local"
    ports = ",".join(str(p) for p in free_ports(3, 18500, 18999))
    (work / ".venv").symlink_to(Path(sys.prefix))  # the venv these tests run in
    (work / "deploy").symlink_to(REPO_ROOT / "deploy")  # the README runs deploy/certs.py
    start = ["deploy/localcluster.py", "start", "--dir", str(local), "--name", "demo",
             "--replication", "--ports", ports,
             "--timezones", "UTC,America/New_York,Asia/Kolkata",
             "--cluster-dir", str(work / "cluster"),
             "--admin-cluster-dir", str(local / "cluster-admin")]
    try:
        for _ in range(2):  # setup.sh run twice: the second run must change nothing
            _deploy(*start)
            _deploy("deploy/localcluster.py", "serve-role", "--dir", str(local), "--name",
                    "demo", "--role", "demo_caller", "--repair")
            _deploy("deploy/demo_data.py", "--cluster-json",
                    str(work / "cluster/demo/demo.json"), "--grant-to", "demo_caller")
            _deploy("deploy/localcluster.py", "replicate", "--dir", str(local), "--name",
                    "demo", "--tables", DEMO_TABLES)
        yield Demo(work, local)
    finally:
        subprocess.run([sys.executable, "deploy/localcluster.py", "stop", "--dir", str(local),
                        "--name", "demo"], cwd=REPO_ROOT, capture_output=True, check=False)


# ----- the README's examples ------------------------------------------------------------

def section_blocks(readme: str, heading: str) -> list[list[str]]:
    """The ```bash blocks between ``heading`` and the next heading of its level or above
    (a ``#`` line inside a block is a shell comment, not a heading)."""
    level = len(heading.split(" ", 1)[0])
    blocks: list[list[str]] = []
    inside = fenced = False
    for line in readme.splitlines():
        if line.startswith("```"):
            fenced = not fenced
            if inside and fenced and line.strip() == "```bash":
                blocks.append([])
            continue
        if fenced:
            if inside and blocks:
                blocks[-1].append(line)
            continue
        heading_of = re.match(r"^(#+) ", line)
        if heading_of and len(heading_of.group(1)) <= level:
            inside = line.strip() == heading
    return blocks


def command_lines(block: list[str]) -> list[str]:
    """Joined continuation lines, without comments (a comment starts at '  #') or blanks."""
    lines: list[str] = []
    pending = ""
    for raw in block:
        text = re.split(r"\s{2,}#", raw, maxsplit=1)[0].rstrip()
        if text.lstrip().startswith("#") or not text.strip():
            continue
        if text.endswith("\\"):
            pending += text[:-1].rstrip() + " "
            continue
        lines.append((pending + text.strip()).strip())
        pending = ""
    return lines


def is_ace_command(line: str) -> bool:
    return re.match(r"^(?:[A-Z_]+=\S* )*ace ", line) is not None


# what each example must do on the demo: exit code, and lines its stdout must hold
EXPECTED: dict[str, tuple[int, tuple[str, ...]]] = {
    "ace table-diff demo public.customers --output=html": (1, (
        "n1/n2: 6 rows differ", "n1/n3: 4 rows differ", "n2/n3: 10 rows differ",
        "Diffs written to ", "Report written to ")),
    "ace table-diff demo '\"Sales\".\"Order Items\"' --nodes=n1,n3 --block-rows=50000": (1, (
        "n1/n3: 5 rows differ",)),
    # rows with status 'active' on either node: 707 is closed on n3 only, extra + 1 is
    # suspended (deploy/demo_data.py)
    "ace table-diff demo public.customers --table-filter=\"status = 'active'\"": (1, (
        "n1/n2: 6 rows differ", "n1/n3: 3 rows differ", "n2/n3: 9 rows differ")),
    "ace table-repair demo public.customers --diff-file=out/diffs/<date>/diffs_<time>.json "
    "--source-of-truth=n1 --dry-run": (0, (
        "DRY RUN: nothing was written.", "n2: would insert 3, would update 3, would delete 0 rows",
        "n3: would insert 0, would update 2, would delete 2 rows")),
    "ace table-repair demo out/diffs/<date>/diffs_<time>.json n1 public.customers": (0, (
        "n2: inserted 3, updated 3, deleted 0 rows", "n3: inserted 0, updated 2, deleted 2 rows",
        "Repaired public.customers on n2 and n3 in ")),
    "ace table-rerun demo public.customers --diff-file=out/diffs/<date>/diffs_<time>.json "
    "--behavior=hostdb": (0, ("Of 10 rows that differed: 10 resolved, 0 still differ.",)),
    "ace schema-diff demo public": (0, ("SCHEMAS MATCH: public is the same on n1, n2 and n3.",
                                       "Schema diff written to ")),
    # customers was repaired above; the order items still differ
    "ace repset-diff demo default": (1, (
        "public.customers: identical", '"Sales"."Order Items": differs (n1/n2: 4 rows, '
        "n1/n3: 5 rows, n2/n3: 9 rows;", "Repset diff written to ")),
    "ace spock-diff demo": (0, ("n1: pglogical node n1, 3 sets, 2 subscriptions",
                                "REPLICATION MATCHES on n1, n2 and n3.")),
    "ace mtree init demo": (0, ("Merkle tree schema ace_mtree is ready on nodes n1, n2 and n3.",)),
    "ACE_BROKER_URL= ACE_CLUSTER_DIR=.ace-local/cluster-admin ace mtree init demo": (0, (
        "Merkle tree schema ace_mtree is ready on nodes n1, n2 and n3.",)),
    "ace mtree build demo public.customers": (0, (
        "Built the Merkle tree of public.customers on nodes n1, n2 and n3: ",
        "Rows hashed: n1: 20,000 rows, n2: 20,000 rows, n3: 20,000 rows.")),
    "ace mtree table-diff demo public.customers": (0, (
        "TABLES MATCH: public.customers is the same on n1, n2 and n3 (20,000 rows checked).",)),
    "ace mtree teardown demo": (0, (
        "Removed ACE's Merkle tree schema and 1 tree from nodes n1, n2 and n3.",)),
}


def _fill(line: str, diff_file: str | None) -> str:
    if "<" not in line:
        return line
    found = re.fullmatch(r"out/diffs/(\d{4}-\d{2}-\d{2})/diffs_(\d+)\.json", diff_file or "")
    assert found, f"{line!r} needs a diff file, and no table-diff wrote one before it"
    filled = line.replace("<date>", found.group(1)).replace("<time>", found.group(2))
    assert not re.search(r"<\w+>", filled), (
        f"the README example {line!r} has a placeholder this walk does not know")
    return filled


def test_every_example_of_using_it_works_on_the_demo_as_written(demo: Demo) -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    blocks = section_blocks(readme, SECTION)
    assert len(blocks) >= 3, "the section lost its examples"
    ran: list[str] = []
    diff_file: str | None = None
    prelude: list[str] = []  # one reader's shell: what a block sets up holds for the next
    for block in blocks:
        lines = command_lines(block)
        prelude += [ln for ln in lines if not is_ace_command(ln)]
        for line in (ln for ln in lines if is_ace_command(ln)):
            done = demo.bash(prelude, _fill(line, diff_file))
            code, wanted = EXPECTED.get(line, (None, ()))
            said = f"{line}\nexit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
            if code is None:
                assert done.returncode in (0, 1), said
            else:
                assert done.returncode == code, said
            for text in wanted:
                assert text in done.stdout, f"missing {text!r}:\n{said}"
            errors = [ln for ln in done.stderr.splitlines() if not ln.startswith("ace: note:")]
            assert not errors, said
            if diff_file is None and line.startswith("ace table-diff demo public.customers"):
                written = re.search(r"^Diffs written to (\S+)$", done.stdout, re.M)
                assert written, said
                diff_file = str(Path(written.group(1)).relative_to(demo.workdir))
            ran.append(line)
    # every expectation met an example: none was renamed away unnoticed
    assert set(EXPECTED) <= set(ran), set(EXPECTED) - set(ran)


def test_the_html_report_of_the_first_example_says_the_nodes_differ(demo: Demo) -> None:
    """``--output=html`` writes the page the README promises, beside the diff file."""
    done = demo.bash([". .venv/bin/activate", "export ACE_CLUSTER_DIR=$PWD/cluster "
                      "ACE_OUTPUT_DIR=$PWD/out"],
                     "ace table-diff demo '\"Sales\".\"Order Items\"' --output=html")
    assert done.returncode == 1, done.stderr
    page = Path(re.search(r"^Report written to (\S+)$", done.stdout, re.M).group(1))
    assert "The nodes differ." in page.read_text()


def test_the_demo_replicates_what_is_written_after_set_up(demo: Demo) -> None:
    """A row written on n1 reaches n2 and n3; the demo's own divergence did not travel."""
    from localcluster import LocalCluster
    cluster = LocalCluster.from_state(demo.local_dir, "demo")
    statement = ("INSERT INTO \"Sales\".\"Order Items\" VALUES (1, 1, 'SKU-WALK', 1, 1.5, "
                 "'written on n1')")
    with psycopg2.connect(cluster.admin_dsn(0, "acedb")) as conn, conn.cursor() as cur:
        cur.execute(statement)
    for i in (1, 2):
        deadline = time.monotonic() + 30
        while True:
            with psycopg2.connect(cluster.admin_dsn(i, "acedb")) as conn, conn.cursor() as cur:
                cur.execute("SELECT note FROM \"Sales\".\"Order Items\" WHERE \"Order ID\" = 1")
                row = cur.fetchone()
            if row is not None:
                assert row[0] == "written on n1"
                break
            assert time.monotonic() < deadline, f"the row did not reach n{i + 1}"
            time.sleep(0.2)
    done = demo.bash([". .venv/bin/activate", "export ACE_CLUSTER_DIR=$PWD/cluster "
                      "ACE_OUTPUT_DIR=$PWD/out"],
                     "ace table-diff demo '\"Sales\".\"Order Items\"' --json")
    assert done.returncode == 1, done.stderr
    assert json.loads(done.stdout)["diff_rows_by_pair"] == {"n1/n2": 4, "n1/n3": 5, "n2/n3": 9}


# ----- the worker fleet -----------------------------------------------------------------

FLEET_SECTION = "## The worker fleet"
USING = [". .venv/bin/activate", "export ACE_CLUSTER_DIR=$PWD/cluster ACE_OUTPUT_DIR=$PWD/out"]


@pytest.fixture(scope="module")
def demo_fleet(demo: Demo) -> Iterator[dict[str, str]]:
    """What the section's ``export`` and ``celery`` lines stand for: a Redis with a password,
    a task store, a signing key and two workers, all on this machine, for the demo's folders.

    The lines themselves name another machine's Redis and folders
    (``redis-host``, ``PASSWORD``, ``/var/lib/ace``), so they are not run as written.
    """
    workdir = demo.workdir / "fleet"
    workdir.mkdir()
    redis = RedisServer(workdir)
    redis.start()
    tls = demo.local_dir / "demo" / "tls"  # as deploy/fleet.sh finds the demo's
    env = fleet_env(redis, workdir, ACE_CLUSTER_DIR=str(demo.workdir / "cluster"),
                    ACE_OUTPUT_DIR=str(demo.workdir / "out"), ACE_USE_CERT_AUTH="1",
                    ACE_USER_CERT_FILE=str(tls / "ace-client.crt"),
                    ACE_USER_KEY_FILE=str(tls / "ace-client.key"),
                    ACE_DB_CA_CERT_FILE=str(tls / "ca.crt"))
    env = {k: v for k, v in env.items()
           if not k.startswith("PG") and (not k.startswith("ACE_") or k in FLEET_KEYS)}
    fleet = Fleet(workdir, env, names=("walk1", "walk2"))
    try:
        fleet.start()
        yield {k: v for k, v in env.items() if k in FLEET_KEYS}
    finally:
        fleet.stop()
        redis.stop()


FLEET_KEYS = ("ACE_BROKER_URL", "ACE_RESULT_BACKEND", "ACE_TASK_SIGNING_KEY_FILE",
              "ACE_DATABASE_URL", "ACE_CLUSTER_DIR", "ACE_OUTPUT_DIR", "ACE_USE_CERT_AUTH",
              "ACE_USER_CERT_FILE", "ACE_USER_KEY_FILE", "ACE_DB_CA_CERT_FILE")


def test_the_fleet_sections_commands_work_on_a_fleet(demo: Demo,
                                                     demo_fleet: dict[str, str]) -> None:
    """Its ``ace`` lines, on a fleet: the same exit code and sentences as in-process, and
    ``--no-wait`` prints the task id alone."""
    lines = [ln for block in section_blocks((REPO_ROOT / "README.md").read_text(), FLEET_SECTION)
             for ln in command_lines(block) if is_ace_command(ln)]
    assert "ace table-diff demo public.customers" in lines and \
        "ace table-diff demo public.customers --no-wait" in lines
    for line in lines:
        on_fleet = demo.bash(USING, line, demo_fleet)
        said = f"{line}\nexit {on_fleet.returncode}\n{on_fleet.stdout}\n{on_fleet.stderr}"
        if "--no-wait" in line:
            assert on_fleet.returncode == 0, said
            assert re.fullmatch(r"td_\d{8}_\d{6}_[a-z0-9]+\n", on_fleet.stdout), said
            continue
        here = demo.bash(USING, line)
        assert on_fleet.returncode == here.returncode and on_fleet.returncode in (0, 1), said
        sentences = [ln for ln in here.stdout.splitlines() if " written to " not in ln]
        assert sentences and sentences == [ln for ln in on_fleet.stdout.splitlines()
                                           if " written to " not in ln], (said, here.stdout)


# ----- the API, from certificates to curl ------------------------------------------------

API_SECTION = "### The API from certificates to curl"


def _wait_for_api(port: int, api: subprocess.Popen[str], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert api.poll() is None, log.read_text(errors="replace")[-3000:]
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.2)
    raise AssertionError("ace api did not listen in time:\n" + log.read_text()[-3000:])


def test_the_api_section_from_certificates_to_curl(demo: Demo,
                                                   demo_fleet: dict[str, str]) -> None:
    """Its lines in order, with the fleet's settings the section says ``ace api`` needs.

    Two words differ from the README: the port (a free one instead of 5000, where
    another API may listen; ``ace api --port`` and the URLs alike) and the task id
    the first ``curl`` answered, where the README writes ``td_...``.
    """
    lines = [ln for block in section_blocks((REPO_ROOT / "README.md").read_text(), API_SECTION)
             for ln in command_lines(block)]
    assert lines[-1].startswith("curl ") and "ace api" in lines
    port = free_ports(1, 19000, 19499)[0]
    setup = USING + [ln for ln in lines if not ln.startswith(("curl ", "ace api"))]
    made = demo.bash(setup, "true", demo_fleet)
    assert made.returncode == 0, made.stderr
    log = demo.workdir / "api.log"
    exports = [ln for ln in setup if not ln.startswith(".venv/bin/python deploy/certs.py")]
    script = "\n".join([*exports, f"exec ace api --port {port}"])
    with open(log, "w") as out:
        api = subprocess.Popen(["bash", "-c", script], cwd=demo.workdir, stdout=out,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True,
                               env={**clean_env(), **demo_fleet})
    try:
        _wait_for_api(port, api, log)
        curls = [ln.replace("127.0.0.1:5000", f"127.0.0.1:{port}")
                 for ln in lines if ln.startswith("curl ")]
        submitted = demo.bash([], curls[0])
        assert submitted.returncode == 0, submitted.stderr
        answer = json.loads(submitted.stdout)
        assert re.fullmatch(r"td_\d{8}_\d{6}_[a-z0-9]+", answer["task_id"]), answer
        status_line = curls[1].replace("td_...", answer["task_id"])
        deadline = time.monotonic() + 120
        while True:
            asked = demo.bash([], status_line)
            assert asked.returncode == 0, asked.stderr
            status = json.loads(asked.stdout)
            assert status["task_id"] == answer["task_id"], status
            if status["status"] in ("COMPLETED", "FAILED"):
                break
            assert time.monotonic() < deadline, status
            time.sleep(0.5)
        assert status["status"] == "COMPLETED", status
        assert Path(status["result"]["diff_file"]).is_file()
        # the download: the caller's own diff file, under the name the server gives it
        fetched = demo.bash([], curls[2].replace("td_...", answer["task_id"]))
        assert fetched.returncode == 0, fetched.stderr
        saved = demo.workdir / f"public.customers_{answer['task_id']}.json"
        assert saved.read_bytes() == Path(status["result"]["diff_file"]).read_bytes()
    finally:
        os.killpg(api.pid, signal.SIGTERM)
        api.wait(30)
