"""Serving the ACE API: gunicorn, TLS required, client certificates required.

The API is reachable only over mutual TLS: gunicorn presents the server
certificate (``ACE_API_CERT_FILE``/``ACE_API_KEY_FILE``, else the ACE user's
``ACE_USER_CERT_FILE``/``ACE_USER_KEY_FILE``) and refuses any client whose
certificate was not issued by ``CA_CERT_FILE`` (``ssl.CERT_REQUIRED``) or is
listed in the certificate revocation list ``CA_CRL_FILE`` (when set). The
verified certificate's common name then names the caller (see
:mod:`ace_api.rest.auth`). Nothing is served when a file is missing.

A CRL replaced on disk (``deploy/certs.py --revoke``) takes effect for the
next connection without a restart (see :func:`reused_context`).

Workers are gthread workers by default: a polling client keeps its TLS
connection open between requests instead of paying a handshake each time.
``--threads 1`` selects the sync worker; both hand the TLS socket to the app.

Polling is most of what the API serves (``bench/bench_api.py``: 200 clients,
400 task-status polls a second), so nothing is done per poll that need not be:
the answer is one row read (:mod:`ace_api.rest.status`), a successful poll
writes no access-log line (:class:`QuietPollsLogger`), and the workers'
heartbeat file lives in memory (``/dev/shm``) where there is one.
"""

from __future__ import annotations

import ctypes
import os
import signal
import ssl
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger

from ace_api.rest import create_app
from ace_api.rest.limits import check_rate_limit_setting
from ace_api.rest.status import STATUS_PATH
from ace_shared.config import Settings
from ace_shared.errors import ConfigError
from ace_shared.outputs import keep_outputs_private
from ace_workers.fleet import signing

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000
DEFAULT_WORKERS = 4
DEFAULT_THREADS = 4
REQUEST_TIMEOUT_SECONDS = 60
# Idle keep-alive connections stay open this long. gunicorn's default (2 s) races
# clients that poll about every 2 s: the server closes the connection just as the
# client reuses it. A long wait keeps pollers on one TLS session.
KEEPALIVE_SECONDS = 75
# gunicorn workers touch a heartbeat file on every turn of their loop; in memory
# where possible (a file on an overlay or network file system can stall them).
HEARTBEAT_DIR = "/dev/shm"
PR_SET_PDEATHSIG = 1  # prctl(2)


@dataclass(frozen=True)
class TlsFiles:
    """The certificate, key and CA the API serves with, checked to load."""

    cert: Path
    key: Path
    ca: Path
    crl: Path | None = None


def _setting_file(settings: Settings, names: tuple[str, ...], what: str) -> tuple[Path, str]:
    """The first of ``names`` that is set, as an existing file, and the name it came from."""
    for name in names:
        text = getattr(settings, name)
        if text:
            path = Path(text).expanduser()
            if not path.is_file():
                raise ConfigError(f"The API needs {what}, but {path} does not exist; "
                                  f"fix {name}.")
            return path, name
    shown = " or ".join(n if n.startswith("ACE_") else f"{n} (ACE_{n} in the environment)"
                        for n in names)
    raise ConfigError(f"The API needs {what}; set {shown}.")


def tls_files(settings: Settings) -> TlsFiles:
    """The TLS files from the settings, or one clear error saying which is missing or bad."""
    cert, cert_name = _setting_file(settings, ("ACE_API_CERT_FILE", "ACE_USER_CERT_FILE"),
                                    "a server certificate")
    key, key_name = _setting_file(settings, ("ACE_API_KEY_FILE", "ACE_USER_KEY_FILE"),
                                  "the server certificate's key")
    ca, _ = _setting_file(settings, ("CA_CERT_FILE",),
                          "the certificate authority that issues client certificates")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(str(cert), str(key))
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"The server certificate {cert} and key {key} cannot be loaded "
                          f"({exc}); check {cert_name} and {key_name}.") from exc
    try:
        context.load_verify_locations(cafile=str(ca))
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"The certificate authority file {ca} cannot be loaded ({exc}); "
                          "check CA_CERT_FILE.") from exc
    crl = None
    if settings.CA_CRL_FILE:
        crl, _ = _setting_file(settings, ("CA_CRL_FILE",), "the certificate revocation list")
        try:
            context.load_verify_locations(cafile=str(crl))
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"The certificate revocation list {crl} cannot be loaded "
                              f"({exc}); check CA_CRL_FILE (a PEM CRL).") from exc
    return TlsFiles(cert, key, ca, crl)


def reused_context(files: TlsFiles) -> Any:
    """gunicorn's ``ssl_context`` hook: one context per worker, rebuilt when a file changes.

    gunicorn would build a context for every connection, reading the
    certificate, key and CA again each time; 200 clients connecting at once pay
    that 200 times. Here a worker keeps its context while the files stay the
    same (one ``stat`` each per connection), so a replaced CRL still counts
    from the next connection on, and TLS session tickets resume across
    connections. With a CRL only the client's own certificate is checked
    (VERIFY_CRL_CHECK_LEAF): ACE client certificates come straight from the
    ACE authority, whose CRL it is.
    """
    paths = [p for p in (files.cert, files.key, files.ca, files.crl) if p is not None]
    lock = threading.Lock()
    cached: dict[str, Any] = {}

    def stamp() -> tuple[tuple[int, int, int], ...]:
        out = []
        for path in paths:
            try:
                st = path.stat()
            except OSError:  # gone for a moment (being replaced): build afresh
                return ()
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
        return tuple(out)

    def ssl_context(conf: Any, default_factory: Any) -> ssl.SSLContext:
        now = stamp()
        with lock:
            if now and cached.get("stamp") == now:
                return cached["context"]
            context = default_factory()
            if files.crl is not None:
                context.load_verify_locations(cafile=str(files.crl))
                context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
            cached.update(stamp=now, context=context)
            return context
    return ssl_context


class QuietPollsLogger(Logger):
    """gunicorn's logger, without an access-log line for each answered task-status poll.

    Hundreds of clients polling twice a second would write hundreds of lines a
    second, burying every other request, and formatting them cost about a
    tenth of a poll's CPU. Polls answered with an error (4xx, 5xx) are logged,
    as is every other request.
    """

    def access(self, resp: Any, req: Any, environ: dict[str, Any],
               request_time: Any) -> None:
        if (getattr(resp, "status_code", 500) < 400
                and environ.get("PATH_INFO", "").startswith(STATUS_PATH)):
            return
        super().access(resp, req, environ, request_time)


def die_with_master(server: Any, worker: Any) -> None:
    """gunicorn's ``post_fork`` hook: a worker is killed the moment its master dies.

    A worker whose master was killed (``kill -9``, the OOM killer) would serve
    its open connections for up to gunicorn's graceful timeout while still
    holding the listening socket, so an API started again meanwhile (by
    ``deploy/fleet.sh`` or a supervisor) could not bind its port and gave up.
    Its master is gone, so nothing it would finish could be answered properly
    anyway. Linux only (``prctl``); elsewhere workers notice within a second
    that their master changed, as gunicorn has them do.
    """
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != server.pid:  # the master died before the line above
        os._exit(1)


def gunicorn_options(settings: Settings, host: str, port: int, workers: int,
                     threads: int = DEFAULT_THREADS) -> dict[str, Any]:
    """gunicorn's settings for the API: mutual TLS always on."""
    if workers < 1 or threads < 1:
        raise ConfigError("--workers and --threads must be at least 1.")
    if not 0 < port < 65536:
        raise ConfigError(f"--port must be between 1 and 65535, not {port}.")
    files = tls_files(settings)
    check_rate_limit_setting(settings)
    return {
        "ssl_context": reused_context(files),
        "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "workers": workers,
        "worker_class": "gthread" if threads > 1 else "sync",
        "threads": threads,
        "certfile": str(files.cert),
        "keyfile": str(files.key),
        "ca_certs": str(files.ca),
        "cert_reqs": ssl.CERT_REQUIRED,
        "timeout": REQUEST_TIMEOUT_SECONDS,
        "keepalive": KEEPALIVE_SECONDS,
        "accesslog": "-",
        "errorlog": "-",
        "logger_class": QuietPollsLogger,
        "worker_tmp_dir": HEARTBEAT_DIR if Path(HEARTBEAT_DIR).is_dir() else None,
        "proc_name": "ace-api",
        "control_socket_disable": True,
        "preload_app": False,
        # the port is never shared with a dead master's workers (SO_REUSEPORT would let a
        # new API bind beside them, and the kernel hand them connections they drop)
        "reuse_port": False,
        "post_fork": die_with_master,
    }


class ApiServer(BaseApplication):
    """gunicorn run from Python, each worker building its own app after the fork."""

    def __init__(self, settings: Settings, options: dict[str, Any]) -> None:
        self.settings = settings
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for name, value in self.options.items():
            self.cfg.set(name, value)

    def load(self) -> Flask:

        return create_app(self.settings)


def serve(settings: Settings, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          workers: int = DEFAULT_WORKERS, threads: int = DEFAULT_THREADS) -> None:
    """Run the API until interrupted; raises ConfigError before serving when TLS is not set up."""
    keep_outputs_private()  # the task store it may create holds every caller's tasks
    options = gunicorn_options(settings, host, port, workers, threads)
    signing.require(settings)  # every submission is signed: refuse to serve without a key
    ApiServer(settings, options).run()
