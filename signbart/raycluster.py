"""The one way ``extract`` and ``sweep`` reach Ray: ``--address``, else ``RAY_ADDRESS``, else a
fresh Ray in this process.

Ray 2.60 protects a ``ray start`` cluster with a token (``~/.ray/auth_token``, written by the
first local Ray) but never sends one to an explicit address unless ``RAY_AUTH_MODE=token`` is
set; without it a client retries for 20 s and dies with a traceback. So before ``ray.init``
this module turns token mode on when a token is at hand, and asks the cluster's GCS once
(a plain gRPC call, 5 s) whether it answers and accepts us, so that a missing or wrong token
or a dead address is one sentence, not a retry loop.

A fresh local Ray listens on 127.0.0.1 only. By default Ray binds its GCS, raylet, workers and
metrics exporter (which answers without the token) to every interface and its agents to the
machine's IP; with Ray's own switch for machines where clusters are off
(``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, the default on macOS and Windows) every process of
the node takes 127.0.0.1 as its address and binds there (measured with ``ss -ltnp``;
``tests/test_sweep_faults.py`` checks it). A cluster address is joined as Ray's defaults have it.
"""

from __future__ import annotations

import contextlib
import logging
import os

from signbart.errors import UserError

log = logging.getLogger(__name__)

LOCAL = "local"
CLUSTER_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"   # "0": this node is its own cluster
TOKEN_HELP = ("copy the head node's ~/.ray/auth_token to this machine's ~/.ray/auth_token (or "
              "point RAY_AUTH_TOKEN_PATH at it)")


def resolve(address: str | None) -> str:
    """``--address``, else ``RAY_ADDRESS`` (what ``ray job submit`` sets), else ``local``."""
    return address or os.environ.get("RAY_ADDRESS") or LOCAL


def connect(address: str | None, env: dict[str, str] | None = None, **init_kwargs) -> bool:
    """``ray.init`` the resolved address; True when this call started Ray (the caller shuts it
    down). ``env`` goes to this process and, as the job's runtime env, to every worker.
    Unless the ``signbart`` logger is at DEBUG (``-v``), Ray's start-up log stays at WARNING
    and the workers' output (TensorFlow's CUDA probing, MediaPipe) stays in Ray's log files."""
    import ray

    if ray.is_initialized():
        return False
    target = resolve(address)
    if target != LOCAL:
        _check(target)
    os.environ.update(env or {})
    verbose = logging.getLogger("signbart").isEnabledFor(logging.DEBUG)
    init_kwargs.setdefault("logging_level", logging.INFO if verbose else logging.WARNING)
    init_kwargs.setdefault("log_to_driver", verbose)
    with _loopback() if target == LOCAL else contextlib.nullcontext():
        ray.init(address=target, runtime_env={"env_vars": dict(env or {})}, **init_kwargs)
    return True


@contextlib.contextmanager
def _loopback():
    """Ray's cluster switch off while a local Ray starts, so that it binds to 127.0.0.1: read
    by this process (the constant) and by the Ray processes it starts (the variable, which
    they keep). Both are restored after, so a ``ray start`` or a cluster joined later in this
    process is as Ray's defaults have it."""
    from ray._private import ray_constants

    before = os.environ.get(CLUSTER_SWITCH), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[CLUSTER_SWITCH], ray_constants.ENABLE_RAY_CLUSTER = "0", False
    try:
        yield
    finally:
        if before[0] is None:
            del os.environ[CLUSTER_SWITCH]
        else:
            os.environ[CLUSTER_SWITCH] = before[0]
        ray_constants.ENABLE_RAY_CLUSTER = before[1]


def _token() -> str | None:
    from ray._raylet import AuthenticationTokenLoader

    loader = AuthenticationTokenLoader.instance()
    loader.reset_cache()
    if not loader.has_token(ignore_auth_mode=True):
        return None
    return loader.get_raw_token(ignore_auth_mode=True)


def _enable_token_mode() -> None:
    """What ``RAY_AUTH_MODE=token`` does, for this process and the ones it starts."""
    from ray._raylet import Config

    os.environ["RAY_AUTH_MODE"] = "token"
    Config.initialize("")


def _check(address: str) -> None:
    """Fail in one sentence if nothing answers at ``address`` or it refuses our token."""
    if "://" in address or address == "auto":
        return  # Ray Client URIs and `auto` (Ray enables a local token itself) go to Ray as is
    mode = os.environ.get("RAY_AUTH_MODE", "").lower()
    token = None if mode == "disabled" else _token()
    if token and not mode:
        _enable_token_mode()
    code = _gcs_status(address, token)
    if code == "UNAUTHENTICATED":
        why = ("it refuses the token in ~/.ray/auth_token (RAY_AUTH_TOKEN_PATH, RAY_AUTH_TOKEN)"
               if token else "no token was found here")
        raise UserError(f"the Ray cluster at {address} requires an authentication token and "
                        f"{why}: {TOKEN_HELP}")
    if code is not None:
        raise UserError(f"no Ray cluster answers at {address} ({code}): start one with "
                        "`ray start --head`, or check the address (HOST:6379, the GCS port)")


def _gcs_status(address: str, token: str | None) -> str | None:
    """None if the GCS at ``address`` answers us, else the gRPC status name."""
    import grpc
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    with grpc.insecure_channel(address) as channel:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        try:
            stub.GetClusterId(gcs_service_pb2.GetClusterIdRequest(), timeout=5,
                              metadata=metadata)
        except grpc.RpcError as e:
            return e.code().name
    return None
