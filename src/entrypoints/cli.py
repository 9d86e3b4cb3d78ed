"""The ``object-gateway`` console script: serve (no arguments), or ``rebalance``.

Both read the same settings from the environment (node name marker, bucket, ring size, ...) and
find the nodes the same way, so the tool places objects exactly where the server looks for them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from application.rebalance import (
    DEFAULT_CONCURRENCY,
    Misplaced,
    Outcome,
    Rebalance,
    RebalancePlan,
    RebalanceReporter,
    RebalanceSummary,
    StepResult,
)
from domain.errors import GatewayError
from entrypoints.container import Container

__all__ = ["main"]

EXIT_OK = 0
EXIT_NOT_IN_PLACE = 1
EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="object-gateway",
        description="Without a command: serve the HTTP gateway (settings: GATEWAY_* variables).",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    rebalance = commands.add_parser(
        "rebalance",
        help="move every object onto the node that owns its ID",
        description="Lists every node's objects and moves each one that is not on its owner: "
        "streams it there, checks size and checksum, then deletes the misplaced copy. Exits 0 "
        "only when every object is in place.",
    )
    rebalance.add_argument(
        "--dry-run", action="store_true", help="print the plan and change nothing"
    )
    rebalance.add_argument(
        "--drain",
        action="append",
        default=[],
        metavar="NODE_NAME",
        help="place objects as if this node were gone, so that it ends up empty (repeatable)",
    )
    rebalance.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        help=f"objects moved at once (default: {DEFAULT_CONCURRENCY})",
    )
    arguments = parser.parse_args(argv)
    if arguments.command is None:
        from entrypoints.main import serve  # noqa: PLC0415 - the server's imports are heavier

        serve()
        return
    sys.exit(
        asyncio.run(
            run_rebalance(
                Container(),
                dry_run=arguments.dry_run,
                drain=arguments.drain,
                concurrency=arguments.concurrency,
                out=sys.stdout,
            )
        )
    )


async def run_rebalance(
    container: Container,
    *,
    dry_run: bool,
    drain: Sequence[str],
    concurrency: int,
    out: TextIO,
) -> int:
    """Plan, report and (unless ``dry_run``) carry out a rebalance; the process exit status."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    settings = container.settings()
    reporter: RebalanceReporter = TerminalReporter(out) if out.isatty() else JsonLinesReporter(out)
    storage = container.object_storage()
    try:
        try:
            await container.fleet().refresh()
            membership = container.fleet().current
            assert membership is not None
            rebalance = Rebalance(
                storage,
                list(membership.nodes.values()),
                virtual_nodes=settings.virtual_nodes,
                drain=drain,
                concurrency=concurrency,
            )
            plan = await rebalance.plan()
        except GatewayError as exc:
            reporter.error(exc)
            return EXIT_USAGE
        reporter.planned(plan)
        if dry_run:
            for item in plan.misplaced:
                reporter.planned_move(item)
            reporter.dry_run_done(plan)
            in_place = not plan.misplaced and not plan.unlisted
            return EXIT_OK if in_place else EXIT_NOT_IN_PLACE
        summary = await rebalance.execute(plan, reporter)
        return EXIT_OK if summary.everything_in_place else EXIT_NOT_IN_PLACE
    finally:
        await storage.aclose()
        container.shutdown_resources()


class JsonLinesReporter:
    """One JSON object per line: what a log collector or a script reads."""

    def __init__(self, out: TextIO) -> None:
        self._out = out

    def _emit(self, **fields: object) -> None:
        self._out.write(json.dumps(fields, default=str) + "\n")
        self._out.flush()

    def error(self, error: GatewayError) -> None:
        self._emit(event="error", error=error.code, detail=error.detail)

    def planned(self, plan: RebalancePlan) -> None:
        self._emit(
            event="plan",
            misplaced=len(plan.misplaced),
            misplaced_bytes=plan.misplaced_bytes,
            in_place=plan.in_place,
            drained=list(plan.drained),
            unlisted_nodes=plan.unlisted,
            foreign_keys=plan.foreign_keys,
        )

    def planned_move(self, item: Misplaced) -> None:
        self._emit(
            event="would_move",
            id=item.object_id,
            source=item.holder,
            target=item.owner,
            size=item.size,
        )

    def dry_run_done(self, plan: RebalancePlan) -> None:
        self._emit(event="dry_run", would_move=len(plan.misplaced), changed=0)

    def step(self, result: StepResult) -> None:
        item = result.item
        self._emit(
            event="step",
            id=item.object_id,
            source=item.holder,
            target=item.owner,
            size=item.size,
            outcome=str(result.outcome),
            detail=result.detail or None,
        )

    def finished(self, summary: RebalanceSummary) -> None:
        self._emit(
            event="summary",
            moved=summary.moved,
            stale_deleted=summary.stale_deleted,
            failed=summary.failed,
            bytes_moved=summary.bytes_moved,
            unlisted_nodes=summary.unlisted_nodes,
            everything_in_place=summary.everything_in_place,
        )


class TerminalReporter:
    """A progress bar (objects and bytes done, rate, time left) and a readable summary."""

    def __init__(self, out: TextIO) -> None:
        self._console = Console(file=out)
        self._progress = Progress(
            TextColumn("[bold]rebalance"),
            BarColumn(),
            MofNCompleteColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self._console,
        )
        self._task: TaskID | None = None
        self._by_bytes = False

    def error(self, error: GatewayError) -> None:
        self._console.print(f"[red]error[/red]: {error.detail}")

    def planned(self, plan: RebalancePlan) -> None:
        self._console.print(
            f"{len(plan.misplaced)} objects ({plan.misplaced_bytes} bytes) to move, "
            f"{plan.in_place} in place"
            + (f"; draining {', '.join(plan.drained)}" if plan.drained else "")
        )
        for name, reason in plan.unlisted.items():
            self._console.print(f"[red]cannot list {name}[/red]: {reason}")
        if plan.misplaced:
            self._progress.start()
            self._task = self._progress.add_task(
                "rebalance", total=plan.misplaced_bytes or len(plan.misplaced)
            )
            self._by_bytes = plan.misplaced_bytes > 0

    def planned_move(self, item: Misplaced) -> None:
        self._console.print(
            f"would move {item.object_id} ({item.size} bytes): {item.holder} -> {item.owner}"
        )

    def dry_run_done(self, plan: RebalancePlan) -> None:
        self._progress.stop()
        self._console.print(f"dry run: {len(plan.misplaced)} moves planned, nothing changed")

    def step(self, result: StepResult) -> None:
        if self._task is not None:
            self._progress.advance(self._task, result.item.size if self._by_bytes else 1)
        if result.outcome is Outcome.FAILED:
            self._progress.console.print(
                f"[red]failed[/red] {result.item.object_id} "
                f"({result.item.holder} -> {result.item.owner}): {result.detail}"
            )

    def finished(self, summary: RebalanceSummary) -> None:
        self._progress.stop()
        verdict = (
            "everything in place" if summary.everything_in_place else "NOT everything in place"
        )
        self._console.print(
            f"moved {summary.moved} ({summary.bytes_moved} bytes), deleted {summary.stale_deleted} "
            f"stale copies, {summary.failed} failed, {summary.unlisted_nodes} nodes not listed: "
            f"{verdict}"
        )
