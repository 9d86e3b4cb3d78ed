"""Header and connection abuse: heads too large or too slow, idle and excess connections."""

from __future__ import annotations

import contextlib
import logging
import os
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
        # Uploads and downloads slower than 2,000 bytes/s on average are cut after 1 s.
        min_data_rate_bytes_per_second=2000,
        min_data_rate_grace_seconds=1,
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


def exchange(server: GatewayServer, request: bytes, within: float = 3) -> bytes:
    with connect(server) as sock:
        sock.sendall(request)
        return read_answer(sock, within)


def first_response(answer: bytes) -> bytes:
    return answer.partition(b"\r\n")[0]


@pytest.mark.parametrize(
    "head",
    [
        b"GET /health/live HTTP/1.1\r\n\r\n",
        b"GET /health/live HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET /health/live HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n",
        b"GET /health/live HTTP/1.1\r\nHost: gate way\r\n\r\n",
    ],
    ids=["http-1.1-without-host", "two-hosts", "two-hosts-http-1.0", "host-with-a-space"],
)
def test_a_request_without_exactly_one_valid_host_is_400_as_rfc_9112_requires(
    edge: GatewayServer, head: bytes
) -> None:
    answer = exchange(edge, head)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:300]
    assert b"application/json" in answer
    assert b'"invalid_request"' in answer
    assert b"Host" in answer


def test_an_http_1_0_request_without_host_is_served(edge: GatewayServer) -> None:
    answer = exchange(edge, b"GET /health/live HTTP/1.0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]


def test_a_range_of_thousands_of_digits_is_answered_never_a_500(edge: GatewayServer) -> None:
    with httpx.Client(base_url=edge.base_url) as http:
        assert http.put("/object/hugerange", content=b"0123456789").status_code in (200, 201)
    digits = b"9" * 5000
    for range_value, status in ((b"0-" + digits, b"206"), (digits + b"-", b"416")):
        answer = exchange(
            edge,
            b"GET /object/hugerange HTTP/1.1\r\nHost: gateway\r\nRange: bytes=%s\r\n\r\n"
            % range_value,
        )
        assert answer.startswith(b"HTTP/1.1 %s " % status), answer[:300]


def send_chunks(server: GatewayServer, head: bytes, pieces: list[bytes]) -> bytes:
    """The head, then each piece in a write of its own, a little apart (separate reads)."""
    answer = b""
    with connect(server) as sock:
        sock.sendall(head)
        for piece in pieces:
            time.sleep(0.02)
            try:
                sock.sendall(piece)
            except OSError:
                break
            answer += read_answer(sock, 0)
            if answer:
                break
        return answer + read_answer(sock, 3)


def test_chunk_extensions_beyond_the_bound_are_400_and_store_nothing(
    edge: GatewayServer, figures: dict[str, str]
) -> None:
    with httpx.Client(base_url=edge.base_url) as http:
        assert http.put("/object/chunkext", content=b"before").status_code in (200, 201)
        # One chunk-size line with 64 KiB of extension, arriving over several reads: no data at
        # all, yet every byte is read and parsed.
        extension = b";name=" + b"v" * (64 * 1024)
        pieces = [b"5", *(extension[i : i + 4096] for i in range(0, len(extension), 4096))]
        answer = send_chunks(
            edge,
            b"PUT /object/chunkext HTTP/1.1\r\nHost: gateway\r\nTransfer-Encoding: chunked\r\n\r\n",
            [*pieces, b"\r\nhello\r\n0\r\n\r\n"],
        )
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:300]
        assert b'"invalid_request"' in answer
        assert b"extension" in answer
        assert http.get("/object/chunkext").content == b"before"
    figures["chunk extensions (bound 16 KiB): 64 KiB on one chunk"] = "400, nothing stored"


def test_small_chunks_with_short_extensions_are_stored(edge: GatewayServer) -> None:
    # 3,000 one-byte chunks, each with a short extension: framing well under 16 bytes a chunk.
    body = bytes(ord("a") + i % 26 for i in range(3000))
    chunks = b"".join(b"1;x=y\r\n%s\r\n" % body[i : i + 1] for i in range(len(body)))
    answer = exchange(
        edge,
        b"PUT /object/tinychunks HTTP/1.1\r\nHost: gateway\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n" + chunks + b"0\r\n\r\n",
    )
    assert first_response(answer) in (b"HTTP/1.1 201 Created", b"HTTP/1.1 200 OK"), answer[:300]
    with httpx.Client(base_url=edge.base_url) as http:
        assert http.get("/object/tinychunks").content == body


def test_an_upload_trickling_below_the_minimum_rate_is_cut_off_after_the_grace(
    edge: GatewayServer, figures: dict[str, str]
) -> None:
    with httpx.Client(base_url=edge.base_url) as http:
        assert http.put("/object/trickled", content=b"before").status_code in (200, 201)
    started = time.monotonic()
    answer = b""
    with connect(edge) as sock:
        sock.sendall(
            b"PUT /object/trickled HTTP/1.1\r\nHost: gateway\r\nContent-Length: 100000\r\n\r\n"
        )
        for _ in range(40):  # 10 bytes every 0.25 s: 40 bytes/s, far under 2,000 (10 s at most)
            with contextlib.suppress(OSError):
                sock.sendall(b"x" * 10)
            answer += read_answer(sock, 0.25)
            if answer:
                break
        answer += read_answer(sock, 2)
    elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:300]
    assert b'"body_too_slow"' in answer
    assert elapsed < 4, f"cut off after {elapsed:.2f} s (grace 1 s)"
    with httpx.Client(base_url=edge.base_url) as http:
        assert http.get("/object/trickled").content == b"before"
    figures["upload at 40 bytes/s (minimum 2,000 after 1 s)"] = f"408 after {elapsed:.2f} s"


def test_a_download_read_below_the_minimum_rate_is_cut_off_after_the_grace(
    nodes: object, run_marker: str, figures: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    # 1 MiB/s: the kernel's buffers take a few MiB at once, and each byte handed over counts.
    with GatewayServer.for_marker(
        run_marker, min_data_rate_bytes_per_second=MiB, min_data_rate_grace_seconds=1
    ) as server:
        data = os.urandom(16 * MiB)
        with httpx.Client(base_url=server.base_url, timeout=60) as http:
            assert http.put("/object/slowread", content=data).status_code in (200, 201)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(5)
        received = 0
        closed = False
        with sock:
            sock.connect(("127.0.0.1", server.port))
            sock.sendall(b"GET /object/slowread HTTP/1.1\r\nHost: gateway\r\n\r\n")
            started = time.monotonic()
            while time.monotonic() - started < 15:  # 1 KiB every 0.1 s: about 10 KiB/s
                try:
                    piece = sock.recv(1024)
                except (ConnectionResetError, TimeoutError):
                    closed = True
                    break
                if not piece:
                    closed = True
                    break
                received += len(piece)
                time.sleep(0.1)
            elapsed = time.monotonic() - started
    assert closed, f"still open after {elapsed:.1f} s with {received} bytes read"
    assert received < len(data)
    # Reset by the gateway, which gave up on the client: not an incomplete response to log as
    # an error.
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    figures["download read at 10 KiB/s (minimum 1 MiB/s after 1 s)"] = (
        f"cut after {elapsed:.1f} s, {received // 1024} KiB read"
    )
