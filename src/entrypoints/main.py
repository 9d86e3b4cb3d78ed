from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import os
import shutil
import socket
import sys
import tempfile
from typing import Any

import uvicorn
from dependency_injector import providers

from domain.sizes import KiB
from entrypoints.container import Container
from entrypoints.edge import EdgeLimits, guarded_protocol, raise_file_limit
from entrypoints.http.app import create_app
from entrypoints.observability.log_output import BatchedLineHandler, JsonLogFormatter
from entrypoints.observability.metrics import (
    MULTIPROCESS_DIR_VARIABLE,
    use_multiprocess_metrics_if_asked,
)
from entrypoints.settings import Settings
from entrypoints.workers import supervise

__all__ = ["serve"]


# Python's default first-generation threshold is 700 allocations; a request makes hundreds.
_GC_FIRST_GENERATION_THRESHOLD = 20_000
# glibc's mallopt parameter, and the size from which buffers get their own mapping.
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_BYTES = 256 * KiB


def return_large_buffers_to_the_os() -> bool:
    """Make glibc give multi-MiB upload buffers back to the OS as soon as they are freed.

    By default glibc raises its mmap threshold after large buffers are freed, and later 5 MiB parts
    then come from the heap, which rarely shrinks: measured here, the peak RSS of 8 concurrent
    256 MiB uploads fell from about 150 MiB to about 110 MiB with a fixed threshold. A no-op
    (returning False) on C libraries without mallopt.
    """
    library = ctypes.util.find_library("c")
    if library is None:
        return False
    try:
        mallopt = ctypes.CDLL(library).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES))


def keep_garbage_collection_off_the_request_path() -> None:
    """Freeze what start-up built, and let the cyclic collector run less often.

    Under a 1 KiB GET load, collections took about 6% of the gateway's CPU, much of it scanning
    objects that live as long as the process (modules, the app, its container) again and again.
    Frozen, they leave every later collection; a larger first generation makes the rest rarer.
    Reference counting still frees a request's objects the moment it ends.
    """
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(_GC_FIRST_GENERATION_THRESHOLD, middle, oldest)


def log_cheaply() -> None:
    """The logging HOWTO's optimisations: nothing the JSON lines leave out is gathered for them.

    The access log writes one line per request, and each record would otherwise look up its
    caller's file and line and the thread's and process's names.
    """
    logging._srcfile = None  # noqa: SLF001 - the documented switch (logging HOWTO, "Optimization")
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's options for the gateway, shared by ``serve`` and the tests' in-process server."""
    limits = raise_file_limit(
        EdgeLimits(
            max_head_bytes=settings.max_request_head_bytes,
            head_timeout_seconds=settings.request_head_timeout_seconds,
            max_connections=settings.max_connections,
            max_chunk_extension_bytes=settings.max_chunk_extension_bytes,
        ),
        # A PUT holds two connections to its node: the upload and the HEAD beside it.
        node_connections_per_client=2,
    )
    return {
        "http": guarded_protocol(limits),
        # No WebSocket routes: an Upgrade request is served as plain HTTP, never handed to the app
        # as a WebSocket connection.
        "ws": "none",
        "timeout_keep_alive": settings.keep_alive_timeout_seconds,
        # The gateway logs one JSON line per request itself, with more in it than uvicorn's.
        "access_log": False,
        "log_config": None,
        # Nothing here reads X-Forwarded-*; skipping uvicorn's middleware for it saves a layer.
        "proxy_headers": False,
    }


def serve() -> None:
    """Run the gateway with uvicorn (``object-gateway`` without a command): one process, or
    ``GATEWAY_WORKERS`` worker processes on the same listening sockets."""
    return_large_buffers_to_the_os()
    settings = Settings.from_environ()
    count = settings.worker_count
    configure_logging(settings, several_processes=count > 1)
    sockets = listening_sockets(settings)
    if count == 1:
        run_worker(settings, sockets)
        return
    # One /metrics answer for all of them: each process writes its counters where every other
    # can read them (prometheus_client's multiprocess mode).
    metrics_dir = tempfile.mkdtemp(prefix="gateway-metrics-")
    os.environ[MULTIPROCESS_DIR_VARIABLE] = metrics_dir
    try:
        status = supervise(count, lambda _: run_worker(settings.per_worker(count), sockets))
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    sys.exit(status)


def configure_logging(settings: Settings, *, several_processes: bool) -> None:
    handler: logging.Handler = (
        BatchedLineHandler(
            sys.stderr, settings.log_flush_seconds, whole_lines_per_write=several_processes
        )
        if settings.log_flush_seconds > 0
        else logging.StreamHandler()
    )
    handler.setFormatter(JsonLogFormatter(with_process=several_processes))
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler], force=True)
    log_cheaply()


def run_worker(settings: Settings, sockets: list[socket.socket]) -> None:
    """One gateway process on ``sockets``, with ``settings`` (its share of the budgets)."""
    use_multiprocess_metrics_if_asked()
    container = Container()
    container.settings.override(providers.Object(settings))
    app = create_app(container)
    keep_garbage_collection_off_the_request_path()
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        **server_options(settings),
    )
    uvicorn.Server(config).run(sockets=sockets)


def listening_sockets(settings: Settings) -> list[socket.socket]:
    """The public listener, and the admin one (unless ``GATEWAY_ADMIN_PORT`` is 0).

    One server serves both; the admin routes answer only on the admin listener's port.
    """
    sockets = [_listen(settings.host, settings.port)]
    if settings.admin_port:
        sockets.append(_listen(settings.admin_host, settings.admin_port))
    return sockets


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(2048)
    listener.set_inheritable(True)
    return listener


if __name__ == "__main__":
    serve()
