"""SHA-256 of bundle entries: of bytes in memory, or streamed from the file by ``read()``.

Streaming reads through a small buffer rather than a memory map, so hashing a
large entry does not add its pages to the process's resident set.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

__all__ = ["sha256_bytes", "sha256_chunks"]


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_chunks(chunks: Iterable[bytes]) -> str:
    """Hex SHA-256 of the concatenation of ``chunks``."""
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()
