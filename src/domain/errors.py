"""Every failure the gateway can report, as one tree rooted in :class:`GatewayError`.

    GatewayError
    ├── InvalidRequest            the client sent something we refuse (4xx)
    │   ├── InvalidObjectId       not 1-32 ASCII letters and digits
    │   ├── IncompleteBody        the body ended early, ran over, or stalled
    │   │   ├── UploadTooSlow     the upload went on longer than a write may take (408)
    │   │   └── BodyTooSlow       the body arrived slower than the minimum data rate (408)
    │   ├── BodyTooLarge          the body exceeds the configured maximum
    │   └── RefusedByNode         the node refused something in the request itself (never its fault)
    ├── ObjectNotFound            no object under this ID on any node that may hold it
    ├── PreconditionFailed        a conditional request's condition does not hold (412)
    ├── RangeNotSatisfiable       the byte range asked for lies beyond the object (416)
    ├── CopyMismatch              a copy's bytes are not its source's (the node refused them)
    ├── JobInProgress             a rebalance or drain already runs, here or in another gateway
    ├── Unauthenticated           auth is on and no valid token or signature came (401)
    │   ├── MissingToken          neither an Authorization header nor a signature
    │   ├── InvalidToken          not a Bearer token, malformed, unknown or revoked
    │   ├── ExpiredToken          a known token past its expiry
    │   ├── InvalidSignature      malformed, tampered, another method or path, an unknown key
    │   ├── ExpiredSignature      a signed URL past its expiry
    │   └── RevokedKey            a signed URL whose signing key was retired by a rotation
    ├── Forbidden                 a valid credential that does not allow this request (403)
    │   ├── ScopeNotAllowed       the token lacks the scope the route needs
    │   └── PrefixNotAllowed      the token is limited to IDs with another prefix
    ├── CredentialsUnreadable     the tokens file cannot be read or parsed (the operator's to fix)
    └── ServiceUnavailable        a dependency cannot serve the request (5xx, retry later)
        ├── NoNodesAvailable      discovery found no storage node at all
        ├── NodeUnavailable       the ID's node is down, refusing, or resting (circuit open)
        │   ├── NodeUnreachable   connecting to the node failed or timed out (feeds its breaker)
        │   └── NodeOverloaded    as many requests wait for the node as may
        ├── QuorumUnavailable     fewer of an ID's replicas than its quorum could take part
        ├── ObjectKeptChanging    the ID's versions moved under every attempt to read them
        ├── DiscoveryUnavailable  the container runtime cannot be asked who the nodes are
        └── UploadCapacityExhausted  upload parts fill the gateway's memory and disk budgets

Adapters translate their SDK's exceptions into these at the border; the HTTP entrypoint maps each
class to exactly one status code in one place.
"""

from __future__ import annotations

__all__ = [
    "BodyTooLarge",
    "BodyTooSlow",
    "CopyMismatch",
    "CredentialsUnreadable",
    "DiscoveryUnavailable",
    "ExpiredSignature",
    "ExpiredToken",
    "Forbidden",
    "GatewayError",
    "IncompleteBody",
    "InvalidObjectId",
    "InvalidRequest",
    "InvalidSignature",
    "InvalidToken",
    "JobInProgress",
    "MissingToken",
    "NoNodesAvailable",
    "NodeOverloaded",
    "NodeUnavailable",
    "NodeUnreachable",
    "ObjectKeptChanging",
    "ObjectNotFound",
    "PreconditionFailed",
    "PrefixNotAllowed",
    "QuorumUnavailable",
    "RangeNotSatisfiable",
    "RefusedByNode",
    "RevokedKey",
    "ScopeNotAllowed",
    "ServiceUnavailable",
    "Unauthenticated",
    "UploadCapacityExhausted",
    "UploadTooSlow",
]


class GatewayError(Exception):
    """Base of every error the gateway reports to its clients."""

    code = "gateway_error"

    def __init__(self, detail: str, *, node_name: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        # The storage node involved, when there was one (for logs and per-node metrics).
        self.node_name = node_name


class InvalidRequest(GatewayError):
    code = "invalid_request"


class InvalidObjectId(InvalidRequest):
    code = "invalid_object_id"


class IncompleteBody(InvalidRequest):
    code = "incomplete_body"


class UploadTooSlow(IncompleteBody):
    """An upload still coming after the longest a write may take (``GATEWAY_MAX_WRITE_SECONDS``):
    a write older than that could otherwise land after a delete's tombstone was purged."""

    code = "upload_too_slow"


class BodyTooSlow(IncompleteBody):
    """After a grace period, the body arrived slower on average than the gateway's minimum rate."""

    code = "body_too_slow"


class BodyTooLarge(InvalidRequest):
    code = "body_too_large"


class RefusedByNode(InvalidRequest):
    """A node answered 4xx to something the client sent (a header it rejects, say).

    The client's error, not the node's: a 400, and it never counts against the node's breaker.
    """


class ObjectNotFound(GatewayError):
    code = "object_not_found"


class PreconditionFailed(GatewayError):
    code = "precondition_failed"


class RangeNotSatisfiable(GatewayError):
    code = "range_not_satisfiable"

    def __init__(
        self, detail: str, object_size: int | None, *, node_name: str | None = None
    ) -> None:
        super().__init__(detail, node_name=node_name)
        self.object_size = object_size


class CopyMismatch(GatewayError):
    code = "copy_mismatch"


class JobInProgress(GatewayError):
    """A rebalance, repair or drain already runs, in this gateway or in another one."""

    code = "admin_busy"


class Unauthenticated(GatewayError):
    """Auth is on and the request carries no valid credential. The detail never quotes the
    credential: it names the token's or key's public ID at most."""

    code = "unauthenticated"


class MissingToken(Unauthenticated):
    code = "missing_token"


class InvalidToken(Unauthenticated):
    """Not a Bearer token, malformed, or no token with this hash (never issued, or revoked)."""

    code = "invalid_token"


class ExpiredToken(Unauthenticated):
    code = "expired_token"


class InvalidSignature(Unauthenticated):
    """A signed URL that is malformed, tampered with, for another method or path, or signed with
    a key the gateway never had."""

    code = "invalid_signature"


class ExpiredSignature(Unauthenticated):
    code = "expired_signature"


class RevokedKey(Unauthenticated):
    """A signed URL whose key was retired by a rotation."""

    code = "revoked_key"


class Forbidden(GatewayError):
    """A valid credential that does not allow this request."""

    code = "forbidden"


class ScopeNotAllowed(Forbidden):
    code = "insufficient_scope"


class PrefixNotAllowed(Forbidden):
    code = "prefix_not_allowed"


class CredentialsUnreadable(GatewayError):
    """The tokens file cannot be read or parsed. Its detail names the file, never its content."""

    code = "credentials_unreadable"


class ServiceUnavailable(GatewayError):
    code = "service_unavailable"

    # How long the client should wait before retrying, when the gateway knows; else a default.
    retry_after_seconds: float | None = None


class NoNodesAvailable(ServiceUnavailable):
    code = "no_nodes_available"


class NodeUnavailable(ServiceUnavailable):
    code = "node_unavailable"

    def __init__(
        self, node_name: str, reason: str, retry_after_seconds: float | None = None
    ) -> None:
        super().__init__(f"storage node {node_name} is unavailable: {reason}", node_name=node_name)
        self.retry_after_seconds = retry_after_seconds


class NodeUnreachable(NodeUnavailable):
    """The node did not answer at all; several in a row open its circuit breaker."""


class NodeOverloaded(NodeUnavailable):
    """Refused at once, so that one slow or frozen node cannot hold an unbounded number of requests;
    it says nothing about the node's health, so it never feeds the breaker."""


class QuorumUnavailable(ServiceUnavailable):
    """Fewer of an ID's replicas than its read or write quorum could take part: nothing was
    acknowledged (a write may have landed on some of them, never half of one)."""

    code = "quorum_unavailable"


class ObjectKeptChanging(ServiceUnavailable):
    """Every attempt to read the ID found the version it listed gone before it could be opened
    (moved, or replaced by a newer one, each time): retrying soon succeeds."""

    code = "object_kept_changing"


class DiscoveryUnavailable(ServiceUnavailable):
    code = "discovery_unavailable"


class UploadCapacityExhausted(ServiceUnavailable):
    """Multipart parts being filled hold all the memory and disk the gateway may give them."""

    code = "upload_capacity_exhausted"
    retry_after_seconds = 5
