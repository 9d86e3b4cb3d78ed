"""Log lines go out in batches, in order, none lost at close; a warning goes out at once."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator

import pytest

from entrypoints.observability.log_output import BatchedLineHandler


@pytest.fixture
def stream() -> io.StringIO:
    return io.StringIO()


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    log = logging.getLogger(f"test.batching.{time.monotonic_ns()}")
    log.propagate = False
    log.setLevel(logging.INFO)
    yield log
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()


def attach(logger: logging.Logger, handler: logging.Handler) -> None:
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)


def test_lines_are_held_then_written_within_the_flush_interval(
    logger: logging.Logger, stream: io.StringIO
) -> None:
    attach(logger, BatchedLineHandler(stream, flush_seconds=0.05))

    logger.info("one")
    logger.info("two")
    assert stream.getvalue() == ""

    deadline = time.monotonic() + 5
    while not stream.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stream.getvalue() == "one\ntwo\n"


def test_a_warning_writes_the_batch_at_once_in_order(
    logger: logging.Logger, stream: io.StringIO
) -> None:
    attach(logger, BatchedLineHandler(stream, flush_seconds=60))

    logger.info("request")
    logger.warning("trouble")

    assert stream.getvalue() == "request\ntrouble\n"


def test_a_full_batch_is_written_at_once(logger: logging.Logger, stream: io.StringIO) -> None:
    attach(logger, BatchedLineHandler(stream, flush_seconds=60, max_batch_bytes=10))

    logger.info("12345")
    assert stream.getvalue() == ""
    logger.info("67890")

    assert stream.getvalue() == "12345\n67890\n"


def test_closing_writes_what_is_held(logger: logging.Logger, stream: io.StringIO) -> None:
    handler = BatchedLineHandler(stream, flush_seconds=60)
    attach(logger, handler)

    logger.info("last words")
    handler.close()

    assert stream.getvalue() == "last words\n"


def test_a_closed_stream_does_not_fail_the_caller(logger: logging.Logger) -> None:
    broken = io.StringIO()
    attach(logger, BatchedLineHandler(broken, flush_seconds=60))
    broken.close()

    logger.info("nowhere to go")
    logger.error("still nowhere")
