"""Every task message proves it came from ACE: an HMAC over its headers and body.

Whoever can write to Redis could otherwise queue any task, or rewrite a queued
one (drop a caller's ``role``, name another table), and a worker would run it
with ACE's logins. So each process of ACE that sends tasks (the API and the CLI
through :mod:`ace_workers.client`, beat, and the workers for their subtasks)
signs each message with a secret only ACE's processes hold, and a worker checks
every message before anything of it runs: one that is unsigned, or whose
headers or body changed after signing, is dropped, said so in one line of the
worker's log, and the task it names, if the task store knows it, is failed with
a sentence saying why.

Why not Celery's own message signing (the ``auth`` serializer): it signs the
body only, while with task protocol 2 the task's name and id travel in the
headers, so a signed body could be replayed under another id or task name; it
also needs an X.509 key and certificate in every process and rejects a message
while decoding it, where the task's id is not at hand to fail the task.

What is signed is a canonical form of the headers (all but the signature
itself and what the transport adds on redelivery) and of the body after a JSON round trip, so both ends sign the same
bytes whatever the transport does with tuples or key order.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from pathlib import Path
from typing import Any

from celery import Task
from celery.worker.strategy import default as default_strategy
from kombu.utils import json as kombu_json

from ace_shared.config import Settings
from ace_shared.errors import ConfigError
from ace_shared.tasks.ids import job_of
from ace_workers.fleet import runtime

log = logging.getLogger(__name__)

HEADER = "ace_signature"
# headers the transport itself sets on a message it hands out again (kombu's Redis
# transport marks a restored message ``redelivered``): not ACE's to sign
TRANSPORT_HEADERS = frozenset({HEADER, "redelivered"})
MIN_KEY_LENGTH = 32
REJECTED = ("A message for this task was rejected because it was not signed by ACE (it was "
            "forged or altered in Redis); submit the task again and check who can reach Redis.")
NO_KEY = ("No task signing key is configured: set ACE_TASK_SIGNING_KEY_FILE to the key file "
          "that ACE's API, CLI, workers and beat share (deploy/fleet.sh creates one in "
          ".ace-local/task-signing.key).")

_key: bytes | None = None


def load_key(settings: Settings) -> bytes | None:
    """The signing key the settings name, or None if they name none."""
    if settings.TASK_SIGNING_KEY_FILE:
        path = Path(settings.TASK_SIGNING_KEY_FILE)
        try:
            text = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"The task signing key file {path} cannot be read "
                              f"({exc.strerror}); fix ACE_TASK_SIGNING_KEY_FILE.") from exc
    elif settings.TASK_SIGNING_KEY:
        text = settings.TASK_SIGNING_KEY.strip()
    else:
        return None
    if len(text) < MIN_KEY_LENGTH:
        raise ConfigError(f"The task signing key is shorter than {MIN_KEY_LENGTH} characters; "
                          "make a new one with: openssl rand -hex 32.")
    return text.encode()


def install(settings: Settings) -> bytes | None:
    """Sign this process's messages with the settings' key, if they name one."""
    global _key
    key = load_key(settings)
    if key is not None:
        _key = key
    return key


def require(settings: Settings) -> bytes:
    """Like :func:`install`, but a process that must sign or check messages needs a key."""
    key = install(settings)
    if key is None:
        raise ConfigError(NO_KEY)
    return key


def _canonical(headers: dict[str, Any], body: Any) -> bytes:
    unsigned = {k: v for k, v in headers.items() if k not in TRANSPORT_HEADERS}
    plain = kombu_json.loads(kombu_json.dumps({"headers": unsigned, "body": body}))
    return kombu_json.dumps(plain, sort_keys=True, separators=(",", ":")).encode()


def signature(key: bytes, headers: dict[str, Any], body: Any) -> str:
    return hmac.new(key, _canonical(headers, body), hashlib.sha256).hexdigest()


def sign_message(sender: Any = None, body: Any = None, headers: dict[str, Any] | None = None,
                 **_: Any) -> None:
    """``before_task_publish``: sign the message (a process without a key sends it unsigned,
    and workers refuse it)."""
    if _key is not None and headers is not None:
        headers[HEADER] = signature(_key, headers, body)


def problem_with(message: Any, key: bytes) -> str | None:
    """Why ``message`` is not one ACE signed with ``key``, or None if it is."""
    headers = message.headers or {}
    sent = headers.get(HEADER)
    if not isinstance(sent, str):
        return "it carries no signature"
    try:
        body = message.decode()
    except Exception:  # an undecodable body was not signed by ACE either
        return "its body cannot be read"
    if not hmac.compare_digest(sent, signature(key, headers, body)):
        return "its signature does not match its contents"
    return None


def _short(value: Any) -> str:
    """An attacker's header value, safe to write into one log line."""
    return repr(str(value)[:80])


def refuse(message: Any, problem: str, connection_errors: Any = ()) -> None:
    """Drop a message ACE did not sign; log it in one line; fail the task it names."""
    headers = message.headers if isinstance(message.headers, dict) else {}
    task_id, name = headers.get("id"), headers.get("task")
    log.error("Rejected a task message not signed by ACE (task %s, id %s): %s.",
              _short(name), _short(task_id), problem)
    message.reject_log_error(log, connection_errors, requeue=False)
    if isinstance(task_id, str) and task_id:
        _fail_named(job_of(task_id))


def _fail_named(job_id: str) -> None:

    try:
        store = runtime.store()
        if store.get(job_id, with_options=False) is not None:
            store.fail(job_id, REJECTED)
    except Exception as exc:  # the store is away: the log line stands
        log.warning("could not record the rejection of %s: %s", _short(job_id),
                    type(exc).__name__)


def verified_strategy(task: Task, app: Any, consumer: Any, **kwargs: Any) -> Any:
    """Celery's default strategy, behind a check of each message's signature."""
    handle = default_strategy(task, app, consumer, **kwargs)
    connection_errors = consumer.connection_errors

    def on_message(message: Any, body: Any, ack: Any, reject: Any, callbacks: Any,
                   **kw: Any) -> Any:
        problem = "this worker has no signing key" if _key is None else problem_with(message, _key)
        if problem is not None:
            refuse(message, problem, connection_errors)
            return None
        return handle(message, body, ack, reject, callbacks, **kw)
    return on_message


class SignedTask(Task):
    """The base of every task of ACE's app (``task_cls``): its messages are checked."""

    Strategy = "ace_workers.fleet.signing:verified_strategy"
