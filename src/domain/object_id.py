from __future__ import annotations

import re
from dataclasses import dataclass

from domain.errors import InvalidObjectId

__all__ = ["MAX_OBJECT_ID_LENGTH", "OBJECT_ID_PATTERN", "ObjectId"]

MAX_OBJECT_ID_LENGTH = 32
# The rule, as a regular expression that must match the whole ID (the HTTP schema anchors it).
OBJECT_ID_PATTERN = rf"[A-Za-z0-9]{{1,{MAX_OBJECT_ID_LENGTH}}}"
# re.ASCII + fullmatch: str.isalnum() admits non-ASCII digits, and `$` admits a final "\n".
_VALID_OBJECT_ID = re.compile(OBJECT_ID_PATTERN, re.ASCII)


@dataclass(frozen=True, slots=True)
class ObjectId:
    """The name of an object: 1 to 32 ASCII letters and digits, validated on construction."""

    value: str

    def __post_init__(self) -> None:
        if not isinstance(self.value, str) or not _VALID_OBJECT_ID.fullmatch(self.value):
            shown = (
                repr(self.value) if len(str(self.value)) <= 64 else f"{str(self.value)[:64]!r}..."
            )
            raise InvalidObjectId(
                f"object ID {shown} must be 1 to {MAX_OBJECT_ID_LENGTH} ASCII letters or digits"
            )

    def __str__(self) -> str:
        return self.value
