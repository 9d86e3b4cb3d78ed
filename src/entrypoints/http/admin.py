"""The admin API: rebalance, drain and undrain, run inside a gateway and streamed as JSON lines.

They run in a gateway (whichever the command reaches), with its view of the fleet. They are served
only on the admin listener (``GATEWAY_ADMIN_HOST``:``GATEWAY_ADMIN_PORT``, loopback by default),
which the ``object-gateway`` commands talk to; on the public port these paths do not exist. One
job runs at a time across every gateway of the fleet: each holds the fleet's job lease, whose
claims are kept on the nodes (``JobLease``), while it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from litestar import Router, post
from litestar.connection import ASGIConnection
from litestar.exceptions import NotFoundException
from litestar.handlers.base import BaseRouteHandler
from litestar.params import FromPath, FromQuery
from litestar.response import Stream
from opentelemetry.trace import Span, Status, StatusCode, Tracer

from application.drain import Drain
from application.fleet import Fleet
from application.leases import JobLease
from application.rebalance import (
    DEFAULT_CONCURRENCY,
    Rebalance,
    RebalanceSummary,
    StepResult,
    Survey,
)
from domain.errors import GatewayError, JobInProgress
from entrypoints.http.auth import AUTH_RULE, Rule

__all__ = ["AdminJobs", "admin_router"]

_NDJSON = "application/x-ndjson"
_DONE = object()


class _Events:
    """A job's progress as JSON events, queued for the stream (the reporter of both jobs)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[object] = asyncio.Queue()
        # With tracing on: the job's span, which records each event (a rebalance's steps too).
        self.span: Span | None = None

    def emit(self, event: str, **fields: Any) -> None:
        self.queue.put_nowait({"event": event, **fields})
        if self.span is not None:
            self.span.add_event(event, {name: _attribute(value) for name, value in fields.items()})

    def surveyed(self, survey: Survey) -> None:
        self.emit(
            "survey",
            misplaced=survey.misplaced,
            misplaced_bytes=survey.misplaced_bytes,
            in_place=survey.in_place,
            draining=list(survey.draining),
            unlisted_nodes=survey.unlisted,
            foreign_keys=survey.foreign_keys,
        )

    def planned_move(self, object_id: str, holders: Sequence[str], owner: str, size: int) -> None:
        self.emit("would_move", id=object_id, holders=list(holders), owner=owner, size=size)

    def step(self, result: StepResult) -> None:
        self.emit(
            "step",
            id=result.object_id,
            holders=list(result.holders),
            owner=result.owner,
            size=result.size,
            outcome=str(result.outcome),
            detail=result.detail or None,
        )

    def finished(self, summary: RebalanceSummary) -> None:
        self.emit(
            "summary",
            moved=summary.moved,
            stale_deleted=summary.stale_deleted,
            purged=summary.purged,
            left=summary.left,
            failed=summary.failed,
            bytes_moved=summary.bytes_moved,
            unlisted_nodes=summary.unlisted_nodes,
            everything_in_place=summary.everything_in_place,
        )

    def ring(self, fingerprint: str, settled: bool) -> None:
        self.emit("ring", fingerprint=fingerprint, settled=settled)

    def marked(self, node: str, state: str) -> None:
        self.emit("marked", node=node, state=state)

    def waiting(self, seconds: float) -> None:
        self.emit("waiting", seconds=seconds)

    def remaining(self, node: str, objects: int, passes: int) -> None:
        self.emit("remaining", node=node, objects=objects, passes=passes)


class AdminJobs:
    def __init__(
        self,
        fleet: Fleet,
        rebalance: Callable[..., Rebalance],
        drain: Drain,
        lease: JobLease,
        tracer: Tracer | None = None,
    ) -> None:
        self._fleet = fleet
        self._rebalance = rebalance
        self._drain = drain
        self._lease = lease
        self._tracer = tracer
        self._busy = asyncio.Lock()

    def rebalance(self, *, dry_run: bool, concurrency: int) -> AsyncIterator[bytes]:
        async def job(events: _Events) -> None:
            rebalance = self._rebalance(concurrency=concurrency)
            survey = await rebalance.survey(events if dry_run else None)
            events.surveyed(survey)
            if dry_run:
                events.emit("dry_run", would_move=survey.misplaced, complete=survey.complete)
            elif (await rebalance.execute(events)).everything_in_place:
                # Everything in place: reads may look nowhere but an ID's replicas.
                await rebalance.settle_ring(events)

        # A dry run changes nothing: it needs no lease.
        return self._run("rebalance", job, exclusive=not dry_run)

    def drain(self, node: str) -> AsyncIterator[bytes]:
        async def job(events: _Events) -> None:
            empty = await self._drain.drain(node, events)
            events.emit("drained", node=node, empty=empty)

        return self._run("drain", job)

    async def undrain(self, node: str) -> None:
        self.refuse_if_busy()
        async with self._busy, self._lease.held("undrain"):
            await self._drain.undrain(node)

    def refuse_if_busy(self) -> None:
        if self._busy.locked():
            raise JobInProgress("a rebalance or drain is already running in this gateway")

    async def _run(
        self, name: str, job: Callable[[_Events], Awaitable[None]], *, exclusive: bool = True
    ) -> AsyncIterator[bytes]:
        if self._busy.locked():  # another job started since the request was checked
            busy = JobInProgress("a rebalance or drain is already running in this gateway")
            yield _line({"event": "error", "error": busy.code, "detail": busy.detail})
            return
        async with self._busy:
            events = _Events()

            async def run() -> None:
                traced = (
                    contextlib.nullcontext(None)
                    if self._tracer is None
                    else self._tracer.start_as_current_span(name)
                )
                with traced as span:
                    events.span = span
                    try:
                        if exclusive:
                            async with self._lease.held(name):
                                await job(events)
                        else:
                            await job(events)
                    except GatewayError as exc:
                        events.emit("error", error=exc.code, detail=exc.detail)
                        if span is not None:
                            span.set_status(Status(StatusCode.ERROR, exc.code))
                    finally:
                        events.queue.put_nowait(_DONE)

            task = asyncio.create_task(run(), name="admin-job")
            try:
                while (item := await events.queue.get()) is not _DONE:
                    yield _line(item)
            finally:
                # The client went away (or the stream ended): the job stops with it.
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


def _attribute(value: object) -> str | int | float | bool | list[str]:
    """A span event's attribute: what OpenTelemetry takes as is, else its JSON."""
    if isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
        return list(value)
    return json.dumps(value, default=str)


def _line(event: object) -> bytes:
    return (json.dumps(event, default=str) + "\n").encode()


def admin_router(jobs: Callable[[], AdminJobs], admin_port: int) -> Router:
    """The admin routes, answering only on the admin listener's port."""

    def only_on_the_admin_listener(
        connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler
    ) -> None:
        server = connection.scope.get("server")
        if not admin_port or server is None or server[1] != admin_port:
            raise NotFoundException()

    @post("/rebalance", status_code=200)
    async def rebalance(
        dry_run: FromQuery[bool] = False, concurrency: FromQuery[int] = DEFAULT_CONCURRENCY
    ) -> Stream:
        jobs().refuse_if_busy()
        return Stream(
            jobs().rebalance(dry_run=dry_run, concurrency=concurrency), media_type=_NDJSON
        )

    @post("/drain/{node:str}", status_code=200)
    async def drain(node: FromPath[str]) -> Stream:
        jobs().refuse_if_busy()
        return Stream(jobs().drain(node), media_type=_NDJSON)

    @post("/undrain/{node:str}", status_code=200)
    async def undrain(node: FromPath[str]) -> dict[str, str]:
        await jobs().undrain(node)
        return {"event": "undrained", "node": node}

    return Router(
        "/admin",
        route_handlers=[rebalance, drain, undrain],
        guards=[only_on_the_admin_listener],
        include_in_schema=False,
        opt={AUTH_RULE: Rule.ADMIN_LISTENER},
    )
