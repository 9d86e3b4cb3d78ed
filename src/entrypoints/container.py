from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, TypeVar

import docker
from dependency_injector import containers, providers

from adapters.docker import DockerNodeDiscovery, SwarmNodeDiscovery
from adapters.s3 import ByteBudget, MinioObjectStorage, MinioSettings, PartSpool
from adapters.token_file import TokenFile
from application.auth import AccessControl, Credentials
from application.background import Background
from application.conditional import ConditionalWrites
from application.drain import Drain
from application.fleet import Fleet
from application.fleet_watcher import FleetWatcher
from application.leases import JobLease
from application.listing import ListObjects
from application.node_access import NodeAccess
from application.objects import DeleteObject, GetObject, HeadObject, PutObject
from application.readiness import check_readiness
from application.reads import VersionReads
from application.rebalance import Rebalance
from application.tidying import Tidying
from application.upkeep import Upkeep
from application.writes import VersionWrites
from domain.circuit_breaker import NodeBreakers
from domain.in_flight import InFlightLimits
from domain.versions import VersionClock
from entrypoints.http.admin import AdminJobs
from entrypoints.http.asgi import MinDataRate
from entrypoints.http.objects import ObjectApi, ObjectUseCases
from entrypoints.lifespan import GatewayLifespan
from entrypoints.observability.metrics import GatewayMetrics, multiprocess_dir
from entrypoints.observability.tracing import tracer_from_environ
from entrypoints.settings import Settings

__all__ = ["Container"]


class _Closable(Protocol):
    def close(self) -> None: ...


_C = TypeVar("_C", bound=_Closable)


def _thread_pool(max_workers: int, thread_name_prefix: str) -> Iterator[ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=thread_name_prefix)
    try:
        yield executor
    finally:
        executor.shutdown(wait=False, cancel_futures=True)


def _closing(factory: Callable[..., _C], **kwargs: object) -> Iterator[_C]:
    resource = factory(**kwargs)
    try:
        yield resource
    finally:
        resource.close()


class Container(containers.DeclarativeContainer):
    """The one composition root: everything the app and the CLI use is built here. Tests override
    providers (``container.node_discovery.override``).

    Resources (thread pools, SDK clients) are created on first use and released by
    ``shutdown_resources()``, which the lifespan calls when the app stops.
    """

    __self__ = providers.Self()

    settings = providers.Singleton(Settings.from_environ)

    # The docker SDK is synchronous: discovery runs in threads of its own, one listing the nodes,
    # one opening the events stream, so that neither queues behind the other on a slow daemon.
    discovery_executor = providers.Resource(
        _thread_pool, max_workers=2, thread_name_prefix="discovery"
    )

    docker_client = providers.Factory(
        docker.from_env, timeout=settings.provided.docker_timeout_seconds
    )
    # GATEWAY_DISCOVERY picks where the nodes are found: this daemon's containers, or a swarm.
    node_discovery = providers.Selector(
        settings.provided.discovery,
        docker=providers.Resource(
            _closing,
            DockerNodeDiscovery,
            client_factory=docker_client.provider,
            name_marker=settings.provided.node_name_marker,
            node_port=settings.provided.node_port,
            executor=discovery_executor,
        ),
        swarm=providers.Resource(
            _closing,
            SwarmNodeDiscovery,
            client_factory=docker_client.provider,
            name_marker=settings.provided.node_name_marker,
            node_port=settings.provided.node_port,
            executor=discovery_executor,
            task_poll_seconds=settings.provided.swarm_task_poll_seconds,
        ),
    )
    breakers = providers.Singleton(
        NodeBreakers,
        failure_threshold=settings.provided.breaker_failure_threshold,
        cooldown_seconds=settings.provided.breaker_cooldown_seconds,
    )
    in_flight_limits = providers.Singleton(
        InFlightLimits, max_per_node=settings.provided.node_max_in_flight
    )
    node_access = providers.Singleton(NodeAccess, breakers=breakers, limits=in_flight_limits)

    part_spool = providers.Singleton(
        PartSpool,
        memory=providers.Singleton(
            ByteBudget, capacity_bytes=settings.provided.upload_buffer_bytes
        ),
        disk=providers.Singleton(ByteBudget, capacity_bytes=settings.provided.upload_spool_bytes),
        directory=settings.provided.upload_spool_dir,
    )
    minio_settings = providers.Singleton(
        MinioSettings,
        bucket=settings.provided.bucket,
        connect_timeout_seconds=settings.provided.node_connect_timeout_seconds,
        first_byte_timeout_seconds=settings.provided.node_first_byte_timeout_seconds,
        idle_timeout_seconds=settings.provided.node_idle_timeout_seconds,
        part_size_bytes=settings.provided.part_size_bytes,
        download_chunk_bytes=settings.provided.download_chunk_bytes,
        scheme=settings.provided.node_scheme,
        ca_file=settings.provided.node_ca_file,
    )
    # None unless the OTEL_* variables configure an OTLP endpoint; flushed when resources shut down.
    tracer = providers.Resource(tracer_from_environ, environ=providers.Object(os.environ))
    # Its aiohttp session lives on the server's event loop; the app closes it when it stops. It
    # also keeps what is recorded on the nodes themselves: drain marks and job leases.
    object_storage = providers.Singleton(
        MinioObjectStorage, settings=minio_settings, part_spool=part_spool, tracer=tracer
    )

    fleet = providers.Singleton(
        Fleet,
        discovery=node_discovery,
        marks=object_storage,
        virtual_nodes=settings.provided.virtual_nodes,
        first_wait_seconds=settings.provided.docker_timeout_seconds,
        ack_window_seconds=settings.provided.drain_ack_window_seconds,
        replicas=settings.provided.replicas,
        on_answer=breakers.provided.record_success,
    )
    fleet_watcher = providers.Singleton(
        FleetWatcher,
        fleet=fleet,
        discovery=node_discovery,
        resync_seconds=settings.provided.discovery_resync_seconds,
        drain_check_seconds=settings.provided.drain_check_seconds,
    )
    version_clock = providers.Singleton(VersionClock)
    # What requests leave for later: read repairs, and removing versions nothing needs any more.
    read_repairs = providers.Singleton(Background)
    tidying = providers.Singleton(Tidying, storage=object_storage, access=node_access)
    # The one read path and the one write path, for every number of copies per ID.
    upkeep = providers.Singleton(
        Upkeep,
        fleet=fleet,
        storage=object_storage,
        access=node_access,
        repairs=read_repairs,
        tidying=tidying,
    )
    reads = providers.Singleton(
        VersionReads,
        fleet=fleet,
        storage=object_storage,
        access=node_access,
        clock=version_clock,
        policy=settings.provided.replication,
        upkeep=upkeep,
        fallback_nodes=settings.provided.read_fallback_nodes,
    )
    writes = providers.Singleton(
        VersionWrites, reads=reads, max_write_seconds=settings.provided.max_write_seconds
    )
    conditional_writes = providers.Singleton(ConditionalWrites, reads=reads, writes=writes)
    put_object = providers.Factory(PutObject, writes=writes, conditional=conditional_writes)
    get_object = providers.Factory(GetObject, reads=reads)
    head_object = providers.Factory(HeadObject, reads=reads)
    delete_object = providers.Factory(DeleteObject, writes=writes)

    list_objects = providers.Singleton(ListObjects, fleet=fleet, storage=object_storage)

    # A pass over the fleet (call with concurrency=... to choose how many IDs settle at once).
    rebalance = providers.Factory(
        Rebalance,
        fleet=fleet,
        storage=object_storage,
        access=node_access,
        marks=object_storage,
        replicas=settings.provided.replicas,
        tombstone_grace_seconds=settings.provided.tombstone_grace_seconds,
    )
    drain = providers.Singleton(
        Drain,
        fleet=fleet,
        marks=object_storage,
        storage=object_storage,
        rebalance=rebalance.provider,
        propagation_seconds=settings.provided.drain_propagation_seconds,
    )
    # One rebalance, repair or drain at a time across every gateway of the fleet.
    job_lease = providers.Singleton(
        JobLease, fleet=fleet, leases=object_storage, clock=version_clock
    )
    admin_jobs = providers.Singleton(
        AdminJobs,
        fleet=fleet,
        rebalance=rebalance.provider,
        drain=drain,
        lease=job_lease,
        tracer=tracer,
    )

    metrics = providers.Singleton(
        GatewayMetrics,
        fleet=fleet,
        breakers=breakers,
        reads=reads,
        writes=writes,
        conditional=conditional_writes,
        multiprocess_dir=providers.Callable(multiprocess_dir),
    )
    readiness = providers.Callable(
        check_readiness,
        fleet=fleet,
        breakers=breakers,
        stale_after_seconds=settings.provided.discovery_stale_after_seconds,
        replication=settings.provided.replication,
    )
    object_api = providers.Singleton(
        ObjectApi,
        use_cases=providers.Factory(
            ObjectUseCases,
            put=put_object,
            get=get_object,
            head=head_object,
            delete=delete_object,
        ),
        max_body_bytes=settings.provided.max_body_bytes,
        body_read_timeout_seconds=settings.provided.body_read_timeout_seconds,
        body_send_timeout_seconds=settings.provided.body_send_timeout_seconds,
        replicated=settings.provided.replicated,
        min_data_rate=providers.Callable(
            MinDataRate.of,
            settings.provided.min_data_rate_bytes_per_second,
            settings.provided.min_data_rate_grace_seconds,
        ),
    )
    # Auth (GATEWAY_AUTH_TOKENS_FILE): off by default, and then nothing below is built. The
    # commands (object-gateway token, sign, signing-key) change the file through `credentials`;
    # the gateway checks requests through `access_control` and follows the file's changes.
    clock = providers.Object(time.time)
    credential_store = providers.Singleton(TokenFile, path=settings.provided.auth_tokens_file)
    access_control = providers.Selector(
        settings.provided.auth_mode,
        off=providers.Object(None),
        on=providers.Singleton(
            AccessControl,
            store=credential_store,
            clock=clock,
            reload_seconds=settings.provided.auth_reload_seconds,
        ),
    )
    credentials = providers.Factory(Credentials, store=credential_store, clock=clock)

    lifespan = providers.Singleton(
        GatewayLifespan,
        watcher=fleet_watcher,
        storage=object_storage,
        background=providers.List(read_repairs, tidying),
        writes=writes,
        release_resources=__self__.provided.shutdown_resources,
        access=access_control,
        metrics=metrics,
    )
