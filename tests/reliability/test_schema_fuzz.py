"""schemathesis against the gateway's own OpenAPI schema: no 5xx, and every answer as documented.

The operations run one after another inside one test (schemathesis's pytest integration does not
support this pytest version), each with a bounded number of generated examples. A second fuzz
sends raw requests of the shapes a schema cannot express (Host fields, chunk extensions) to the
edge itself.
"""

from __future__ import annotations

import contextlib
import socket
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import Case
from schemathesis.openapi import from_url

from tests.integration.support import GatewayServer

EXAMPLES_PER_OPERATION = 40


def test_the_api_answers_every_generated_request_as_its_schema_says(
    gateway: GatewayServer, figures: dict[str, str]
) -> None:
    schema = from_url(f"{gateway.base_url}/schema/openapi.json")
    checked = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def answers_as_documented(case: Case) -> None:
            case.call_and_validate()

        answers_as_documented()
        checked.append(operation.label)
    assert {
        "GET /object/{object_id}",
        "PUT /object/{object_id}",
        "DELETE /object/{object_id}",
    } <= set(checked)
    figures["schemathesis"] = (
        f"{len(checked)} operations, up to {EXAMPLES_PER_OPERATION} examples each, no failure"
    )


EDGE_EXAMPLES = 60
DIGITS = st.text(alphabet="0123456789", min_size=1, max_size=6000)
HOSTS = st.sampled_from([b"gateway", b"127.0.0.1:3000", b"[::1]", b"", b"gate way", b"a/b"])


@st.composite
def edge_requests(draw: st.DrawFn) -> bytes:
    """Requests of the shapes the edge must bound: Host fields, long Range positions, dates too
    large for a clock, and chunked bodies with extensions of any length."""
    method = draw(st.sampled_from([b"GET", b"HEAD", b"PUT"]))
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"]))
    lines = [b"%s /object/edgefuzz%d %s" % (method, draw(st.integers(0, 3)), version)]
    lines += [b"Host: " + draw(HOSTS) for _ in range(draw(st.sampled_from([1, 1, 1, 0, 2])))]
    if draw(st.booleans()):
        first = draw(st.one_of(st.just(""), DIGITS))
        last = draw(st.one_of(st.just(""), DIGITS))
        lines.append(b"Range: bytes=%s-%s" % (first.encode(), last.encode()))
    if draw(st.booleans()):
        year = draw(DIGITS)
        header = draw(st.sampled_from([b"If-Modified-Since", b"If-Unmodified-Since"]))
        lines.append(header + b": Sun, 06 Nov %s 08:49:37 GMT" % year.encode())
    lines.append(b"Connection: close")
    body = b""
    if method == b"PUT":
        lines.append(b"Transfer-Encoding: chunked")
        for size, extension in draw(
            st.lists(st.tuples(st.integers(1, 64), st.integers(0, 40_000)), max_size=4)
        ):
            body += b"%x;e=%s\r\n%s\r\n" % (size, b"x" * extension, b"d" * size)
        body += b"0\r\n\r\n"
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def answer_to(gateway: GatewayServer, request: bytes) -> bytes:
    answer = b""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(request)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not data:
                break
            answer += data
    return answer


def test_the_edge_answers_every_generated_abuse_with_a_4xx_or_the_object_never_a_500(
    gateway: GatewayServer, figures: dict[str, str]
) -> None:
    statuses: set[int] = set()

    @given(request=edge_requests())
    @settings(
        max_examples=EDGE_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def answered(request: bytes) -> None:
        answer = answer_to(gateway, request)
        head, _, body = answer.partition(b"\r\n\r\n")
        status_line = head.partition(b"\r\n")[0]
        assert status_line.startswith(b"HTTP/1.1 "), (request[:300], answer[:300])
        status = int(status_line.split()[1])
        statuses.add(status)
        assert status < 500, (request[:300], answer[:500])
        lowered = head.lower()
        if status >= 400 and not request.startswith(b"HEAD"):
            assert b"content-type: application/json" in lowered, answer[:500]
            assert b'"error"' in body, answer[:500]
        if status in (200, 206) and request.startswith((b"GET", b"HEAD")):
            assert b"x-content-type-options: nosniff" in lowered, answer[:500]

    answered()
    figures["edge fuzz (Host, Range digits, dates, chunk extensions)"] = (
        f"{EDGE_EXAMPLES} requests, statuses {sorted(statuses)}, no 5xx"
    )
