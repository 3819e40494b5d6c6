"""Ray started (every service on loopback) or joined, and the `--address` check (its form, that
the head answers, that the token is accepted) before anything slow runs.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from contextlib import contextmanager
from typing import TYPE_CHECKING

from sentune import config
from sentune.errors import ResourceError
from sentune.train import scratch

if TYPE_CHECKING:
    # scikit-learn and friends take seconds to import: `--address` is checked before them.
    pass


from sentune.search.options import SearchOptions

log = logging.getLogger(__name__)


#: Hosts that keep the Ray dashboard off the network.
LOOPBACK = ("127.0.0.1", "localhost", "::1")


#: `host:port` of a Ray head (a name, an IPv4 address or a bracketed IPv6 one).
_HOST_PORT = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*):(?P<port>\d{1,5})")


#: A cheap GCS call that any Ray head answers; its status says whether the head wants a token.
_GCS_PROBE = "/ray.rpc.NodeInfoGcsService/GetClusterId"


#: What to do on a cluster that wants Ray's token: the one-line fix, said once.
_TOKEN_FIX = (
    "run `ray get-auth-token` on the head, then here `export RAY_AUTH_MODE=token` and put the "
    "token in ~/.ray/auth_token or RAY_AUTH_TOKEN"
)


def check_address(address: str | None) -> None:
    """Check a cluster address before Ray joins it, within twice `config.ADDRESS_TIMEOUT_S`: its
    form, that the head's port answers, and (for a `host:port` GCS address) that the head
    accepts what this machine would send, token or none.

    Ray on its own retries a wrong address or a missing token for about 20 s and then raises;
    this says the fix in one line instead. `auto` (and None: local Ray) is Ray's to find.

    Raises:
        ResourceError: A malformed or unreachable address, or a head that wants a token which
            this machine does not send (or sends wrong).
    """
    if address is None or address in ("auto", "local"):
        return
    client = address.startswith("ray://")
    match = _HOST_PORT.fullmatch(address.removeprefix("ray://"))
    port = int(match["port"]) if match else 0
    if not match or not 0 < port < 65536:
        raise ResourceError(
            f"--address {address!r}: write the head's host:port (e.g. 10.0.0.5:6379), "
            "ray://host:10001 or auto"
        )
    host = match["host"].strip("[]")
    try:
        socket.create_connection((host, port), timeout=config.ADDRESS_TIMEOUT_S).close()
    except OSError as err:
        reason = "timed out" if isinstance(err, TimeoutError) else err.strerror or str(err)
        raise ResourceError(
            f"--address {address}: cannot reach {host}:{port} ({reason}); start the head there "
            f"(`ray start --head --port {port}`) or fix the address, and open the port in the "
            "firewall"
        ) from None
    if not client:  # a Ray Client server speaks its own protocol; Ray checks it on connect
        _check_token(address, host, port)


def _check_token(address: str, host: str, port: int) -> None:
    """One GCS call with the token Ray would send (none unless RAY_AUTH_MODE=token): a head
    that answers UNAUTHENTICATED wants a token this machine does not have."""
    import grpc

    headers = _ray_token_headers()
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    channel = grpc.insecure_channel(target)
    try:
        probe = channel.unary_unary(_GCS_PROBE)
        probe(b"", timeout=config.ADDRESS_TIMEOUT_S, metadata=headers)
    except grpc.RpcError as err:
        code = err.code()
        if code == grpc.StatusCode.UNAUTHENTICATED:
            if headers:
                raise ResourceError(
                    f"--address {address}: the cluster refused this machine's Ray token; "
                    + _TOKEN_FIX.replace("put the token", "put the head's token")
                ) from None
            raise ResourceError(
                f"--address {address}: the cluster wants Ray's auth token and none is set "
                f"here; {_TOKEN_FIX}"
            ) from None
        # Every Ray head since 2.7 answers this call; anything else is another service.
        raise ResourceError(
            f"--address {address}: {host}:{port} does not answer as a Ray head ({code.name}); "
            "pass the head's GCS port (6379 unless `ray start --port` chose another; "
            "`ray status` on the head prints it)"
        ) from None
    finally:
        channel.close()


def _ray_token_headers() -> list[tuple[str, str]]:
    """The gRPC metadata Ray's own client would add: the token when RAY_AUTH_MODE=token.

    Wraps Ray 2.60's private `ray._raylet` token loader (the one `ray.init` uses), so that the
    probe sends exactly what joining will send. Ray takes the mode from the environment only
    (`ray._private.authentication.authentication_token_setup`); without RAY_AUTH_MODE=token it
    sends no token, which is known without importing Ray (a second or more on a busy machine).

    Raises:
        ResourceError: RAY_AUTH_MODE=token but no token is found.
    """
    if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
        return []
    from ray._raylet import AuthenticationMode, AuthenticationTokenLoader, get_authentication_mode

    if get_authentication_mode() != AuthenticationMode.TOKEN:
        return []
    loader = AuthenticationTokenLoader.instance()
    if not loader.has_token():
        raise ResourceError(f"RAY_AUTH_MODE=token but no Ray token is found; {_TOKEN_FIX}")
    return [(k.lower(), v) for k, v in loader.get_token_for_http_header().items()]


@contextmanager
def ray_session(options: SearchOptions):
    """Ray for the body of a `with` block: joined or started by `start_ray`, and shut down after
    it when this call started it (Ray already running in this process is left running).

    Args:
        options: The cluster address, CPUs and dashboard of a local Ray.
    """
    context = start_ray(options)
    try:
        yield
    finally:
        if context is not None:
            import ray

            ray.shutdown()
        # The folders of the trials Ray ended by ending their workers (on this node).
        scratch.sweep()


#: The Ray module that says, at every local start, that token authentication is on.
_RAY_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"


def start_ray(options: SearchOptions):
    """Join a cluster, or start local Ray with every service on 127.0.0.1.

    Returns the Ray context when this call started or joined Ray (and so must shut it down),
    None when Ray was already running in this process.
    """
    import ray

    if ray.is_initialized():
        return None
    if options.address is None:
        _keep_ray_on_loopback()
        if not options.verbose:
            # Ray's notice that it turned its token authentication on (as it should: kept on).
            logging.getLogger(_RAY_AUTH_LOGGER).setLevel(logging.ERROR)
        # "local" always starts a new Ray: without it, Ray joins whatever cluster
        # /tmp/ray/ray_current_cluster names, even one that is long gone.
        context = ray.init(
            address="local",
            num_cpus=options.num_cpus,
            include_dashboard=options.dashboard,
            dashboard_host=options.dashboard_host,
            dashboard_port=options.dashboard_port,
            configure_logging=False,
            log_to_driver=options.verbose,
        )
    else:
        context = ray.init(address=options.address, configure_logging=False)
    url = getattr(context, "dashboard_url", None)
    if url:
        log.info("Ray dashboard: http://%s", url.removeprefix("http://"))
    return context


def _keep_ray_on_loopback() -> None:
    """On Linux Ray binds its services to the host's network address even for a local run.

    Ray's single-machine mode (the one it uses on macOS and Windows) keeps every service on
    127.0.0.1. The switch is an environment variable that Ray reads when it is imported: the
    processes Ray starts inherit it, and this process's copy of the constant is set directly in
    case Ray was imported before.
    """
    from ray._private import ray_constants

    os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
