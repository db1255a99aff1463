"""Loading a bundle from a URL: ``bundle.load("s3://bucket/key.mbundle")``, ``https://``.

The file is read in parallel ranges, hashed as it arrives, and kept in the local
cache under its digest (:mod:`.cache`); :func:`bundle.load` then verifies it in
full from there, exactly as a local file. Nothing is parsed before that.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import StoreNotFoundError
from .backends import open_backend
from .cache import Cache

__all__ = ["fetch_url", "is_remote"]


def is_remote(path: object) -> bool:
    """True for a URL with a scheme other than ``file`` (s3://, https://, memory://...)."""
    if not isinstance(path, str) or "://" not in path:
        return False
    scheme = path.split("://", 1)[0].lower()
    return scheme.isidentifier() and scheme not in ("file", "local")


def fetch_url(
    url: str,
    *,
    storage_options: Mapping[str, Any] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    expected: str | None = None,
) -> tuple[Path, str]:
    """Fetch the file at ``url`` into the cache; return its path there and its digest.

    ``storage_options`` go to fsspec (S3 endpoint and credentials, HTTP headers).
    ``expected`` (a hex SHA-256) refuses other bytes and lets a cached copy serve.
    """
    folder, _, name = url.rstrip("/").rpartition("/")
    if not name:
        raise ValueError(f"{url!r} names no file")
    backend = open_backend(folder, storage_options)
    cache = Cache(cache_dir)
    if expected is not None:
        have = cache.get(expected)
        if have is not None:
            return have, expected
    size = backend.size(name)
    if size is None:
        raise StoreNotFoundError(f"{url}: no such object")
    return cache.fetch(
        lambda a, b: backend.read_range(name, a, b), size, expected=expected, what=url
    )
