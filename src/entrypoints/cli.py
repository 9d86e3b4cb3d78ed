"""The ``object-gateway`` command: serve (no command), or have a running gateway rebalance, drain or
undrain its fleet.

The moves run inside the gateway (``entrypoints/http/admin.py``), in turn with its own writes; the
command streams how they go: a progress bar on a terminal, the JSON lines otherwise (for scripts
and logs). It reaches the gateway's admin listener at ``GATEWAY_ADMIN_URL`` (by default
``http://127.0.0.1:<GATEWAY_ADMIN_PORT>``), that is from beside the gateway:
``docker compose exec gateway object-gateway rebalance``.

Exit status: 0 done (everything in place; the node empty), 1 not yet (run again, or see why), 2
not possible (a usage error, no gateway answering, a refusal).
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from typing import Any, Protocol, TextIO

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

from application.rebalance import DEFAULT_CONCURRENCY
from entrypoints.settings import Settings

__all__ = ["EXIT_NOT_DONE", "EXIT_OK", "EXIT_USAGE", "main", "run_admin"]

EXIT_OK = 0
EXIT_NOT_DONE = 1
EXIT_USAGE = 2
# The longest the command waits for the gateway's next line (a drain first waits for the mark
# to reach every gateway; a move of a large object takes a while).
_READ_TIMEOUT_SECONDS = 600

Event = dict[str, Any]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="object-gateway",
        description="Without a command: serve the HTTP gateway (settings: GATEWAY_* variables). "
        "With one: have the gateway running beside this command do it.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    rebalance = commands.add_parser(
        "rebalance",
        aliases=["repair"],
        help="put every ID's newest copy on its replicas (its owner, with one copy per ID), and "
        "nothing anywhere else",
        description="Lists every node and settles each ID not held by exactly its replicas, all "
        "with the same copy: the newest copy (by the version the gateway stamped) goes to each "
        "replica (handoff copies move home; a replica replaced by an empty node is refilled), "
        "the others are deleted. `repair` is the same command. Exits 0 only when everything is "
        "in place.",
    )
    rebalance.add_argument("--dry-run", action="store_true", help="say what would move")
    rebalance.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        help=f"IDs moved at once (default: {DEFAULT_CONCURRENCY})",
    )
    rebalance.add_argument(
        "--drain",
        action="append",
        default=[],
        metavar="NODE_NAME",
        help="the same as `drain NODE_NAME` (repeatable)",
    )
    drain = commands.add_parser(
        "drain",
        help="empty a node so that it can be removed",
        description="Marks the node (every gateway then writes nothing new there), waits until "
        "every gateway must have seen the mark, moves everything off it, and exits 0 once it "
        "holds nothing: it is then safe to remove.",
    )
    drain.add_argument("node", metavar="NODE_NAME")
    undrain = commands.add_parser("undrain", help="take a node's drain mark away")
    undrain.add_argument("node", metavar="NODE_NAME")
    arguments = parser.parse_args(argv)
    if arguments.command is None:
        from entrypoints.main import serve  # noqa: PLC0415 - the server's imports are heavier

        serve()
        return
    settings = Settings.from_environ()
    url = settings.admin_url or f"http://127.0.0.1:{settings.admin_port}"
    sys.exit(run_admin(arguments, url=url, out=sys.stdout))


def run_admin(arguments: argparse.Namespace, *, url: str, out: TextIO) -> int:
    """Run one command against the gateway's admin API at ``url``; the exit status."""
    renderer: Renderer = TerminalRenderer(out) if out.isatty() else JsonLinesRenderer(out)
    client = AdminClient(url)
    try:
        if arguments.command == "undrain":
            renderer.event(client.call(f"/admin/undrain/{_quoted(arguments.node)}"))
            return EXIT_OK
        if arguments.command == "drain" or arguments.drain:
            nodes = [arguments.node] if arguments.command == "drain" else arguments.drain
            status = EXIT_OK
            for node in nodes:
                status = max(
                    status, _follow(client.stream(f"/admin/drain/{_quoted(node)}"), renderer)
                )
            return status
        query = {"dry_run": "true" if arguments.dry_run else "false"}
        query["concurrency"] = str(arguments.concurrency)
        return _follow(client.stream("/admin/rebalance", query), renderer)
    except AdminUnavailable as exc:
        renderer.event({"event": "error", "error": exc.code, "detail": str(exc)})
        return EXIT_USAGE
    finally:
        renderer.close()


def _follow(events: Iterator[Event], renderer: Renderer) -> int:
    status = EXIT_NOT_DONE
    for event in events:
        renderer.event(event)
        kind = event.get("event")
        if kind == "error":
            return EXIT_USAGE
        if kind == "summary":
            status = EXIT_OK if event.get("everything_in_place") else EXIT_NOT_DONE
        elif kind == "dry_run":
            status = EXIT_OK if not event.get("would_move") and event.get("complete") else 1
        elif kind == "drained":
            status = EXIT_OK if event.get("empty") else EXIT_NOT_DONE
    return status


def _quoted(node: str) -> str:
    return urllib.parse.quote(node, safe="")


class AdminUnavailable(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


class AdminClient:
    """The gateway's admin API, over plain HTTP/1.1 (the standard library's client)."""

    def __init__(self, url: str) -> None:
        self._url = url.rstrip("/")

    def call(self, path: str) -> Event:
        return next(self.stream(path))

    def stream(self, path: str, query: dict[str, str] | None = None) -> Iterator[Event]:
        target = self._url + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        request = urllib.request.Request(target, method="POST")  # noqa: S310 - our own URL
        try:
            response = urllib.request.urlopen(request, timeout=_READ_TIMEOUT_SECONDS)  # noqa: S310
        except urllib.error.HTTPError as exc:
            body = exc.read()
            try:
                error = json.loads(body)
                raise AdminUnavailable(error["error"], error["detail"]) from None
            except (ValueError, KeyError, TypeError):
                raise AdminUnavailable("admin_error", f"HTTP {exc.code}: {body[:200]!r}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise AdminUnavailable(
                "gateway_unreachable",
                f"no gateway answers at {self._url} ({exc}); run the command beside a running "
                "gateway (docker compose exec gateway object-gateway ...) or set GATEWAY_ADMIN_URL",
            ) from exc
        with response:
            for line in response:
                if line.strip():
                    yield json.loads(line)


class Renderer(Protocol):
    def event(self, event: Event) -> None: ...

    def close(self) -> None: ...


class JsonLinesRenderer:
    """The gateway's events as they come: one JSON object per line."""

    def __init__(self, out: TextIO) -> None:
        self._out = out

    def event(self, event: Event) -> None:
        self._out.write(json.dumps(event) + "\n")
        self._out.flush()

    def close(self) -> None:
        self._out.flush()


class TerminalRenderer:
    """A progress bar (IDs and bytes done, rate, time left) and readable lines."""

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

    def event(self, event: Event) -> None:
        render = getattr(self, f"_on_{event.get('event')}", None)
        if render is not None:
            render(event)
        else:
            self._console.print(event)

    def close(self) -> None:
        self._progress.stop()

    def _on_error(self, event: Event) -> None:
        self._progress.stop()
        self._console.print(f"[red]error[/red]: {event['detail']}")

    def _on_survey(self, event: Event) -> None:
        self._console.print(
            f"{event['misplaced']} IDs ({event['misplaced_bytes']} bytes) to move, "
            f"{event['in_place']} in place"
            + (f"; draining {', '.join(event['draining'])}" if event["draining"] else "")
        )
        for name, reason in event["unlisted_nodes"].items():
            self._console.print(f"[red]cannot list {name}[/red]: {reason}")
        self._progress.stop()
        self._progress = Progress(*self._progress.columns, console=self._console)
        if event["misplaced"]:
            self._progress.start()
            self._by_bytes = event["misplaced_bytes"] > 0
            self._task = self._progress.add_task(
                "rebalance",
                total=event["misplaced_bytes"] if self._by_bytes else event["misplaced"],
            )

    def _on_would_move(self, event: Event) -> None:
        holders = ", ".join(event["holders"])
        self._console.print(
            f"would move {event['id']} ({event['size']} bytes): {holders} -> {event['owner']}"
        )

    def _on_dry_run(self, event: Event) -> None:
        self._console.print(f"dry run: {event['would_move']} moves planned, nothing changed")

    def _on_step(self, event: Event) -> None:
        if self._task is not None:
            self._progress.advance(self._task, event["size"] if self._by_bytes else 1)
        if event["outcome"] in ("failed", "left"):
            outcome, object_id = event["outcome"], event["id"]
            self._progress.console.print(
                f"[red]{outcome}[/red] {object_id} -> {event['owner']}: {event['detail']}"
            )

    def _on_summary(self, event: Event) -> None:
        self._progress.stop()
        verdict = (
            "everything in place" if event["everything_in_place"] else "NOT everything in place"
        )
        self._console.print(
            f"moved {event['moved']} ({event['bytes_moved']} bytes), deleted the older copies of "
            f"{event['stale_deleted']} more, purged {event['purged']} tombstones, {event['left']} "
            f"left for the next pass, {event['failed']} failed, {event['unlisted_nodes']} nodes "
            f"not listed: {verdict}"
        )

    def _on_marked(self, event: Event) -> None:
        self._console.print(f"{event['node']} is marked {event['state']}")

    def _on_waiting(self, event: Event) -> None:
        self._console.print(f"waiting {event['seconds']:g} s for every gateway to see the mark")

    def _on_remaining(self, event: Event) -> None:
        self._console.print(
            f"after pass {event['passes']}: {event['node']} holds {event['objects']} objects"
        )

    def _on_drained(self, event: Event) -> None:
        if event["empty"]:
            self._console.print(f"[green]{event['node']} holds nothing: safe to remove[/green]")
        else:
            self._console.print(f"[red]{event['node']} still holds objects: run drain again[/red]")

    def _on_undrained(self, event: Event) -> None:
        self._console.print(f"{event['node']} is no longer marked to be drained")
