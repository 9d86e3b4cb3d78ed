"""The ``object-gateway`` command: serve (no command), have a running gateway rebalance, drain or
undrain its fleet, or manage who may use it (``token``, ``sign``, ``signing-key``).

The moves run inside the gateway (``entrypoints/http/admin.py``), in turn with its own writes; the
command streams how they go: a progress bar on a terminal, the JSON lines otherwise (for scripts
and logs). It reaches the gateway's admin listener at ``GATEWAY_ADMIN_URL`` (by default
``http://127.0.0.1:<GATEWAY_ADMIN_PORT>``), that is from beside the gateway:
``docker compose exec gateway object-gateway rebalance``.

The auth commands need no running gateway: they change the file ``GATEWAY_AUTH_TOKENS_FILE``
names (atomically, mode 0600), and a gateway reading that file picks the change up within
``GATEWAY_AUTH_RELOAD_SECONDS``. What they print for people comes first; what a script wants (the
new token, the signed URL) is the last line.

Exit status: 0 done (everything in place; the node empty), 1 not yet (run again, or see why; no
such token), 2 not possible (a usage error, no gateway answering, a refusal, no tokens file).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
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

from application.auth import SIGNABLE_METHODS, Credentials
from application.rebalance import DEFAULT_CONCURRENCY
from domain.auth import Scope, valid_prefix
from domain.errors import CredentialsUnreadable, InvalidObjectId
from domain.object_id import ObjectId
from entrypoints.settings import Settings, env_variable

__all__ = [
    "EXIT_NOT_DONE",
    "EXIT_OK",
    "EXIT_USAGE",
    "main",
    "parse_arguments",
    "parse_duration",
    "run_admin",
    "run_credentials",
]

EXIT_OK = 0
EXIT_NOT_DONE = 1
EXIT_USAGE = 2
# The longest the command waits for the gateway's next line (a drain first waits for the mark
# to reach every gateway; a move of a large object takes a while).
_READ_TIMEOUT_SECONDS = 600

Event = dict[str, Any]
_AUTH_COMMANDS = ("token", "sign", "signing-key")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(?:[0-9]+[smhdw])+|[0-9]+", re.ASCII)


def main(argv: Sequence[str] | None = None) -> None:
    arguments = parse_arguments(argv)
    if arguments.command is None:
        from entrypoints.main import serve  # noqa: PLC0415 - the server's imports are heavier

        serve()
        return
    settings = Settings.from_environ()
    if arguments.command in _AUTH_COMMANDS:
        if not settings.auth_tokens_file:
            print(
                f"error: {env_variable('auth_tokens_file')} is not set: it names the file the "
                "gateway reads its tokens and signing keys from (README: Security)",
                file=sys.stderr,
            )
            sys.exit(EXIT_USAGE)
        from entrypoints.container import Container  # noqa: PLC0415 - only these commands

        container = Container()
        container.settings.override(settings)
        sys.exit(run_credentials(arguments, container.credentials(), out=sys.stdout))
    url = settings.admin_url or f"http://127.0.0.1:{settings.admin_port}"
    sys.exit(run_admin(arguments, url=url, out=sys.stdout))


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
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
    _add_auth_commands(commands)
    return parser.parse_args(argv)


def _add_auth_commands(commands: Any) -> None:
    token = commands.add_parser(
        "token",
        help="create, list or revoke the gateway's tokens (in GATEWAY_AUTH_TOKENS_FILE)",
        description="Tokens for Authorization: Bearer. Works on the file directly; a running "
        "gateway follows it within seconds.",
    )
    token_commands = token.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = token_commands.add_parser(
        "create",
        help="make a token; it is printed once, as the last line, and stored only as a hash",
    )
    create.add_argument(
        "--scope",
        action="append",
        required=True,
        choices=[scope.value for scope in Scope],
        help="what it may do (repeatable): read (GET, HEAD), write (PUT), delete, list "
        "(GET /objects), metrics (/metrics, /health/ready), admin (every operational route)",
    )
    create.add_argument(
        "--prefix",
        default="",
        help="only IDs that start with this (and listings of such a prefix)",
    )
    create.add_argument(
        "--expires",
        type=parse_duration,
        default=None,
        metavar="DURATION",
        help="valid for this long (30s, 15m, 1h, 7d, 1h30m); default: until revoked",
    )
    create.add_argument("--note", default="", help="what it is for (shown by token list)")
    token_commands.add_parser("list", help="the tokens: ID, scopes, prefix, expiry (no secret)")
    revoke = token_commands.add_parser(
        "revoke", help="forget a token; the gateway refuses it within seconds"
    )
    revoke.add_argument("token_id", metavar="TOKEN_ID")

    sign = commands.add_parser(
        "sign",
        help="print a URL (path and query) that allows one request on one object for a while",
        description="Signs METHOD on /object/ID until the expiry with the newest signing key "
        "(HMAC-SHA256, Swift TempURL's model); a GET URL serves HEAD too. The first use makes a "
        "signing key. The URL is the last line.",
    )
    sign.add_argument("method", type=str.upper, choices=SIGNABLE_METHODS, metavar="METHOD")
    sign.add_argument("object_id", metavar="ID")
    sign.add_argument(
        "--expires",
        type=parse_duration,
        default=parse_duration("15m"),
        metavar="DURATION",
        help="valid for this long (default: 15m)",
    )

    signing_key = commands.add_parser(
        "signing-key", help="rotate or list the keys signed URLs are signed with"
    )
    key_commands = signing_key.add_subparsers(dest="action", metavar="ACTION", required=True)
    key_commands.add_parser(
        "rotate",
        help="add a key (it signs from now on) and retire the older of the two active ones",
    )
    key_commands.add_parser("list", help="the active keys (IDs and dates) and the retired ones")


def parse_duration(text: str) -> int:
    """Seconds in ``30s``, ``15m``, ``1h30m``, ``7d``, ``2w`` or plain ``90``."""
    text = text.strip().lower()
    if not _DURATION.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration like 30s, 15m, 1h, 7d or 1h30m"
        )
    if text.isdigit():
        seconds = int(text)
    else:
        seconds = sum(
            int(number) * _DURATION_UNITS[unit]
            for number, unit in re.findall(r"([0-9]+)([smhdw])", text)
        )
    if seconds <= 0:
        raise argparse.ArgumentTypeError("a duration must be above zero")
    return seconds


def run_credentials(arguments: argparse.Namespace, credentials: Credentials, *, out: TextIO) -> int:
    """Run one of the token, sign and signing-key commands on the credential store."""

    def say(line: str) -> None:
        out.write(line + "\n")

    try:
        if arguments.command == "token":
            return _token_command(arguments, credentials, say)
        if arguments.command == "sign":
            return _sign(arguments, credentials, say)
        return _signing_key_command(arguments, credentials, say)
    except CredentialsUnreadable as exc:
        say(f"error: {exc.detail}")
    except OSError as exc:
        say(f"error: cannot write the tokens file: {exc.strerror} ({exc.filename})")
    except (InvalidObjectId, ValueError) as exc:
        say(f"error: {exc}")
    return EXIT_USAGE


def _token_command(
    arguments: argparse.Namespace, credentials: Credentials, say: Callable[[str], None]
) -> int:
    if arguments.action == "create":
        if not valid_prefix(arguments.prefix):
            say("error: a prefix is at most 32 ASCII letters and digits")
            return EXIT_USAGE
        issued = credentials.create_token(
            [Scope(scope) for scope in arguments.scope],
            prefix=arguments.prefix,
            expires_in_seconds=arguments.expires,
            note=arguments.note,
        )
        say(f"created {issued.record.describe()}")
        say("the token is shown this once and stored only as a hash; keep it now:")
        say(issued.token)
        return EXIT_OK
    if arguments.action == "list":
        tokens = credentials.tokens()
        if not tokens:
            say("no tokens")
        for record in tokens:
            line = record.describe() + (f" ({record.note})" if record.note else "")
            say(line + f"; created {_utc(record.created_at)}")
        return EXIT_OK
    revoked = credentials.revoke_token(arguments.token_id)
    if revoked is None:
        say(f"no token {arguments.token_id!r}; `object-gateway token list` shows them")
        return EXIT_NOT_DONE
    say(f"revoked {revoked.describe()}; the gateway refuses it within seconds")
    return EXIT_OK


def _sign(
    arguments: argparse.Namespace, credentials: Credentials, say: Callable[[str], None]
) -> int:
    signed, made = credentials.sign(
        arguments.method, ObjectId(arguments.object_id), arguments.expires
    )
    if made is not None:
        say(f"made the first signing key, {made.key_id}")
    say(
        f"{arguments.method} /object/{arguments.object_id} signed with key {signed.key_id}, "
        f"valid until {_utc(signed.expires_at)}"
    )
    say(signed.path_and_query)
    return EXIT_OK


def _signing_key_command(
    arguments: argparse.Namespace, credentials: Credentials, say: Callable[[str], None]
) -> int:
    if arguments.action == "rotate":
        rotation = credentials.rotate_signing_key()
        say(f"added signing key {rotation.added.key_id}: it signs from now on")
        if rotation.retired is None:
            say("no key retired: URLs signed before stay valid until the next rotation")
        else:
            say(
                f"retired signing key {rotation.retired.key_id}: URLs it signed now answer "
                "401 revoked_key"
            )
        return EXIT_OK
    keyring = credentials.keyring()
    if not keyring.signing_keys:
        say("no signing keys yet (`object-gateway sign` or `signing-key rotate` makes one)")
    for key in keyring.signing_keys:
        role = "signs and verifies" if key is keyring.signer else "verifies"
        say(f"signing key {key.key_id}: {role}; created {_utc(key.created_at)}")
    for key_id in keyring.retired_key_ids:
        say(f"signing key {key_id}: retired")
    return EXIT_OK


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


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

    def _on_ring(self, event: Event) -> None:
        if event["settled"]:
            self._console.print(
                f"the fleet is settled (ring {event['fingerprint']}): reads ask replicas only"
            )
        else:
            self._console.print("[red]the fleet could not be marked settled[/red]: run it again")

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
