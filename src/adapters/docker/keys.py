"""A node's keys, read from its container environment the way the node server reads them.

Two servers are supported, and the first complete pair wins, in this order: MinIO's root pair
(``MINIO_ROOT_USER``/``MINIO_ROOT_PASSWORD``), MinIO's legacy pair (``MINIO_ACCESS_KEY``/
``MINIO_SECRET_KEY``, which MinIO itself falls back to), then RustFS's pair (``RUSTFS_ACCESS_KEY``/
``RUSTFS_SECRET_KEY``). A container that sets MinIO's names is a MinIO node whatever else it sets.
"""

from __future__ import annotations

from collections.abc import Sequence

from domain.node import Credentials

__all__ = ["credentials_from_env"]

_KEY_PAIRS = (
    ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"),
    ("MINIO_ACCESS_KEY", "MINIO_SECRET_KEY"),
    ("RUSTFS_ACCESS_KEY", "RUSTFS_SECRET_KEY"),
)


def credentials_from_env(env: Sequence[str] | None) -> Credentials | None:
    """The node's keys from a container's ``KEY=value`` environment, in the order above."""
    variables = dict(item.split("=", 1) for item in env or () if "=" in item)
    for user_variable, password_variable in _KEY_PAIRS:
        access_key = variables.get(user_variable)
        secret_key = variables.get(password_variable)
        if access_key and secret_key:
            return Credentials(access_key=access_key, secret_key=secret_key)
    return None
