"""deploy/fleet.sh on a second day: a crashed API comes back, status tells the truth,
an earlier run's queued messages can be dropped.

Each test runs the script as an operator would, with a fleet directory, ports
and output folder of its own, and stops everything it started.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests
from api_helpers import ApiCerts, make_certs
from fleet_helpers import REPO_ROOT, RedisServer, free_port, send_as_beat, signing_key_file

FLEET_SH = ["bash", str(REPO_ROOT / "deploy" / "fleet.sh")]
QUIET = ("ACE_BROKER_URL", "ACE_RESULT_BACKEND", "ACE_DATABASE_URL", "ACE_TASK_SIGNING_KEY_FILE",
         "ACE_TASK_SIGNING_KEY", "ACE_API_CERT_FILE", "ACE_API_KEY_FILE", "ACE_CA_CERT_FILE",
         "CA_CERT_FILE", "ACE_CA_CRL_FILE", "CA_CRL_FILE")


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A fleet of its own: fleet directory, output folder and ports; stopped afterwards."""
    env = {k: v for k, v in os.environ.items() if k not in QUIET}
    env.update(ACE_FLEET_DIR=str(tmp_path / "fleet"), ACE_OUTPUT_DIR=str(tmp_path / "out"),
               ACE_REDIS_PORT=str(free_port()), ACE_FLOWER_PORT=str(free_port()),
               ACE_API_PORT=str(free_port()))
    yield env
    subprocess.run([*FLEET_SH, "stop"], env=env, capture_output=True, timeout=90)


def fleet(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FLEET_SH, *args], env=env, capture_output=True, text=True,
                          timeout=120)


def _group(pgid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True)
    return [int(p) for p in found.stdout.split()]


def _start_with_api(env: dict[str, str], tmp_path: Path) -> tuple[ApiCerts, int]:
    """``fleet.sh start`` (one worker) with the API's certificates; the certificates and the
    API's port, once the start said the API is up."""
    certs = make_certs(tmp_path)
    env.update(ACE_API_CERT_FILE=str(certs.server_cert), ACE_API_KEY_FILE=str(certs.server_key),
               ACE_CA_CERT_FILE=str(certs.ca_file))
    started = fleet(env, "start", "--workers", "1", "--concurrency", "1")
    assert started.returncode == 0, started.stdout + started.stderr
    assert "api started" in started.stdout
    return certs, int(env["ACE_API_PORT"])


def test_the_api_answers_within_5_s_of_a_kill_9_and_a_start(env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    certs, port = _start_with_api(env, tmp_path)

    session = requests.Session()
    session.trust_env = False
    session.cert = certs.client("ace").pair
    session.verify = str(certs.ca_file)

    def answers() -> bool:
        try:
            return session.get(f"https://127.0.0.1:{port}/ace/swagger.json",
                               timeout=1).status_code == 200
        except requests.RequestException:
            return False
    assert answers()
    # clients in the middle of something: each holds a worker thread (a TLS handshake
    # never finished), so a worker that outlives its master keeps the port a while
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
    try:
        master = int((tmp_path / "fleet" / "api.pid").read_text())
        os.kill(master, signal.SIGKILL)
        killed = time.monotonic()
        # the operator starts the fleet again; the API is back when it answers a request
        start = subprocess.Popen([*FLEET_SH, "start", "--workers", "1", "--concurrency", "1"],
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True)
        # an answer counts once none of the old API's processes is left to give it
        while _group(master) and time.monotonic() - killed < 20:
            time.sleep(0.05)
        while not answers() and time.monotonic() - killed < 20:
            time.sleep(0.1)
        back_after = time.monotonic() - killed
        out, err = start.communicate(timeout=120)
        restarted = subprocess.CompletedProcess(start.args, start.returncode, out, err)
    finally:
        for sock in held:
            sock.close()
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    assert back_after < 5, (back_after, restarted.stdout,
                            (tmp_path / "fleet" / "api.log").read_text()[-2000:])
    assert "api started" in restarted.stdout
    status = fleet(env, "status")
    assert "api running" in status.stdout and status.returncode == 0, status.stdout
    assert master not in _group(master) and not _group(master)  # nothing of the old one left


def test_the_api_workers_end_with_their_master(env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A supervisor restarting the API finds its port free: no orphan keeps it."""
    _, port = _start_with_api(env, tmp_path)
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
    try:
        master = int((tmp_path / "fleet" / "api.pid").read_text())
        assert len(_group(master)) > 1  # the master and its workers
        os.kill(master, signal.SIGKILL)
        deadline = time.monotonic() + 3
        while _group(master) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _group(master), "gunicorn workers outlived their master"
        with socket.socket() as probe:  # the port is free for the next start
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", port))
    finally:
        for sock in held:
            sock.close()


def test_status_after_a_start_without_the_api_and_the_exports(env) -> None:  # type: ignore[no-untyped-def]
    """Without certificates the API is left out on purpose: status says so and exits 0;
    the printed exports name the result backend too, and reach the fleet's Redis."""
    started = fleet(env, "start", "--workers", "1", "--concurrency", "1")
    assert started.returncode == 0, started.stdout + started.stderr
    assert "api not started" in started.stdout
    status = fleet(env, "status")
    assert status.returncode == 0, status.stdout
    assert "api stopped" not in status.stdout and "api not started" in status.stdout
    exports = next(line for line in started.stdout.splitlines() if "export " in line)
    assert "ACE_RESULT_BACKEND=" in exports
    shown = subprocess.run(["bash", "-c", exports.split("CLI: ", 1)[1]
                            + ' && echo "$ACE_RESULT_BACKEND"'],
                           capture_output=True, text=True, env=env)
    assert redis.Redis.from_url(shown.stdout.strip()).ping()
    # the workers yield the CPU to the API on a host both share
    worker = int((Path(env["ACE_FLEET_DIR"]) / "w1.pid").read_text())
    assert int(Path(f"/proc/{worker}/stat").read_text().rsplit(")", 1)[1].split()[16]) == 10
    # Redis keeps an append-only file, written every second
    client = redis.Redis.from_url(shown.stdout.strip())
    assert client.config_get("appendonly")["appendonly"] == "yes"
    assert client.config_get("appendfsync")["appendfsync"] == "everysec"


def test_start_purge_drops_what_an_earlier_run_left_queued(env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    server = RedisServer(tmp_path)
    server.start()
    try:
        key = signing_key_file(tmp_path)
        env.update(ACE_BROKER_URL=server.url(0), ACE_RESULT_BACKEND=server.url(1),
                   ACE_TASK_SIGNING_KEY_FILE=str(key))
        sender = {**env, "PYTHONPATH": str(REPO_ROOT)}
        send_as_beat(sender, "ace.table_diff", [{"cluster_name": "left_over_from_before"}])
        client = redis.Redis.from_url(server.url(0))
        assert client.llen("ace") == 1
        started = fleet(env, "start", "--workers", "1", "--concurrency", "1", "--purge")
        assert started.returncode == 0, started.stdout + started.stderr
        assert "dropped 1 task message" in started.stdout
        assert client.llen("ace") == 0
        time.sleep(2)
        assert "left_over_from_before" not in (tmp_path / "fleet" / "w1.log").read_text()
        # a second --purge while workers run would drop their work: refused
        again = fleet(env, "start", "--purge")
        assert again.returncode != 0 and "stop" in again.stderr
    finally:
        subprocess.run([*FLEET_SH, "stop"], env=env, capture_output=True, timeout=90)
        server.stop()


if sys.platform != "linux":  # pragma: no cover
    pytestmark = pytest.mark.skip(reason="fleet.sh runs services with setsid and /proc (Linux)")


def test_a_pid_file_whose_pid_is_now_another_program_is_never_signalled(env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """After a reboot a pid file's number belongs to whatever got it: stop and start leave
    that program alone (its name may well contain 'ace', as 'workspace' does), and start
    still starts the service."""
    folder = tmp_path / "fleet"
    folder.mkdir()
    (folder / "workers").write_text("1\n")
    decoys = [subprocess.Popen(["bash", "-c", "exec -a workspace-indexer sleep 300"],
                               start_new_session=True) for _ in range(2)]
    try:
        (folder / "w1.pid").write_text(f"{decoys[0].pid}\n")  # a live program, a group leader
        (folder / "beat.pid").write_text(f"{decoys[1].pid}\n")
        stopped = fleet(env, "stop")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        time.sleep(0.5)
        assert [d.poll() for d in decoys] == [None, None], stopped.stdout
        (folder / "w1.pid").write_text(f"{decoys[0].pid}\n")
        started = fleet(env, "start", "--workers", "1", "--concurrency", "1")
        assert started.returncode == 0, started.stdout + started.stderr
        assert "w1 started" in started.stdout, started.stdout
        assert [d.poll() for d in decoys] == [None, None]
        assert int((folder / "w1.pid").read_text()) != decoys[0].pid
    finally:
        for d in decoys:
            d.kill()
            d.wait()


def test_two_starts_at_once_in_one_checkout_keep_one_secret(tmp_path: Path) -> None:
    """The secrets fleet.sh makes (Redis's password, the signing key) are made once: of
    starts racing to make one, each goes on with the same secret, and it stays 0600."""
    secret = tmp_path / "local" / "redis.password"
    script = (f'eval "$(sed -n \'/^secret_file()/,/^}}/p\' {FLEET_SH[1]})"\n'
              'for i in $(seq 20); do (secret_file "$1" 24; cat "$1" > "$1.seen.$i") & done\n'
              'wait\n')
    done = subprocess.run(["bash", "-c", script, "race", str(secret)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    seen = {p.read_text() for p in secret.parent.glob("redis.password.seen.*")}
    assert seen == {secret.read_text()} and len(secret.read_text().strip()) == 48, seen
    assert secret.stat().st_mode & 0o077 == 0
    assert sorted(p.name for p in secret.parent.iterdir() if "seen" not in p.name) == [
        "redis.password"]  # nothing left aside
