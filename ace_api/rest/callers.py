"""The API's gate on a caller's role: checked on the nodes, remembered briefly.

Every request that queues a task, reads a task's status or names a diff file
passes :meth:`CallerGate.require` for the cluster it concerns, whether or not
``API_ALLOWED_CNS`` is set (see :mod:`ace_shared.nodes.callerrole` for what is
checked and why). A client polling its task every second would otherwise send
a query to every node per poll, so each answer, a refusal included, is kept
in the API process for at most ``API_ROLE_CHECK_SECONDS`` from the moment the
question was asked: a role made superuser, or taken out of ``ace_callers``, is
refused from at most that long afterwards.

Asking the nodes takes a connection to each (hundreds of milliseconds on a
busy host), and no request should wait for it while an answer is still good:
once an answer is half that age, the next request for it has it asked again
in the background and is served the one in hand. A caller who keeps calling
is therefore judged by an answer at most about half ``API_ROLE_CHECK_SECONDS``
old, and only a request that finds no answer in hand (the first, or the first
after a quiet spell) waits for the nodes; requests arriving meanwhile wait for
that same question rather than each asking their own.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable

from ace_shared.config import Settings
from ace_shared.errors import AceError
from ace_shared.nodes.callerrole import check_caller_role
from ace_shared.nodes.cluster import load_cluster

RoleCheck = Callable[[str, str], None]
"""``check(cluster_name, role)``: returns when the role may be served, raises otherwise."""

Key = tuple[str, str]
Answer = tuple[float, AceError | None]  # when the question was asked (monotonic), the refusal

log = logging.getLogger(__name__)


class CallerGate:
    """:func:`check_caller_role` with its answers cached per (cluster, role), asked again
    ahead of their expiry, one question per (cluster, role) at a time."""

    def __init__(self, settings: Settings, check: RoleCheck | None = None) -> None:
        self.settings = settings
        self.seconds = max(0, settings.API_ROLE_CHECK_SECONDS)
        self._check = check or self._on_nodes
        self._lock = threading.Lock()
        self._answers: dict[Key, Answer] = {}
        self._asking: dict[Key, threading.Event] = {}  # questions on their way to the nodes

    def _on_nodes(self, cluster_name: str, role: str) -> None:
        check_caller_role(load_cluster(self.settings.cluster_dir, cluster_name), role,
                          self.settings)

    def require(self, cluster_name: str, role: str) -> None:
        """Raise the (remembered) refusal of ``role`` on ``cluster_name``, if any."""
        if self.seconds == 0:  # nothing is remembered: every request asks the nodes
            self._check(cluster_name, role)
            return
        key = (cluster_name, role)
        now = time.monotonic()
        with self._lock:
            answer = self._answers.get(key)
            usable = answer is not None and now < answer[0] + self.seconds
            if (usable and answer is not None and now >= answer[0] + self.seconds / 2
                    and key not in self._asking):
                self._asking[key] = threading.Event()
                threading.Thread(target=self._refresh, args=(key,), daemon=True).start()
        if not usable:
            answer = self._answer_now(key)
        assert answer is not None
        if answer[1] is not None:  # a fresh copy: threads share the remembered one
            raise copy.copy(answer[1]).with_traceback(None)

    def _answer_now(self, key: Key) -> Answer:
        """A new answer: from this thread's own question, or from the one already on its
        way (asked again by this thread if that one ends without an answer)."""
        while True:
            with self._lock:
                asking = self._asking.get(key)
                if asking is None:
                    asking = self._asking[key] = threading.Event()
                    mine = True
                else:
                    mine = False
            if mine:
                return self._ask(key)
            asking.wait()
            with self._lock:
                answer = self._answers.get(key)
            if answer is not None and time.monotonic() < answer[0] + self.seconds:
                return answer

    def _ask(self, key: Key) -> Answer:
        """Ask the nodes about ``key`` (the caller has registered the question); remember
        and return the answer. Anything but an AceError is raised, and nothing remembered."""
        asked = time.monotonic()
        refusal: AceError | None = None
        try:
            try:
                self._check(*key)
            except AceError as exc:
                refusal = exc
            answer = (asked, refusal)
            with self._lock:
                if len(self._answers) > 10000:  # many names: forget the expired ones
                    self._answers = {k: v for k, v in self._answers.items()
                                     if v[0] + self.seconds > asked}
                self._answers[key] = answer
            return answer
        finally:
            with self._lock:
                self._asking.pop(key).set()

    def _refresh(self, key: Key) -> None:
        """:meth:`_ask` in the background, ahead of the answer's expiry."""
        try:
            self._ask(key)
        except Exception:  # the next request past the expiry asks again, and sees it
            log.exception("The check of role %s on cluster %s failed.", key[1], key[0])
