"""Objects on MinIO (S3) nodes: requests signed by minio-py, carried by aiohttp on the event loop.

keys.py           where things are kept in a bucket: the one place that names keys
storage.py        the ObjectStorage port: versions, open, head, put, promote, remove, walk
walks.py          a bucket's versions in ID order, and objects under the old layout
listings.py       ListObjectsV2, page by page
marks.py          the NodeMarking and Leases ports: drain marks, migration mark, job claims
uploads.py        a write in one PUT (a small body in hand, or the client's body streamed)
multipart.py      a write of unknown length in parts
upload_budget.py  where parts are held while they fill: memory, else temporary files
buckets.py        every node's bucket, made on first use and again when it is gone
responses.py      metadata from headers, bodies read whole or streamed, refusals told apart
transport.py      one signed request: the session, timeouts, and map_errors
signing.py        minio-py's SigV4, with the per-day and per-second work done once
"""

from adapters.s3.storage import MinioObjectStorage
from adapters.s3.transport import MinioSettings
from adapters.s3.upload_budget import ByteBudget, PartSpool

__all__ = ["ByteBudget", "MinioObjectStorage", "MinioSettings", "PartSpool"]
