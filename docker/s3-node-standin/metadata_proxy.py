"""Keeps the stand-in's object metadata on disk, as MinIO (and S3) do.

rclone's S3 server keeps an object's user metadata (``x-amz-meta-*``) and Content-Type in memory
only: a restart of the node forgets them, where MinIO keeps them with the object. The gateway
serves objects with the Content-Type they were written with (and objects of its older layout
carry their version in their metadata), so this proxy, in front of rclone in the stand-in's
container, writes them beside the data (``/data/.standin-meta``) when a write (or a copy within
the node) succeeds, with the ETag the write produced, and gives them back on HEAD and GET of a key
not written since the node started (rclone has forgotten them) when the object is still that
write. Requests and bodies pass through unchanged
(rclone checks the signatures), and nothing is held across requests: writes racing on one key
commit in whatever order rclone gives them, as before; conditional writes are still ignored, as
rclone ignores them.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import ssl
import sys
from pathlib import Path
from urllib.parse import unquote

import aiohttp
from aiohttp import web
from yarl import URL

UPSTREAM = os.environ.get("STANDIN_UPSTREAM", "http://127.0.0.1:9001")
STORE = Path(os.environ.get("STANDIN_METADATA_DIR", "/data/.standin-meta"))
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}
UPLOAD_ID = re.compile(rb"<UploadId>([^<]+)</UploadId>")
COMPLETED_ETAG = re.compile(rb"<ETag>([^<]+)</ETag>")

# TLS as MinIO offers it: a certificate and key in its certs directory (or named here) make the
# node serve HTTPS on its port.
TLS_CERT = Path(os.environ.get("STANDIN_TLS_CERT", "/root/.minio/certs/public.crt"))
TLS_KEY = Path(os.environ.get("STANDIN_TLS_KEY", "/root/.minio/certs/private.key"))

uploads: dict[str, dict[str, str]] = {}
# Keys written since this node started: rclone still has their metadata in memory.
written_since_start: set[tuple[str, str]] = set()


def sidecar(bucket: str, key: str) -> Path:
    name = base64.urlsafe_b64encode(key.encode()).decode()
    return STORE / bucket / f"{name}.json"


def metadata_of(headers: web.BaseRequest | aiohttp.ClientResponse) -> dict[str, str]:
    kept = {
        name.lower(): value
        for name, value in headers.headers.items()
        if name.lower().startswith("x-amz-meta-")
    }
    if "Content-Type" in headers.headers:
        kept["content-type"] = headers.headers["Content-Type"]
    return kept


def save(bucket: str, key: str, metadata: dict[str, str]) -> None:
    written_since_start.add((bucket, key))
    path = sidecar(bucket, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(metadata))
    temporary.replace(path)


def load(bucket: str, key: str) -> dict[str, str] | None:
    try:
        return dict(json.loads(sidecar(bucket, key).read_text()))
    except (OSError, ValueError):
        return None


def etag(value: str | bytes | None) -> str:
    text = value.decode() if isinstance(value, bytes) else value or ""
    # An ETag in an XML answer is quoted with entities (&quot; or &#34;).
    return html.unescape(text).strip().strip('"')


async def handle(request: web.Request) -> web.StreamResponse:
    path = request.raw_path.partition("?")[0]
    bucket, _, raw_key = path.lstrip("/").partition("/")
    key = unquote(raw_key) if raw_key else None
    method = request.method
    headers = [
        (name, value) for name, value in request.headers.items() if name.lower() not in HOP_BY_HOP
    ]
    data = request.content.iter_chunked(256 * 1024) if request.body_exists else None
    session: aiohttp.ClientSession = request.app["session"]
    async with session.request(
        method,
        URL(UPSTREAM + request.raw_path, encoded=True),
        headers=headers,
        data=data,
        allow_redirects=False,
    ) as upstream:
        ok = 200 <= upstream.status < 300
        body = await remember(request, upstream, bucket, key) if key is not None and ok else None
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for name, value in upstream.headers.items():
            if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                response.headers.add(name, value)
        if (
            key is not None
            and ok
            and method in ("GET", "HEAD")
            and (bucket, key) not in written_since_start
        ):
            # rclone forgot them (a restart): what was written with the object, if it is still
            # that write.
            kept = load(bucket, key) or {}
            if kept.pop("etag", None) == etag(upstream.headers.get("ETag")):
                for name, value in kept.items():
                    response.headers[name] = value
        length = upstream.headers.get("Content-Length")
        if length is not None:
            response.content_length = int(length)
        await response.prepare(request)
        if method != "HEAD":
            if body is not None:
                await response.write(body)
            else:
                async for chunk in upstream.content.iter_chunked(256 * 1024):
                    await response.write(chunk)
        await response.write_eof()
        return response


async def remember(
    request: web.Request, upstream: aiohttp.ClientResponse, bucket: str, key: str
) -> bytes | None:
    """Keep (or drop) what a successful write leaves; the answer's body if it had to be read."""
    method, params = request.method, set(request.query)
    source = request.headers.get("x-amz-copy-source")
    if method == "PUT" and source is not None and "partNumber" not in params:
        # A copy within the node: the copy keeps what its source was written with.
        body = await upstream.read()
        done = COMPLETED_ETAG.search(body)
        source_bucket, _, source_key = unquote(source).lstrip("/").partition("/")
        kept = load(source_bucket, source_key) or {}
        kept.pop("etag", None)
        if done is not None and b"<Error>" not in body:
            save(bucket, key, {"etag": etag(done.group(1)), **kept})
        return body
    if method == "PUT" and "partNumber" not in params and "uploadId" not in params:
        written = {"etag": etag(upstream.headers.get("ETag")), **metadata_of(request)}
        save(bucket, key, written)
    elif method == "DELETE" and "uploadId" not in params:
        sidecar(bucket, key).unlink(missing_ok=True)
    elif method == "POST" and "uploads" in params:
        body = await upstream.read()
        match = UPLOAD_ID.search(body)
        if match:
            uploads[match.group(1).decode()] = metadata_of(request)
        return body
    elif method == "POST" and "uploadId" in params:
        body = await upstream.read()
        started = uploads.pop(request.query["uploadId"], None)
        done = COMPLETED_ETAG.search(body)
        if started is not None and done is not None and b"<Error>" not in body:
            save(bucket, key, {"etag": etag(done.group(1)), **started})
        return body
    return None


async def start_session(app: web.Application) -> None:
    app["session"] = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        timeout=aiohttp.ClientTimeout(total=None),
    )


async def stop_session(app: web.Application) -> None:
    await app["session"].close()


def tls_context() -> ssl.SSLContext | None:
    if not (TLS_CERT.is_file() and TLS_KEY.is_file()):
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(TLS_CERT, TLS_KEY)
    return context


def main() -> None:
    app = web.Application(client_max_size=0)
    app.router.add_route("*", "/{tail:.*}", handle)
    app.on_startup.append(start_session)
    app.on_cleanup.append(stop_session)
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9000
    web.run_app(
        app,
        host="0.0.0.0",  # noqa: S104
        port=port,
        ssl_context=tls_context(),
        print=None,
        access_log=None,
    )


if __name__ == "__main__":
    main()
