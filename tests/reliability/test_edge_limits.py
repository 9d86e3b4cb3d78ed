"""Header and connection abuse: heads too large or too slow, idle and excess connections."""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.integration.support import GatewayServer
from tests.reliability.conftest import open_files_limit, rss_mib

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def edge(nodes: object, run_marker: str) -> Iterator[GatewayServer]:
    with GatewayServer.for_marker(
        run_marker,
        request_head_timeout_seconds=2,
        keep_alive_timeout_seconds=1,
        max_connections=40,
    ) as server:
        yield server


def connect(server: GatewayServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def read_answer(sock: socket.socket, within: float) -> bytes:
    """Everything the gateway sends until it closes the connection (or ``within`` seconds)."""
    received = b""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        ready, _, _ = select.select([sock], [], [], 0.05)
        if ready:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            received += data
    return received


def test_a_16_mib_request_head_is_431_without_buffering_it(
    edge: GatewayServer, figures: dict[str, str]
) -> None:
    before = rss_mib()
    answer = b""
    with connect(edge) as sock:
        sock.sendall(b"GET /object/abc HTTP/1.1\r\nHost: gateway\r\nX-Padding: ")
        piece = b"a" * (64 * 1024)
        for _ in range(16 * MiB // len(piece)):
            try:
                sock.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                break
            answer += read_answer(sock, 0)
            if answer:
                break
        answer += read_answer(sock, 2)
    growth = rss_mib() - before
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b'"request_head_too_large"' in answer
    assert growth < 30, f"RSS grew {growth:.1f} MiB"
    figures["16 MiB request head"] = f"431, RSS growth {growth:.1f} MiB"
    with httpx.Client(base_url=edge.base_url) as http:
        assert http.get("/health/live").status_code == 200


def test_a_trickled_request_head_is_cut_off_within_the_head_timeout(
    edge: GatewayServer, figures: dict[str, str]
) -> None:
    started = time.monotonic()
    answer = b""
    with connect(edge) as sock:
        sock.sendall(b"GET /object/abc HTTP/1.1\r\n")
        for i in range(20):  # a header line every 0.3 s: never a complete head
            with contextlib.suppress(OSError):
                sock.sendall(b"X-Slow-%d: 1\r\n" % i)
            answer += read_answer(sock, 0.3)
            if answer:
                break
        answer += read_answer(sock, 2)
    elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert 1.8 <= elapsed <= 3.0, f"cut off after {elapsed:.2f} s (limit 2 s)"
    figures["trickled request head (limit 2 s)"] = f"408 after {elapsed:.2f} s"


def test_a_connection_that_never_sends_is_closed_within_the_head_timeout(
    edge: GatewayServer,
) -> None:
    started = time.monotonic()
    with connect(edge) as sock:
        answer = read_answer(sock, 5)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert time.monotonic() - started < 3.0


def test_an_idle_kept_alive_connection_is_closed_after_the_keep_alive_timeout(
    edge: GatewayServer,
) -> None:
    with connect(edge) as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: gateway\r\n\r\n")
        started = time.monotonic()
        answer = read_answer(sock, 5)
        closed_after = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert closed_after < 2.5, f"closed after {closed_after:.2f} s (keep-alive timeout 1 s)"


def test_connections_beyond_the_cap_get_503_and_the_cap_frees_up_again(
    edge: GatewayServer, figures: dict[str, str]
) -> None:
    held = [connect(edge) for _ in range(40)]
    try:
        time.sleep(0.2)
        with connect(edge) as extra:
            extra.sendall(b"GET /health/live HTTP/1.1\r\nHost: gateway\r\n\r\n")
            answer = read_answer(extra, 3)
        assert answer.startswith(b"HTTP/1.1 503 "), answer[:200]
        assert b'"too_many_connections"' in answer
        assert b"retry-after" in answer.lower()
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.2)
    with httpx.Client(base_url=edge.base_url) as http:
        assert http.get("/health/live").status_code == 200
    assert open_files_limit() >= 2 * 40
    figures["connection cap (40)"] = "the 41st answered 503 too_many_connections"


def head_with(headers: list[bytes]) -> bytes:
    return b"GET /object/abc HTTP/1.1\r\nHost: gateway\r\n" + b"".join(headers) + b"\r\n"


def send_in_pieces(sock: socket.socket, data: bytes, pieces: int) -> bytes:
    """``data`` in ``pieces`` writes a little apart (so they arrive as separate reads)."""
    step = -(-len(data) // pieces)
    answer = b""
    for start in range(0, len(data), step):
        with contextlib.suppress(OSError):
            sock.sendall(data[start : start + step])
        answer += read_answer(sock, 0.1)
    return answer + read_answer(sock, 2)


@pytest.mark.parametrize("pieces", [1, 2, 7], ids=["one-write", "two-writes", "seven-writes"])
@pytest.mark.parametrize(
    "headers",
    [
        [b"X-Padding: " + b"a" * 100_000 + b"\r\n"],
        [b"X-Padding-%d: %s\r\n" % (i, b"b" * 1000) for i in range(40)],
    ],
    ids=["one-100kb-header", "forty-1kb-headers"],
)
def test_every_head_over_the_limit_is_431_however_it_is_split_across_reads(
    edge: GatewayServer, headers: list[bytes], pieces: int, figures: dict[str, str]
) -> None:
    with connect(edge) as sock:
        answer = send_in_pieces(sock, head_with(headers), pieces)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b'"request_head_too_large"' in answer
    figures["head over the limit (32 KiB), 100 KB or 40 x 1 KB, in 1, 2 or 7 reads"] = "431 each"


def test_a_head_just_under_the_limit_is_served_in_one_or_several_reads(
    edge: GatewayServer,
) -> None:
    # 31 headers of 1 KB and the request line: under 32 KiB, so an ordinary answer.
    data = head_with([b"X-Padding-%d: %s\r\n" % (i, b"c" * 1000) for i in range(31)])
    assert len(data) < 32 * 1024
    for pieces in (1, 3):
        with connect(edge) as sock:
            answer = send_in_pieces(sock, data, pieces)
        assert answer.startswith((b"HTTP/1.1 404 ", b"HTTP/1.1 200 ")), answer[:200]


def test_a_second_request_on_a_kept_alive_connection_is_held_to_the_limit_too(
    edge: GatewayServer,
) -> None:
    with connect(edge) as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: gateway\r\n\r\n")
        first = b""
        while b"alive" not in first:
            first += sock.recv(65536)
        answer = send_in_pieces(sock, head_with([b"X-Big: " + b"d" * 40_000 + b"\r\n"]), 2)
    assert first.startswith(b"HTTP/1.1 200 ")
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]


def test_a_malformed_request_gets_a_json_400(edge: GatewayServer) -> None:
    with connect(edge) as sock:
        sock.sendall(b"GET /object/abc HTTP/1.1\r\nHost gateway\r\n\r\n")
        answer = read_answer(sock, 2)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert b"application/json" in answer
    assert b'"invalid_request"' in answer


def test_a_websocket_upgrade_is_served_as_plain_http_never_a_500(
    edge: GatewayServer, caplog: pytest.LogCaptureFixture
) -> None:
    upgrade = (
        b"GET /object/neverstoredws HTTP/1.1\r\nHost: gateway\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    with caplog.at_level(logging.WARNING), connect(edge) as sock:
        sock.sendall(upgrade)
        answer = read_answer(sock, 2)
    # The gateway has no WebSocket routes: the Upgrade header is ignored (RFC 9110 7.8 allows it).
    assert answer.startswith(b"HTTP/1.1 404 "), answer[:300]
    assert b'"object_not_found"' in answer
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
