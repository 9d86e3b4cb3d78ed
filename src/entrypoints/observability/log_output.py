"""Log lines as JSON, written in batches."""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
import weakref
from typing import TextIO

import msgspec

from domain.sizes import KiB

__all__ = ["BatchedLineHandler", "JsonLogFormatter"]

# The size up to which POSIX keeps a write to a pipe in one piece.
_PIPE_BUF = 4096

# Fields a log record may carry in ``extra`` that belong in the JSON line.
_LOG_FIELDS = (
    "request_id",
    "method",
    "path",
    "object_id",
    "node",
    "status",
    "bytes_in",
    "bytes_out",
    "duration_ms",
    "fallback",
    "replicas",
    "trace_id",
    "auth",
)


@functools.lru_cache(maxsize=4)
def _local_time(second: int) -> str:
    # Formatted once a second, not once a line.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(second))


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line; request fields passed in ``extra`` become keys."""

    # msgspec (Litestar's own encoder) is several times faster than json.dumps, and every request
    # writes a line; values it does not know are written as their str().
    _encoder = msgspec.json.Encoder(enc_hook=str)

    def __init__(self, *, with_process: bool = False) -> None:
        super().__init__()
        # With several worker processes: which one wrote the line.
        self._with_process = with_process

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": _local_time(int(record.created)),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self._with_process:
            entry["process"] = os.getpid()  # log_cheaply() keeps logging from recording it
        for field in _LOG_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                entry[field] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return self._encoder.encode(entry).decode()


class BatchedLineHandler(logging.StreamHandler[TextIO]):
    """A stream handler that writes its lines in batches, at most ``flush_seconds`` after the first.

    The access log has a line per request, and a write per line is a system call per request.
    A warning or worse, a batch of ``max_batch_bytes``, and closing (``logging.shutdown`` at exit)
    write at once; a process killed outright loses at most ``flush_seconds`` of lines.
    """

    def __init__(
        self,
        stream: TextIO,
        flush_seconds: float,
        max_batch_bytes: int = 64 * KiB,
        *,
        whole_lines_per_write: bool = False,
    ) -> None:
        super().__init__(stream)
        self._flush_seconds = flush_seconds
        self._max_batch_bytes = max_batch_bytes
        # Several processes writing to one pipe: a write up to PIPE_BUF bytes is never mixed with
        # another's, so each write is whole lines within it, and lines never interleave.
        self._whole_lines_per_write = whole_lines_per_write
        self._lines: list[str] = []
        self._batch_bytes = 0
        self._stopped = threading.Event()
        self._flusher: threading.Thread | None = None
        # A worker forked from the supervisor starts with no lines of the supervisor's (they are
        # the supervisor's to write) and no flusher (threads do not survive a fork).
        handler = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _forked(handler()))

    def after_fork_in_child(self) -> None:
        self._lines, self._batch_bytes = [], 0
        self._stopped = threading.Event()
        self._flusher = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except Exception:  # logging's contract: a handler reports its failures, never raises
            self.handleError(record)
            return
        # emit() runs under the handler's lock (Handler.handle takes it).
        self._lines.append(line)
        self._batch_bytes += len(line)
        if record.levelno >= logging.WARNING or self._batch_bytes >= self._max_batch_bytes:
            self._write_batch()
        elif self._flusher is None:
            self._flusher = threading.Thread(
                target=self._flush_periodically, name="log-flusher", daemon=True
            )
            self._flusher.start()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]  # created by Handler.__init__
            self._write_batch()

    def close(self) -> None:
        self._stopped.set()
        self.flush()
        super().close()

    def _write_batch(self) -> None:
        lines, self._lines, self._batch_bytes = self._lines, [], 0
        try:
            if lines and self._whole_lines_per_write:
                for piece in _pieces(lines, _PIPE_BUF):
                    self.stream.write(piece)
                    self.stream.flush()
            elif lines:
                self.stream.write("".join(lines))
            self.stream.flush()
        except (OSError, ValueError):
            # The stream is gone (closed, or a broken pipe): there is nowhere left to write to,
            # and a request must not fail for its log line.
            pass

    def _flush_periodically(self) -> None:
        while not self._stopped.wait(self._flush_seconds):
            self.flush()


def _forked(handler: BatchedLineHandler | None) -> None:
    if handler is not None:
        handler.after_fork_in_child()


def _pieces(lines: list[str], limit: int) -> list[str]:
    """``lines`` joined into pieces of whole lines, each at most ``limit`` bytes (or one line)."""
    pieces: list[str] = []
    current: list[str] = []
    size = 0
    for line in lines:
        length = len(line.encode())
        if current and size + length > limit:
            pieces.append("".join(current))
            current, size = [], 0
        current.append(line)
        size += length
    if current:
        pieces.append("".join(current))
    return pieces
