"""Start or join Ray, and translate the project's storage URLs into what Ray Train and Ray Data take.

Embedded default: a local Ray started in-process. On a 2-core machine Ray's default (one logical CPU per core)
hands every CPU to the training workers and Ray Data's read/map tasks never get scheduled: the run hangs with no
error (measured; docs/design.md, "Software stack"). So a local Ray is started with more logical CPUs than cores
(``LOCAL_CPU_OVERSUBSCRIPTION`` times the cores, at least ``MIN_LOCAL_CPUS``); the OS shares the real cores.
A cluster is joined through an explicit address or ``RAY_ADDRESS``, and its resources are left as they are.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import pyarrow.fs as pafs

from infra.config import AWS_CHAIN_VARIABLES
from infra.storage import filesystem, is_local

log = logging.getLogger(__name__)

LOCAL_CPU_OVERSUBSCRIPTION = 2
MIN_LOCAL_CPUS = 4
LOCAL_ADDRESSES = ("", "local")
_INIT_LOCK = threading.Lock()  # stages run in threads of one flow (one task per source): one ray.init
# Digest of the credential variables a local Ray started here was given (its workers inherit them at start)
_LOCAL_CHAIN: list[str] = []
REACH_TIMEOUT_S = 5.0  # an unreachable cluster address fails this fast instead of hanging in ray.init
DEFAULT_S3_REGION = "us-east-1"


@dataclass(frozen=True)
class RayHandle:
    """What ``ensure_ray`` found or started; ``started_here`` tells whether ``shutdown_ray`` may stop it."""

    address: str | None
    started_here: bool
    num_cpus: float
    num_gpus: float


def local_num_cpus(cores: int | None = None) -> int:
    """Logical CPUs for an embedded Ray: oversubscribed so data tasks run beside the training workers."""
    cores = cores or os.cpu_count() or 1
    return max(MIN_LOCAL_CPUS, LOCAL_CPU_OVERSUBSCRIPTION * cores)


def ensure_ray(
    address: str | None = None,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    tmpdir: str | None = None,
    object_store_memory: int | None = None,
    env_vars: dict[str, str] | None = None,
    log_to_driver: bool = True,
    include_dashboard: bool = False,
) -> RayHandle:
    """Connect to Ray or start a local one; a Ray already initialised in this process is reused as is.

    ``address`` (else ``RAY_ADDRESS``) joins a running cluster; ``None``/``"local"`` starts an in-process local
    Ray with ``num_cpus`` logical CPUs (default ``local_num_cpus()``). ``tmpdir`` (else ``RAY_TMPDIR``) keeps
    Ray's sockets and logs out of ``/tmp/ray``; keep it short (Unix socket paths are limited to ~107 bytes).
    ``env_vars`` reach every task and actor of this job (e.g. ``TORCH_EXTENSIONS_DIR``). ``include_dashboard``
    starts Ray's dashboard with a local Ray (the profile's ``ray.dashboard``; off by default: it costs memory).
    """
    with _INIT_LOCK:
        return _connect(address, num_cpus, num_gpus, tmpdir, object_store_memory, env_vars, log_to_driver,
                        include_dashboard)


def _connect(
    address: str | None,
    num_cpus: int | None,
    num_gpus: int | None,
    tmpdir: str | None,
    object_store_memory: int | None,
    env_vars: dict[str, str] | None,
    log_to_driver: bool,
    include_dashboard: bool = False,
) -> RayHandle:
    """``ensure_ray``'s work, under its lock."""
    import ray

    address = cluster_address(address)
    if ray.is_initialized():
        if not (_LOCAL_CHAIN and _LOCAL_CHAIN[0] != _chain_digest() and address is None):
            res = ray.cluster_resources()
            return RayHandle(None, False, float(res.get("CPU", 0)), float(res.get("GPU", 0)))
        # a profile's credentials were exported after our local Ray started: its workers would lack them
        log.info("restarting the local Ray so its workers get the storage credentials exported since it started")
        ray.shutdown()
    runtime_env = {"env_vars": dict(env_vars)} if env_vars else None
    common: dict[str, Any] = {"log_to_driver": log_to_driver, "runtime_env": runtime_env}
    if address is not None:
        check_reachable(address)
        try:
            ray.init(address=address, **common)
        except (ConnectionError, RuntimeError) as exc:
            raise ConnectionError(f"cannot join the Ray cluster at {address!r}: {exc}") from None
        _LOCAL_CHAIN.clear()
        started = False
    else:
        # An explicit "local" must not be overridden by a RAY_ADDRESS left in the environment.
        os.environ.pop("RAY_ADDRESS", None)
        tmp = tmpdir or os.environ.get("RAY_TMPDIR")
        if tmp:
            os.makedirs(tmp, exist_ok=True)
        _init_local(
            address="local",  # a new local Ray: never join a cluster that `ray start` left on this machine
            logging_level=logging.ERROR,  # its notices (start-up, token auth) are not the user's: one-line errors
            num_cpus=num_cpus if num_cpus is not None else local_num_cpus(),
            num_gpus=num_gpus,
            include_dashboard=include_dashboard,
            object_store_memory=object_store_memory,
            _temp_dir=tmp,
            **common,
        )
        _LOCAL_CHAIN[:] = [_chain_digest()]
        started = True
    res = ray.cluster_resources()
    handle = RayHandle(address if not started else None, started, float(res.get("CPU", 0)), float(res.get("GPU", 0)))
    log.info("ray %s: %s CPUs, %s GPUs", "started locally" if started else f"joined {address}", handle.num_cpus,
             handle.num_gpus)
    return handle


def _chain_digest() -> str:
    """A digest (never the values) of the AWS credential variables this process would hand its children."""
    names = sorted(set(AWS_CHAIN_VARIABLES.values()))
    return hashlib.sha256("\0".join(os.environ.get(n, "") for n in names).encode()).hexdigest()


def _init_local(**kwargs: Any) -> None:
    """``ray.init`` of a new local Ray, from a thread that lives as long as the process.

    Ray's own processes (GCS, raylet) are killed when the *thread* that started them ends (Linux
    ``PR_SET_PDEATHSIG`` follows the creating thread): started from a Prefect task's worker thread, the whole
    local Ray would be SIGKILLed when that task's thread pool shuts down, and the next stage would hang.
    """
    import ray

    if threading.current_thread() is threading.main_thread():
        ray.init(**kwargs)
        return
    started = threading.Event()
    errors: list[BaseException] = []

    def parent() -> None:
        try:
            ray.init(**kwargs)
        except BaseException as exc:  # handed to the caller below
            errors.append(exc)
        finally:
            started.set()
        threading.Event().wait()  # never ends: Ray's processes must outlive every caller's thread

    threading.Thread(target=parent, name="ray-parent", daemon=True).start()
    started.wait()
    if errors:
        raise errors[0]


def cluster_address(address: str | None) -> str | None:
    """The cluster to join: ``address``, else ``RAY_ADDRESS``; None when that means a local Ray."""
    address = address if address is not None else os.environ.get("RAY_ADDRESS")
    return None if address is None or address in LOCAL_ADDRESSES else address


def check_reachable(address: str, timeout: float = REACH_TIMEOUT_S) -> None:
    """Fail in seconds, naming the address, when a ``host:port`` cluster address does not answer.

    ``auto`` (a cluster started on this machine) is left to Ray, which fails fast when none is running.
    """
    if address == "auto":
        return
    target = address.split("://", 1)[-1]
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"ray.address {address!r}: expected host:port, ray://host:port or 'auto'")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise ConnectionError(f"cannot reach the Ray cluster at {address!r}: {exc}") from None


def shutdown_ray(handle: RayHandle) -> None:
    """Stop Ray only if ``ensure_ray`` started it: a cluster or a caller's Ray is left running."""
    import ray

    if handle.started_here and ray.is_initialized():
        ray.shutdown()


def _s3_filesystem(storage_options: dict[str, Any] | None) -> pafs.S3FileSystem:
    """pyarrow's S3 client from s3fs-style options (``key``, ``secret``, ``token``, ``endpoint_url``...)."""
    so = dict(storage_options or {})
    client_kwargs = dict(so.get("client_kwargs") or {})
    kwargs: dict[str, Any] = {}
    if so.get("anon"):
        kwargs["anonymous"] = True
    if so.get("key"):
        kwargs["access_key"] = so["key"]
        kwargs["secret_key"] = so.get("secret")
    if so.get("token"):
        kwargs["session_token"] = so["token"]
    endpoint = so.get("endpoint_url") or client_kwargs.get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        kwargs["endpoint_override"] = parsed.netloc + parsed.path.rstrip("/")
        kwargs["scheme"] = parsed.scheme
    region = client_kwargs.get("region_name") or so.get("region_name") or os.environ.get("AWS_REGION")
    kwargs["region"] = region or DEFAULT_S3_REGION
    return pafs.S3FileSystem(**kwargs)


def pyarrow_filesystem(
    url: str, storage_options: dict[str, Any] | None = None
) -> tuple[pafs.FileSystem | None, str]:
    """(filesystem, path) for Ray Train / Ray Data: None and an absolute path for local storage, pyarrow's
    native S3 client for ``s3://`` (faster than a wrapped fsspec one), a wrapped fsspec filesystem otherwise."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else "file"
    if scheme in ("s3", "s3a"):
        return _s3_filesystem(storage_options), url.split("://", 1)[1].rstrip("/")
    fs, path = filesystem(url, storage_options)
    if is_local(fs):
        return None, path
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path
