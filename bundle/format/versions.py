"""Version strings and times as the manifest writes them: parsing and ordering.

Model versions that rollback protection orders are dot-separated integers;
times are RFC 3339 UTC with whole seconds (``2030-01-31T12:00:00Z``), so a
manifest states each one in exactly one way.
"""

from __future__ import annotations

import datetime as dt
import re

__all__ = ["format_time", "parse_time", "parse_version", "release_tuple"]

_RFC3339_UTC = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
_VERSION = re.compile(r"[0-9]{1,18}(\.[0-9]{1,18}){0,15}")


def parse_time(text: str, what: str = "time") -> dt.datetime:
    """Parse ``YYYY-MM-DDTHH:MM:SSZ`` (RFC 3339, UTC, whole seconds) to an aware datetime."""
    if not isinstance(text, str) or not _RFC3339_UTC.fullmatch(text):
        raise ValueError(f"{what} {text!r} is not an RFC 3339 UTC time like 2030-01-31T12:00:00Z")
    try:
        return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    except ValueError as e:
        raise ValueError(f"{what} {text!r} is not a valid date and time") from e


def format_time(when: dt.datetime | dt.timedelta | str, *, now: dt.datetime | None = None) -> str:
    """Normalise an expiry: an aware datetime, a delta from ``now``, or an RFC 3339 string."""
    if isinstance(when, str):
        parse_time(when, "expires")
        return when
    if isinstance(when, dt.timedelta):
        when = (now or dt.datetime.now(dt.timezone.utc)) + when
    if not isinstance(when, dt.datetime) or when.tzinfo is None:
        raise ValueError(
            "expires must be a timezone-aware datetime, a timedelta, or an RFC 3339 UTC string"
        )
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_version(version: str) -> tuple[int, ...]:
    """Integer components of ``version`` with trailing zeros dropped; ValueError otherwise."""
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        raise ValueError(
            f"version {version!r} cannot be ordered: rollback protection needs "
            "dot-separated integers such as 3, 1.10.2 or 2024.6.1"
        )
    parts = [int(p) for p in version.split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def release_tuple(version: str) -> tuple[int, ...]:
    """``"1.20.1"`` -> ``(1, 20, 1)``: a library release number, for comparing.
    A local or pre-release suffix (``+cu121``, ``rc1``) is dropped; ValueError if
    nothing numeric is left."""
    parts = []
    for p in version.split("+")[0].split(".")[:3]:
        digits = re.match(r"[0-9]+", p)
        if digits is None:
            break
        parts.append(int(digits.group(0)))
    if not parts:
        raise ValueError(f"release {version!r} has no version number")
    return tuple(parts)
