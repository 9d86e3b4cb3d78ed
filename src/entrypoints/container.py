from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, TypeVar

import docker
from dependency_injector import containers, providers

from adapters.docker import DockerNodeDiscovery, SwarmNodeDiscovery
from adapters.s3 import ByteBudget, MinioObjectStorage, MinioSettings, PartSpool
from application.drain import Drain
from application.fleet import Fleet
from application.fleet_watcher import FleetWatcher
from application.listing import ListObjects
from application.node_access import NodeAccess
from application.objects import DeleteObject, GetObject, HeadObject, ObjectLookup, PutObject
from application.read_repair import ReadRepair
from application.readiness import check_readiness
from application.rebalance import Rebalance
from application.replicas import Replicas
from application.write_locks import WriteLocks
from domain.circuit_breaker import NodeBreakers
from domain.in_flight import InFlightLimits
from domain.versions import VersionClock
from entrypoints.http.admin import AdminJobs
from entrypoints.http.asgi import MinDataRate
from entrypoints.http.objects import ObjectApi, ObjectUseCases
from entrypoints.lifespan import GatewayLifespan
from entrypoints.observability.metrics import GatewayMetrics
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


def _drain_propagation_seconds(drain_check_seconds: float) -> float:
    # Every gateway reads the marks every drain_check_seconds; one that read them just before the
    # mark was written sees it at its next read, which may itself take a second.
    return 2 * drain_check_seconds + 1


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
    # Its aiohttp session lives on the server's event loop; the app closes it when it stops. It
    # also keeps the nodes' drain marks (the DrainMarks port).
    # None unless the OTEL_* variables configure an OTLP endpoint; flushed when resources shut down.
    tracer = providers.Resource(tracer_from_environ, environ=providers.Object(os.environ))
    object_storage = providers.Singleton(
        MinioObjectStorage, settings=minio_settings, part_spool=part_spool, tracer=tracer
    )

    fleet = providers.Singleton(
        Fleet,
        discovery=node_discovery,
        marks=object_storage,
        virtual_nodes=settings.provided.virtual_nodes,
        first_wait_seconds=settings.provided.docker_timeout_seconds,
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
    write_locks = providers.Singleton(WriteLocks)
    object_lookup = providers.Singleton(
        ObjectLookup,
        fleet=fleet,
        storage=object_storage,
        access=node_access,
        clock=version_clock,
        locks=write_locks,
        fallback_nodes=settings.provided.read_fallback_nodes,
    )
    read_repair = providers.Singleton(
        ReadRepair, storage=object_storage, access=node_access, locks=write_locks
    )
    # GATEWAY_REPLICAS above 1: every use case goes through the replicas.
    replicas = providers.Selector(
        settings.provided.replication_mode,
        single=providers.Object(None),
        replicated=providers.Singleton(
            Replicas,
            lookup=object_lookup,
            policy=settings.provided.replication,
            repairs=read_repair,
        ),
    )
    put_object = providers.Factory(PutObject, lookup=object_lookup, replicas=replicas)
    get_object = providers.Factory(GetObject, lookup=object_lookup, replicas=replicas)
    head_object = providers.Factory(HeadObject, lookup=object_lookup, replicas=replicas)
    delete_object = providers.Factory(DeleteObject, lookup=object_lookup, replicas=replicas)

    list_objects = providers.Singleton(
        ListObjects, fleet=fleet, storage=object_storage, access=node_access
    )

    # A pass over the fleet as one membership sees it (call with membership=..., concurrency=...).
    rebalance = providers.Factory(
        Rebalance,
        storage=object_storage,
        access=node_access,
        locks=write_locks,
        replicas=settings.provided.replicas,
        tombstone_grace_seconds=settings.provided.tombstone_grace_seconds,
    )
    drain = providers.Singleton(
        Drain,
        fleet=fleet,
        marks=object_storage,
        storage=object_storage,
        rebalance=rebalance.provider,
        propagation_seconds=providers.Callable(
            _drain_propagation_seconds, settings.provided.drain_check_seconds
        ),
    )
    admin_jobs = providers.Singleton(
        AdminJobs, fleet=fleet, rebalance=rebalance.provider, drain=drain, tracer=tracer
    )

    metrics = providers.Singleton(
        GatewayMetrics, fleet=fleet, breakers=breakers, replicas=replicas, repairs=read_repair
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
    lifespan = providers.Singleton(
        GatewayLifespan,
        watcher=fleet_watcher,
        storage=object_storage,
        repairs=read_repair,
        replicas=replicas,
        release_resources=__self__.provided.shutdown_resources,
    )
