"""Asking enough of an ID's replicas: R of them at once, the next one in place of one that fails."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from domain.errors import NodeUnavailable, QuorumUnavailable
from domain.node import Node

__all__ = ["ask_quorum"]

_T = TypeVar("_T")


async def ask_quorum(
    replicas: list[Node],
    need: int,
    ask: Callable[[Node], Awaitable[_T]],
    *,
    available: Callable[[Node], bool],
    tolerant: bool,
    on_refusal: Callable[[], None],
) -> list[_T]:
    """The answers of ``need`` replicas, in the replicas' order: that many asked at once (of those
    ``available``), the next one in place of any that fails. Fewer than ``need`` answers raise
    ``QuorumUnavailable``, unless ``tolerant``. With one replica, its own failure is raised (it
    names the node and why)."""
    if len(replicas) == 1 and need == 1:
        try:
            return [await ask(replicas[0])]
        except NodeUnavailable:
            if tolerant:
                return []
            raise
    waiting = [node for node in replicas if available(node)]
    if len(waiting) < need and not tolerant:
        on_refusal()
        raise QuorumUnavailable(
            f"{len(waiting)} of this ID's {len(replicas)} replicas can be asked, and "
            f"{need} must answer"
        )
    answers: dict[str, _T] = {}
    failures: list[str] = []
    running: dict[asyncio.Future[_T], Node] = {}

    def ask_next() -> None:
        node = waiting.pop(0)
        running[asyncio.ensure_future(ask(node))] = node

    while waiting and len(running) < need:
        ask_next()
    try:
        while running:
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                node = running.pop(task)
                try:
                    answers[node.name] = task.result()
                except NodeUnavailable as exc:
                    failures.append(exc.detail)
                    if waiting and len(answers) + len(running) < need:
                        ask_next()
    finally:
        for task in running:
            task.cancel()
    if len(answers) < need and not tolerant:
        on_refusal()
        raise QuorumUnavailable(
            f"{len(answers)} of this ID's replicas answered, and {need} must: "
            + "; ".join(failures)
        )
    return [answers[node.name] for node in replicas if node.name in answers]
