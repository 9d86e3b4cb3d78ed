"""A stand-in for wollomatic/socket-proxy, for machines that cannot pull its image (CI).

It takes the same flags and applies the same rules (socket-proxy's cmd/socket-proxy/
handlehttprequest.go and internal/config/config.go), so that the allow-lists in docker-compose.yml
and deploy/swarm/docker-stack.yml are tested exactly as they are written:

- a TCP client whose address is not in ``-allowfrom`` (IPs, CIDRs, or host names resolved on each
  connection) gets 403; there is no such check on a unix socket (``-proxysocketendpoint``);
- a method without an ``-allow<METHOD>`` regex gets 405;
- a path (decoded, without the query) that the method's regex, anchored as ``^regex$``, does not
  match gets 403;
- anything else goes to the Docker socket as it came.

Each request is passed on alone, with ``Connection: close``: a kept-alive connection cannot carry
a second request past the check. Flags it does not know stop it, as they stop socket-proxy.
It is a test double at the Docker API level; use the real image wherever it can be pulled.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import re
import socket
import stat
import sys
from dataclasses import dataclass, field
from urllib.parse import unquote

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "TRACE", "OPTIONS")
# Flags socket-proxy has that change nothing here.
IGNORED = {"logjson", "shutdowngracetime", "watchdoginterval", "stoponwatchdog", "allowhealthcheck"}
MAX_HEAD_BYTES = 64 * 1024
HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-connection", b"upgrade"}

logger = logging.getLogger("socket-proxy")


@dataclass
class Config:
    listen_ip: str = "127.0.0.1"
    port: int = 2375
    allow_from: list[str] = field(default_factory=lambda: ["127.0.0.1/32"])
    socket_path: str = "/var/run/docker.sock"
    endpoint: str = ""
    endpoint_mode: int = 0o600
    allowed: dict[str, re.Pattern[str]] = field(default_factory=dict)


def parse(arguments: list[str]) -> Config:
    config = Config()
    for argument in arguments:
        name, _, value = argument.lstrip("-").partition("=")
        lowered = name.lower()
        if lowered.startswith("allow") and lowered[5:].upper() in METHODS:
            # socket-proxy compiles "^" + regex + "$" with Go's regexp, whose $ is the very end.
            config.allowed[lowered[5:].upper()] = re.compile("^" + value + r"\Z")
        elif lowered == "allowfrom":
            config.allow_from = value.split(",")
        elif lowered == "listenip":
            config.listen_ip = value
        elif lowered == "proxyport":
            config.port = int(value)
        elif lowered == "socketpath":
            config.socket_path = value
        elif lowered == "proxysocketendpoint":
            config.endpoint = value
        elif lowered == "proxysocketendpointfilemode":
            config.endpoint_mode = int(value, 8)
        elif lowered == "loglevel":
            logging.getLogger().setLevel(value.upper())
        elif lowered not in IGNORED:
            raise SystemExit(f"flag provided but not defined: -{name}")
    return config


async def client_allowed(config: Config, peer: str) -> bool:
    address = ipaddress.ip_address(peer)
    loop = asyncio.get_running_loop()
    for entry in config.allow_from:
        try:
            return address in ipaddress.ip_network(entry, strict=False)
        except ValueError:
            pass  # a host name: resolved now, as socket-proxy does (no cache)
        try:
            infos = await loop.getaddrinfo(entry, None)
        except OSError:
            logger.warning("cannot resolve allowed client %s", entry)
            continue
        if any(ipaddress.ip_address(info[4][0]) == address for info in infos):
            return True
    return False


def field_name(line: bytes) -> bytes:
    return line.partition(b":")[0].strip().lower()


def refusal(status: int, reason: str) -> bytes:
    body = reason.encode() + b"\n"
    return (
        b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"X-Content-Type-Options: nosniff\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
        % (status, reason.encode(), len(body), body)
    )


async def handle(
    config: Config, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        await serve(config, reader, writer)
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
        logger.info("connection ended: %r", exc)
    finally:
        writer.close()


async def serve(config: Config, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    request_line, *header_lines = head[:-4].split(b"\r\n")
    method, target, version = request_line.decode("latin-1").split(" ")
    path = unquote(target.partition("?")[0])
    peer = writer.get_extra_info("peername")
    if not config.endpoint and not await client_allowed(config, peer[0]):
        logger.warning("blocked request: forbidden IP %s %s from %s", method, target, peer)
        writer.write(refusal(403, "Forbidden"))
        return
    allowed = config.allowed.get(method)
    if allowed is None:
        logger.warning("blocked request: method not allowed %s %s", method, target)
        writer.write(refusal(405, "Method Not Allowed"))
        return
    if not allowed.search(path):
        logger.warning("blocked request: path not allowed %s %s", method, target)
        writer.write(refusal(403, "Forbidden"))
        return
    headers = [line for line in header_lines if field_name(line) not in HOP_BY_HOP]
    if any(field_name(line) == b"transfer-encoding" for line in headers):
        writer.write(refusal(501, "Not Implemented"))
        return
    length = next(
        (int(line.partition(b":")[2]) for line in headers if field_name(line) == b"content-length"),
        0,
    )
    body = await reader.readexactly(length) if length else b""
    daemon_reader, daemon_writer = await asyncio.open_unix_connection(config.socket_path)
    try:
        daemon_writer.write(
            b"\r\n".join([f"{method} {target} {version}".encode("latin-1"), *headers,
                          b"Connection: close"]) + b"\r\n\r\n" + body
        )  # fmt: skip
        # The answer goes back as it comes (an events stream for as long as it lasts); a client
        # that closes, or sends anything more, ends it.
        relay = asyncio.ensure_future(pipe(daemon_reader, writer))
        watch = asyncio.ensure_future(reader.read(1))
        await asyncio.wait({relay, watch}, return_when=asyncio.FIRST_COMPLETED)
        for task in (relay, watch):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await task
    finally:
        daemon_writer.close()


async def pipe(source: asyncio.StreamReader, target: asyncio.StreamWriter) -> None:
    while data := await source.read(65536):
        target.write(data)
        await target.drain()


async def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    config = parse(sys.argv[1:])
    for method, regex in sorted(config.allowed.items()):
        logger.info("allowed: %-7s %s", method, regex.pattern)

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await handle(config, reader, writer)

    if config.endpoint:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(config.endpoint)
        server = await asyncio.start_unix_server(
            on_connection, path=config.endpoint, limit=MAX_HEAD_BYTES
        )
        os.chmod(config.endpoint, stat.S_IFSOCK | config.endpoint_mode)
        logger.info("listening on %s", config.endpoint)
    else:
        server = await asyncio.start_server(
            on_connection, config.listen_ip, config.port, limit=MAX_HEAD_BYTES,
            family=socket.AF_INET6 if ":" in config.listen_ip else socket.AF_INET,
        )  # fmt: skip
        logger.info("listening on %s:%d", config.listen_ip, config.port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
