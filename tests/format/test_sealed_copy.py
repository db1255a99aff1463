"""The sealed in-memory copy the loader hashes the weights from (Linux memfd)."""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from bundle.format import digest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="memory files and seals are Linux's"
)

SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE


def _blob(tmp_path: Path, size: int) -> tuple[Path, bytes]:
    data = os.urandom(size)
    p = tmp_path / "blob"
    p.write_bytes(data)
    return p, data


def _maps_line(m: mmap.mmap) -> str:
    """The /proc/self/maps line of the mapping ``m`` (found by its address)."""
    addr = np.frombuffer(m, dtype=np.uint8).ctypes.data
    for line in Path("/proc/self/maps").read_text().splitlines():
        lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
        if lo <= addr < hi:
            return line
    raise AssertionError("mapping not in /proc/self/maps")


@pytest.mark.parametrize("workers", [1, 3])
def test_copy_holds_the_range_and_is_a_sealed_memory_file(tmp_path: Path, workers: int) -> None:
    p, data = _blob(tmp_path, 3 * (1 << 20) + 12345)
    fd = os.open(p, os.O_RDONLY)
    try:
        m = digest.sealed_copy(fd, 777, len(data) - 1000, piece=1 << 20, workers=workers)
    finally:
        os.close(fd)
    assert bytes(m) == data[777 : len(data) - 223]
    line = _maps_line(m)
    assert f"/memfd:{digest.MEMFD_NAME}" in line, line
    assert line.split()[1] == "r--s", line  # read-only, shared: no private copy-on-write
    # Every way to write through the mapping is refused.
    with pytest.raises(TypeError):
        m[0] = 1
    with pytest.raises(TypeError):
        m.write(b"x")
    with pytest.raises(TypeError):
        memoryview(m)[0] = 1
    arr = np.frombuffer(m, dtype=np.uint8)
    with pytest.raises(ValueError):
        arr.flags.writeable = True
    # The memory file itself carries the seals (opened again through the mapping's
    # own /proc entry: root or CAP_SYS_ADMIN only, so skipped otherwise).
    lo_hi = line.split()[0]
    try:
        again = os.open(f"/proc/self/map_files/{lo_hi}", os.O_RDWR)
    except PermissionError:
        pytest.skip("no access to /proc/self/map_files here")
    try:
        assert fcntl.fcntl(again, fcntl.F_GET_SEALS) & SEALS == SEALS
        for write in (lambda: os.ftruncate(again, 1), lambda: os.pwrite(again, b"x", 0)):
            with pytest.raises(PermissionError):
                write()
        assert os.fstat(again).st_size == len(m)
    finally:
        os.close(again)
    del arr
    m.close()


def test_a_file_shorter_than_the_range_is_a_short_read(tmp_path: Path) -> None:
    p, data = _blob(tmp_path, 2 << 20)
    fd = os.open(p, os.O_RDONLY)
    try:
        with pytest.raises(digest.ShortReadError, match="file ends at byte"):
            digest.sealed_copy(fd, 10, len(data), piece=1 << 20, workers=2)
    finally:
        os.close(fd)


def test_without_memory_files_it_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p, _ = _blob(tmp_path, 4096)
    monkeypatch.delattr(os, "memfd_create")
    fd = os.open(p, os.O_RDONLY)
    try:
        with pytest.raises(OSError, match="memfd_create"):
            digest.sealed_copy(fd, 0, 4096)
    finally:
        os.close(fd)
    with pytest.raises(ValueError):
        digest.sealed_copy(0, 0, 0)


def test_hashing_from_a_source_equals_hashing_the_file(tmp_path: Path) -> None:
    p, data = _blob(tmp_path, (2 << 20) + 5)
    spans = [(0, 1 << 20), (1 << 20, len(data))]
    fd = os.open(p, os.O_RDONLY)
    try:
        m = digest.sealed_copy(fd, 0, len(data), piece=1 << 20)
        view = memoryview(m)
        from_memory = digest.hash_ranges(
            fd, spans, source=[view[a:b] for a, b in spans], keep=[8, 0], buffer_size=65536
        )
        from_file = digest.hash_ranges(fd, spans, keep=[8, 0])
        with pytest.raises(ValueError, match="both a buffer and a source"):
            digest.hash_ranges(
                fd, spans[:1], source=[view[: 1 << 20]], into=[memoryview(bytearray(1 << 20))]
            )
    finally:
        os.close(fd)
    for (a, b), r, s in zip(spans, from_memory, from_file, strict=True):
        assert r.sha256 == s.sha256 == hashlib.sha256(data[a:b]).digest()
        assert r.crc32 == s.crc32
        assert r.head == s.head
    del view
    m.close()
