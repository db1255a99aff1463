"""The zip CRC-32 is checked on every entry, in the hashing pass, and refuses on its own.

The SHA-256 in the manifest is the integrity check; the CRC-32 is zip's own checksum,
which no hash covers. A bundle whose CRC fields were rewritten (consistently, in the
local header and the central directory) would otherwise still verify: a second
encoding of a signed bundle that every other zip tool refuses. These tests change
exactly one of the two -- the CRC, or one content byte with its CRC made right again
-- so that only the check under test can catch it.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import pytest
from helpers import CENTRAL, SIG_CENTRAL, save_tiny

import bundle
from bundle.errors import IntegrityError
from bundle.format import digest
from bundle.format.archive import ZipReader
from bundle.format.weights import WEIGHTS_NAME

_LOCAL_CRC = 14
_CENTRAL_CRC = 16


def _central_at(data: bytes, name: str) -> int:
    """Offset of ``name``'s central directory record."""
    pos = data.rfind(struct.pack("<I", SIG_CENTRAL))
    while pos >= 0:
        fields = CENTRAL.unpack_from(data, pos)
        nlen = fields[10]
        if data[pos + CENTRAL.size : pos + CENTRAL.size + nlen] == name.encode():
            return pos
        pos = data.rfind(struct.pack("<I", SIG_CENTRAL), 0, pos)
    raise AssertionError(f"no central record for {name}")


def _set_crc(data: bytearray, name: str, header_offset: int, crc: int) -> None:
    """Write ``crc`` into both the local header and the central record of ``name``."""
    struct.pack_into("<I", data, header_offset + _LOCAL_CRC, crc)
    struct.pack_into("<I", data, _central_at(bytes(data), name) + _CENTRAL_CRC, crc)


@pytest.fixture
def tiny(tmp_path: Path, signing_key: bundle.PrivateKey) -> Path:
    return save_tiny(tmp_path / "tiny.mbundle", signing_key)


def _tampered(src: Path, out: Path, *, flip_byte: bool) -> Path:
    with ZipReader(src) as r:
        e = r.entries[WEIGHTS_NAME]
    data = bytearray(src.read_bytes())
    if flip_byte:  # the last byte of the last tensor: the header still parses
        at = e.data_offset + e.size - 1
        data[at] ^= 0x40
        crc = zlib.crc32(bytes(data[e.data_offset : e.data_offset + e.size]))
    else:
        crc = e.crc32 ^ 0x00010000
    _set_crc(data, WEIGHTS_NAME, e.header_offset, crc)
    out.write_bytes(bytes(data))
    return out


def _open(how: str, path: Path, key: bundle.PrivateKey) -> None:
    if how == "verify":
        bundle.verify(path, trusted_keys=key.public_key)
    else:
        bundle.load(
            path, trusted_keys=key.public_key, device="cpu", zero_copy=how == "load_zero_copy"
        )


def test_the_untampered_bundle_loads(tiny: Path, signing_key: bundle.PrivateKey) -> None:
    """The surgery below is the only difference: the original verifies and loads."""
    bundle.verify(tiny, trusted_keys=signing_key.public_key)
    bundle.load(tiny, trusted_keys=signing_key.public_key, device="cpu")


@pytest.mark.parametrize("how", ["verify", "load", "load_zero_copy"])
def test_a_wrong_crc_is_refused(
    tiny: Path, tmp_path: Path, signing_key: bundle.PrivateKey, how: str
) -> None:
    """Every content byte as signed, only the CRC fields changed: refused by the CRC."""
    bad = _tampered(tiny, tmp_path / "crc.mbundle", flip_byte=False)
    with pytest.raises(IntegrityError, match=r"weights\.safetensors.* fails its zip CRC-32"):
        _open(how, bad, signing_key)


@pytest.mark.parametrize("how", ["verify", "load"])
def test_a_wrong_byte_with_a_matching_crc_is_refused_by_the_sha256(
    tiny: Path, tmp_path: Path, signing_key: bundle.PrivateKey, how: str
) -> None:
    """One weight byte changed and the CRC made right for it: the SHA-256 refuses it."""
    bad = _tampered(tiny, tmp_path / "byte.mbundle", flip_byte=True)
    with pytest.raises(IntegrityError, match=r"weights\.safetensors: SHA-256 is"):
        _open(how, bad, signing_key)


def test_the_fast_crc_is_zlibs_crc(tmp_path: Path) -> None:
    """The hashing pass's CRC (zlib-ng's where installed) gives zlib's values, also
    chained across buffers of every alignment."""
    data = bytes(range(256)) * 4099 + b"tail"
    for cut in (0, 1, 7, 4096, len(data) - 3):
        assert digest.crc32(data[cut:], digest.crc32(data[:cut])) == zlib.crc32(data)
    f = tmp_path / "blob"
    f.write_bytes(data)
    fd = os.open(f, os.O_RDONLY)
    try:
        [r] = digest.hash_ranges(fd, [(3, len(data))], buffer_size=1000)
    finally:
        os.close(fd)
    assert r.crc32 == zlib.crc32(data[3:])


def test_the_crc_is_zlib_ngs_when_installed() -> None:
    """pyproject.toml declares zlib-ng: the verify path must then use it (4-5x faster)."""
    zlib_ng = pytest.importorskip("zlib_ng.zlib_ng")
    assert digest.crc32 is zlib_ng.crc32
