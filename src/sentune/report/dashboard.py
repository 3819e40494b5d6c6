"""A live view of a run's Optuna study: optuna-dashboard served on loopback.

The search writes every trial, its per-epoch scores (intermediate values) and ASHA's stops
(PRUNED) to the run's journal (`runs.optuna_journal`) as they happen; the dashboard re-reads the
journal on each request, so it shows a running search and a finished one alike.

The view is read-only: optuna-dashboard has no authentication, and its write routes could delete
the study or `tell` a running trial, which would change the run's record under the search. For
the same reason it listens on loopback only; users tunnel to it (`ssh -L 8080:127.0.0.1:8080`).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
from collections.abc import Callable, Iterable
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from sentune import runs
from sentune.errors import ResourceError, RunError

log = logging.getLogger(__name__)

#: HTTP methods that only read; the others (notes, deletes, `tell`) are refused.
_READ_METHODS = frozenset({"GET", "HEAD"})
_LOCALHOST = "localhost"


def _import_optuna_dashboard():
    """optuna_dashboard, or a `ResourceError` that says how to install it."""
    try:
        import optuna_dashboard
    except ImportError:
        raise ResourceError(
            "sentune dashboard needs the optuna-dashboard package; install it with "
            "`pip install 'sentune[dashboard]'` (or `pip install optuna-dashboard`)"
        ) from None
    return optuna_dashboard


def build_app(run_dir: str | Path) -> Callable:
    """The read-only optuna-dashboard WSGI app of a run's study.

    Args:
        run_dir: A run folder (`trials/<run>`).

    Returns:
        A WSGI application.

    Raises:
        RunError: The folder is not a run, or the run has no Optuna journal.
        ResourceError: optuna-dashboard is not installed.
    """
    journal = _journal(Path(run_dir))
    optuna_dashboard = _import_optuna_dashboard()
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(journal)))
    return _read_only(optuna_dashboard.wsgi(storage))


def _journal(run_dir: Path) -> Path:
    """The run's journal, checked before anything opens it (opening creates a missing file)."""
    manifest = runs.read_manifest(run_dir)
    journal = runs.optuna_journal(run_dir)
    if manifest.optuna_study is None or not journal.is_file():
        why = (
            "it searched no parameter"
            if manifest.space.searched == []
            else "it was made by a sentune from before the journal"
        )
        raise RunError(
            f"{run_dir} has no Optuna study ({journal.name} missing: {why}); watch a run of "
            "`sentune search` made by this version, or read this one with `sentune leaderboard`"
        )
    return journal


def _read_only(app: Callable) -> Callable:
    """`app`, answering 405 to any method that could change the study."""

    def read_only_app(environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD", "GET").upper() in _READ_METHODS:
            return app(environ, start_response)
        body = json.dumps({"reason": "sentune dashboard is read-only"}).encode()
        start_response(
            "405 Method Not Allowed",
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                ("Allow", ", ".join(sorted(_READ_METHODS))),
            ],
        )
        return [body]

    return read_only_app


def check_host(host: str) -> str:
    """The loopback address to listen on.

    Args:
        host: `localhost` or a loopback address (127.0.0.0/8, ::1).

    Returns:
        `host` as an IP address.

    Raises:
        ResourceError: `host` is not loopback: the dashboard has no authentication.
    """
    address = "127.0.0.1" if host == _LOCALHOST else host
    try:
        loopback = ipaddress.ip_address(address).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ResourceError(
            f"--host {host}: the dashboard has no authentication, so it listens on loopback "
            "only; keep 127.0.0.1 and tunnel to it (ssh -L 8080:127.0.0.1:8080 HOST)"
        )
    return address


class _Server(ThreadingMixIn, WSGIServer):
    """wsgiref's server, one thread per request: the page polls while a plot is computed."""

    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    """Request lines to the debug log instead of stderr: the page polls every few seconds."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - wsgiref's name
        log.debug("%s %s", self.address_string(), format % args)


def make_dashboard_server(run_dir: str | Path, *, host: str, port: int) -> WSGIServer:
    """A bound (not yet serving) dashboard server of a run's study.

    Args:
        run_dir: A run folder (`trials/<run>`).
        host: A loopback address (`check_host`).
        port: The port; 0 picks a free one (read it back from `server.server_port`).

    Returns:
        The server; call `serve_forever()` and, from another thread, `shutdown()`.

    Raises:
        RunError: No run or no journal in `run_dir`.
        ResourceError: A host that is not loopback, a taken port, or optuna-dashboard missing.
    """
    address = check_host(host)
    app = build_app(run_dir)
    server_class = _Server6 if ipaddress.ip_address(address).version == 6 else _Server
    try:
        return make_server(
            address, port, app, server_class=server_class, handler_class=_QuietHandler
        )
    except OSError as err:
        raise ResourceError(
            f"--port {port}: cannot listen on {address}:{port} ({err.strerror}); pass another "
            "--port, or --port 0 for any free one"
        ) from None


def url(server: WSGIServer) -> str:
    """The address a browser opens for `server`."""
    host, port = server.server_address[:2]
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}/dashboard/"
