"""The zip container: a deterministic aligned writer, and a reader that refuses ambiguity.

Malformed archives are built field by field (``helpers.make_zip``) or by patching
the bytes of a good one, and every refusal must be the specific error class:
FormatError for structure, LimitError for sizes and counts, IntegrityError for a
CRC that does not match.
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    LOCAL,
    SIG_CENTRAL,
    SIG_LOCAL,
    central_header,
    local_header,
    make_zip,
    save_tiny,
    write_raw,
)

import bundle
from bundle.errors import FormatError, IntegrityError, LimitError
from bundle.format.archive import (
    ALIGNMENT,
    MAX_DEFLATE_RATIO,
    MAX_ENTRIES,
    EntryData,
    ZipReader,
    ZipWriter,
    check_entry_name,
)
from bundle.format.weights import WEIGHTS_NAME


def _write(tmp_path: Path, data: bytes, name: str = "x.zip") -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def _open(path: Path) -> dict[str, bytes]:
    with ZipReader(path) as r:
        return {n: r.read(n, max_size=1 << 26) for n in r.entries}


def _refused(
    tmp_path: Path,
    data: bytes,
    exc: type[Exception],
    match: str | None = None,
) -> pytest.ExceptionInfo[Exception]:
    """Opening (and reading every entry of) ``data`` raises exactly ``exc``."""
    with pytest.raises(exc, match=match) as info:
        _open(_write(tmp_path, data))
    assert type(info.value) is exc, f"{type(info.value).__name__}: {info.value}"
    return info


ITEMS = [("a.txt", b"hello bundle\n"), ("dir/b.bin", bytes(range(256)))]


@pytest.fixture(scope="module")
def signed_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bundle.PrivateKey]:
    key = bundle.generate_key()
    return save_tiny(tmp_path_factory.mktemp("arch") / "tiny.mbundle", key), key


# --------------------------------------------------------------------------- the writer


def _entries() -> list[EntryData]:
    return [
        EntryData("model.onnx", b"graph" * 100, compress=True),
        EntryData(WEIGHTS_NAME, b"\x01\x02\x03" * 50, align=True),
        EntryData("streamed.bin", chunks=iter([b"ab", b"cd", b"e"]), size=5),
        EntryData("manifest.json", b"{}"),
    ]


def _written() -> bytes:
    buf = io.BytesIO()
    w = ZipWriter(buf)
    for e in _entries():
        w.write(e)
    w.close()
    return buf.getvalue()


# One STORED entry "a.txt" = b"hello\n", spelled out field by field from PKWARE's APPNOTE
# (not from the writer's constants): what a conforming deterministic writer must produce.
KNOWN_ZIP = b"".join(
    [
        # local file header at offset 0
        b"PK\x03\x04",  # signature
        b"\x14\x00",  # version needed: 2.0
        b"\x00\x08",  # flags: bit 11, the name is UTF-8
        b"\x00\x00",  # method: STORED
        b"\x00\x00",  # time 00:00:00
        b"\x21\x00",  # date 1980-01-01 (day 1, month 1 << 5, year 1980 + 0)
        b"\x20\x30\x3a\x36",  # CRC-32 of b"hello\n": 0x363a3020
        b"\x06\x00\x00\x00",
        b"\x06\x00\x00\x00",  # compressed, uncompressed size
        b"\x05\x00",
        b"\x00\x00",  # name length, extra length
        b"a.txt",
        b"hello\n",
        # central directory at offset 41
        b"PK\x01\x02",  # signature
        b"\x14\x03",  # made by: Unix (3), 2.0
        b"\x14\x00",
        b"\x00\x08",
        b"\x00\x00",
        b"\x00\x00",
        b"\x21\x00",  # as above
        b"\x20\x30\x3a\x36",
        b"\x06\x00\x00\x00",
        b"\x06\x00\x00\x00",
        b"\x05\x00",
        b"\x00\x00",
        b"\x00\x00",  # name, extra, comment lengths
        b"\x00\x00",
        b"\x00\x00",  # disk number, internal attributes
        b"\x00\x00\xa4\x81",  # external attributes: 0o100644 << 16, a regular rw-r--r-- file
        b"\x00\x00\x00\x00",  # local header offset
        b"a.txt",
        # end of central directory
        b"PK\x05\x06",
        b"\x00\x00",
        b"\x00\x00",  # signature, disk numbers
        b"\x01\x00",
        b"\x01\x00",  # entries on this disk, in all
        b"\x33\x00\x00\x00",
        b"\x29\x00\x00\x00",  # directory size 51, offset 41
        b"\x00\x00",  # no comment
    ]
)


def test_writer_output_is_the_known_bytes() -> None:
    buf = io.BytesIO()
    w = ZipWriter(buf)
    w.write(EntryData("a.txt", b"hello\n"))
    w.close()
    assert buf.getvalue() == KNOWN_ZIP
    with zipfile.ZipFile(io.BytesIO(KNOWN_ZIP)) as z:  # and the expectation is a zip
        assert z.read("a.txt") == b"hello\n"


def test_writer_layout_as_zipfile_reads_it() -> None:
    """Contiguous entries from offset 0, the directory right after them, the weights'
    data 4096-aligned, fixed timestamps and attributes, CRCs and sizes of the data given."""
    data = _written()
    expected = {e.name: e.data if e.data is not None else b"abcde" for e in _entries()}
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        infos = z.infolist()
        assert [i.filename for i in infos] == list(expected)
        at = 0
        for i in infos:
            content = expected[i.filename]
            assert i.header_offset == at, i.filename
            sig, *_, nlen, xlen = LOCAL.unpack_from(data, at)
            assert sig == SIG_LOCAL
            data_offset = at + LOCAL.size + nlen + xlen
            assert (i.file_size, i.CRC) == (len(content), zlib.crc32(content)), i.filename
            if i.filename == WEIGHTS_NAME:
                assert data_offset % ALIGNMENT == 0
                assert xlen > 0
            else:
                assert xlen == 0, f"{i.filename}: an extra field it does not need"
            payload = data[data_offset : data_offset + i.compress_size]
            if i.compress_type == zipfile.ZIP_DEFLATED:
                assert i.filename == "model.onnx"
                assert zlib.decompress(payload, -15) == content
            else:
                assert i.compress_type == zipfile.ZIP_STORED
                assert payload == content
            assert i.date_time == (1980, 1, 1, 0, 0, 0)
            assert (i.create_system, i.external_attr >> 16) == (3, 0o100644)
            assert (i.flag_bits, i.internal_attr, i.extra, i.comment) == (0x0800, 0, b"", b"")
            assert z.read(i) == content
            at = data_offset + i.compress_size
        assert z.comment == b""
    # the central directory starts where the last entry ends; the end record ends the file
    assert data[at : at + 4] == struct.pack("<I", SIG_CENTRAL)
    cd_size, cd_offset, comment_len = struct.unpack_from("<IIH", data, len(data) - 10)
    assert (cd_offset, cd_offset + cd_size, comment_len) == (at, len(data) - 22, 0)


def test_same_bundle_twice_gives_identical_bytes(tmp_path: Path) -> None:
    for key_type in ("ecdsa-p256", "ed25519"):
        key = bundle.generate_key(key_type)
        a = save_tiny(tmp_path / f"a-{key_type}.mbundle", key).read_bytes()
        b = save_tiny(tmp_path / f"b-{key_type}.mbundle", key).read_bytes()
        assert a == b


def test_python_zipfile_reads_the_output(tmp_path: Path) -> None:
    p = _write(tmp_path, _written())
    with zipfile.ZipFile(p) as z:
        assert z.testzip() is None
        assert z.namelist() == ["model.onnx", WEIGHTS_NAME, "streamed.bin", "manifest.json"]
        assert z.read("model.onnx") == b"graph" * 100
        assert z.read("streamed.bin") == b"abcde"
        assert z.getinfo("model.onnx").compress_type == zipfile.ZIP_DEFLATED
        assert z.getinfo(WEIGHTS_NAME).compress_type == zipfile.ZIP_STORED
        assert all(i.date_time == (1980, 1, 1, 0, 0, 0) for i in z.infolist())
    assert _open(p)["streamed.bin"] == b"abcde"


def test_bundle_is_a_valid_zip_with_aligned_weights(
    signed_bundle: tuple[Path, bundle.PrivateKey],
) -> None:
    path, _ = signed_bundle
    raw = path.read_bytes()
    with zipfile.ZipFile(path) as z:
        assert z.testzip() is None
        info = z.getinfo(WEIGHTS_NAME)
        _, _, _, _, _, _, _, _, _, nlen, xlen = LOCAL.unpack_from(raw, info.header_offset)
        data_offset = info.header_offset + LOCAL.size + nlen + xlen
        assert data_offset % ALIGNMENT == 0
        assert raw[data_offset : data_offset + info.file_size] == z.read(WEIGHTS_NAME)
    with ZipReader(path) as r:
        assert r.entries[WEIGHTS_NAME].data_offset == data_offset
        assert r.entries[WEIGHTS_NAME].stored


@pytest.mark.skipif(shutil.which("unzip") is None, reason="no unzip binary")
def test_unzip_lists_and_tests_the_bundle(signed_bundle: tuple[Path, bundle.PrivateKey]) -> None:
    path, _ = signed_bundle
    listed = subprocess.run(
        ["unzip", "-l", str(path)], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    assert WEIGHTS_NAME in listed
    assert "manifest.json" in listed
    tested = subprocess.run(
        ["unzip", "-t", str(path)], capture_output=True, text=True, check=False, timeout=30
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "No errors detected" in tested.stdout


def test_writer_refuses_duplicates_and_bad_names() -> None:
    w = ZipWriter(io.BytesIO())
    w.write(EntryData("a", b"1"))
    with pytest.raises(ValueError, match="duplicate"):
        w.write(EntryData("a", b"2"))
    # a file and a directory of the same name, in either order: the reader refuses both
    with pytest.raises(ValueError, match="parent directory"):
        w.write(EntryData("a/b", b"2"))
    w.write(EntryData("c/d", b"1"))
    with pytest.raises(ValueError, match="parent directory"):
        w.write(EntryData("c", b"2"))
    with pytest.raises(FormatError):
        EntryData("../a", b"1")
    with pytest.raises(ValueError, match="streamed"):
        ZipWriter(io.BytesIO()).write(EntryData("s", chunks=iter([b"abc"]), size=4))


def test_copy_entry_keeps_bytes_and_alignment(tmp_path: Path) -> None:
    src = _write(tmp_path, _written(), "src.zip")
    buf = io.BytesIO()
    with ZipReader(src) as r:
        w = ZipWriter(buf)
        for e in sorted(r.entries.values(), key=lambda e: e.header_offset):
            w.copy_entry(r, e)
        w.close()
    assert buf.getvalue() == src.read_bytes()


def test_good_handmade_zip_is_accepted(tmp_path: Path) -> None:
    """The hand-built zips below differ from this one only in what each test breaks."""
    assert _open(_write(tmp_path, make_zip(ITEMS))) == dict(ITEMS)
    assert _open(_write(tmp_path, make_zip(ITEMS, method=8))) == dict(ITEMS)


# --------------------------------------------------------------------------- the reader


def test_empty_file(tmp_path: Path) -> None:
    _refused(tmp_path, b"", FormatError, "empty")


def test_too_short_file(tmp_path: Path) -> None:
    _refused(tmp_path, b"PK\x05\x06" + b"\0" * 10, FormatError, "too short")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="cannot open"):
        ZipReader(tmp_path / "nope.zip")


def test_bundle_path_that_is_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    """open() on a FIFO waits for a writer forever: verify must refuse it, not hang."""
    fifo = tmp_path / "pipe.mbundle"
    os.mkfifo(fifo)
    code = (
        "import bundle\n"
        "try:\n"
        f"    bundle.verify({str(fifo)!r}, allow_unsigned=True)\n"
        "except bundle.FormatError as e:\n"
        "    print(type(e).__name__, e)\n"
    )
    # in a subprocess so that a regression fails on the timeout instead of hanging the suite
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=Path(__file__).parents[2],
    )
    assert f"FormatError {fifo} is not a regular file (a FIFO)" in done.stdout, done.stderr


@pytest.mark.parametrize(
    ("where", "kind"), [("dir", "a directory"), ("/dev/null", "a character device")]
)
def test_bundle_path_that_is_not_a_regular_file(tmp_path: Path, where: str, kind: str) -> None:
    path = tmp_path if where == "dir" else Path(where)
    if not path.exists():
        pytest.skip(f"no {where} here")
    with pytest.raises(FormatError, match=f"{path} is not a regular file \\({kind}\\)"):
        ZipReader(path)
    with pytest.raises(FormatError, match="not a regular file"):
        bundle.verify(path, allow_unsigned=True)
    with pytest.raises(FormatError, match="not a regular file"):
        bundle.inspect(path)


def test_not_a_zip(tmp_path: Path) -> None:
    _refused(
        tmp_path, b"this is not a zip archive at all, just text\n" * 4, FormatError, "not a zip"
    )


def test_trailing_data_after_end_record(tmp_path: Path) -> None:
    _refused(tmp_path, make_zip(ITEMS, suffix=b"trailing"), FormatError, "follows")


def test_zip_comment(tmp_path: Path) -> None:
    _refused(tmp_path, make_zip(ITEMS, comment=b"hi"), FormatError, "follows|comment")


def test_zip_comment_length_without_comment(tmp_path: Path) -> None:
    data = bytearray(make_zip(ITEMS))
    struct.pack_into("<H", data, len(data) - 2, 5)
    _refused(tmp_path, bytes(data), FormatError, "comment")


def test_prepended_data(tmp_path: Path) -> None:
    _refused(tmp_path, make_zip(ITEMS, prefix=b"#!/bin/sh\nexit 0\n"), FormatError)
    # offsets that account for the prefix (a self-extracting archive): still refused
    _refused(
        tmp_path,
        make_zip(ITEMS, prefix=b"MZ" + b"\0" * 62, prefix_counted=True),
        FormatError,
        "belong to no entry",
    )


def test_gap_between_entries(tmp_path: Path) -> None:
    data = make_zip(ITEMS, gap=b"\0" * 16, prefix_counted=True)
    _refused(tmp_path, data, FormatError, "belong to no entry")


def test_data_between_last_entry_and_central_directory(tmp_path: Path) -> None:
    data = bytearray(make_zip(ITEMS))
    eocd = len(data) - 22
    _cd_size, cd_offset = struct.unpack_from("<II", data, eocd + 12)
    data[cd_offset:cd_offset] = b"junk"
    struct.pack_into("<I", data, eocd + 4 + 16, cd_offset + 4)
    _refused(tmp_path, bytes(data), FormatError, "stray bytes")


def test_overlapping_entries(tmp_path: Path) -> None:
    """An entry whose local header lies inside another entry's data (nested entries)."""
    inner = local_header(b"b", b"y") + b"y"
    outer = local_header(b"a", inner)
    cd = central_header(b"a", inner, 0) + central_header(b"b", b"y", len(outer))
    end = len(outer) + len(inner)
    data = outer + inner + cd + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 2, 2, len(cd), end, 0)
    _refused(tmp_path, data, FormatError, "overlaps")


def test_duplicate_names(tmp_path: Path) -> None:
    _refused(tmp_path, make_zip([("a.txt", b"1"), ("a.txt", b"2")]), FormatError, "duplicate")


@pytest.mark.parametrize(
    "name",
    [
        "../evil",
        "a/../../evil",
        "/etc/passwd",
        "a\\..\\b",
        "C:evil",
        "C:/evil",
        "c:\\evil",
        "./a",
        "a//b",
    ],
)
def test_bad_entry_names(tmp_path: Path, name: str) -> None:
    _refused(tmp_path, make_zip([(name, b"x")]), FormatError)


@pytest.mark.parametrize(
    "names",
    [
        ("a.txt", "a.txt/b"),
        ("a.txt/b", "a.txt"),
        ("d/e", "d/e/f/g"),
        ("weights.safetensors", "weights.safetensors/x.txt"),
    ],
)
def test_entry_that_is_another_entrys_parent(tmp_path: Path, names: tuple[str, str]) -> None:
    """Unzipped, a file cannot also be a directory: one of the two could not be written."""
    info = _refused(tmp_path, make_zip([(n, b"x") for n in names]), FormatError, "parent directory")
    parent, child = sorted(names, key=len)
    assert f"{parent!r}" in str(info.value)
    assert f"{child!r}" in str(info.value)
    # siblings sharing a prefix but not a path segment are fine
    assert set(
        _open(
            _write(
                tmp_path, make_zip([("a.txt", b"1"), ("a.txtb/c", b"2"), ("a/b", b"3")]), "ok.zip"
            )
        )
    ) == {"a.txt", "a.txtb/c", "a/b"}


def test_name_not_utf8(tmp_path: Path) -> None:
    _refused(tmp_path, make_zip([(b"\xff\xfe.txt", b"x")]), FormatError, "UTF-8")


def test_symlink_entry(tmp_path: Path) -> None:
    data = make_zip([("link", b"/etc/passwd")], central={"ext_attr": 0o120777 << 16})
    _refused(tmp_path, data, FormatError, "not a regular file")


def test_directory_entry(tmp_path: Path) -> None:
    # by name (trailing slash) ...
    _refused(tmp_path, make_zip([("dir/", b"")]), FormatError)
    # ... and by attributes: Unix directory mode, or the MS-DOS directory bit
    _refused(
        tmp_path,
        make_zip([("dir", b"")], central={"ext_attr": 0o040755 << 16}),
        FormatError,
        "not a regular file",
    )
    _refused(
        tmp_path,
        make_zip([("dir", b"")], central={"ext_attr": 0x10}),
        FormatError,
        "not a regular file",
    )


def test_device_entry(tmp_path: Path) -> None:
    _refused(
        tmp_path,
        make_zip([("dev", b"")], central={"ext_attr": 0o020644 << 16}),
        FormatError,
        "not a regular file",
    )


def test_non_canonical_attributes(tmp_path: Path) -> None:
    """Attributes no hash covers must be the writer's, or signed bytes are malleable."""
    for central in ({"ext_attr": 0o100755 << 16}, {"ext_attr": (0o100644 << 16) | 1}):
        _refused(tmp_path, make_zip(ITEMS, central=central), FormatError, "non-canonical")


def test_local_name_differs_from_central(tmp_path: Path) -> None:
    data = make_zip([("good.txt", b"x")], local_name=b"evil.txt")
    _refused(tmp_path, data, FormatError, "local header names it")


@pytest.mark.parametrize(
    "local",
    [
        {"csize": 2, "usize": 2},
        {"usize": 4},
        {"csize": 4},
        {"crc": 1234},
        {"method": 8},
        {"flags": 0},
    ],
)
def test_local_header_disagrees_with_central(tmp_path: Path, local: dict[str, int]) -> None:
    data = make_zip([("a.txt", b"abc")], local=local)
    _refused(tmp_path, data, FormatError, "disagrees")


def test_local_timestamp_disagrees_with_central(tmp_path: Path) -> None:
    data = bytearray(make_zip([("a.txt", b"abc")]))
    struct.pack_into("<H", data, 10, 0x1234)  # local header's modification time
    _refused(tmp_path, bytes(data), FormatError, "disagrees")


def test_encrypted_flag(tmp_path: Path) -> None:
    data = make_zip([("a.txt", b"abc")], local={"flags": 0x0801}, central={"flags": 0x0801})
    _refused(tmp_path, data, FormatError, "encryption")


def test_strong_encryption_flag(tmp_path: Path) -> None:
    data = make_zip([("a.txt", b"abc")], local={"flags": 0x0841}, central={"flags": 0x0841})
    _refused(tmp_path, data, FormatError, "flags")


def test_data_descriptor_flag(tmp_path: Path) -> None:
    data = make_zip([("a.txt", b"abc")], local={"flags": 0x0808}, central={"flags": 0x0808})
    _refused(tmp_path, data, FormatError, "data descriptors")


@pytest.mark.parametrize("method", [1, 9, 12, 14, 93, 99])
def test_unknown_compression_method(tmp_path: Path, method: int) -> None:
    data = make_zip([("a.txt", b"abc")], local={"method": method}, central={"method": method})
    _refused(tmp_path, data, FormatError, "compression method")


def test_unknown_extra_field(tmp_path: Path) -> None:
    ut = struct.pack("<HHBI", 0x5455, 5, 1, 0)  # Info-ZIP extended timestamp
    for where in ("local", "central"):
        opts: dict[str, Any] = {where: {"extra": ut}}  # local= or central=
        data = make_zip([("a.txt", b"abc")], **opts)
        _refused(tmp_path, data, FormatError, "not allowed|extra")


def test_truncated_extra_field(tmp_path: Path) -> None:
    data = make_zip([("a.txt", b"abc")], central={"extra": b"\x01\x00\x08"})
    _refused(tmp_path, data, FormatError, "extra field")


def test_alignment_padding_must_be_zero(tmp_path: Path) -> None:
    pad = struct.pack("<HHH", 0xD935, 6, 4096) + b"\0\0\1\0"
    _refused(
        tmp_path,
        make_zip([("a.txt", b"abc")], local={"extra": pad}),
        FormatError,
        "alignment padding",
    )
    odd = struct.pack("<HHH", 0xD935, 2, 4097)
    _refused(
        tmp_path,
        make_zip([("a.txt", b"abc")], local={"extra": odd}),
        FormatError,
        "alignment padding",
    )
    # a record that aligns nothing is a second encoding of the same entry
    unaligned = struct.pack("<HHH", 0xD935, 6, 4096) + b"\0" * 4
    _refused(
        tmp_path,
        make_zip([("a.txt", b"abc")], local={"extra": unaligned}),
        FormatError,
        "not 4096-byte aligned",
    )
    gap = 4096 - (30 + len("a.txt") + 6)  # the local header, the name, the record's head
    ok = struct.pack("<HHH", 0xD935, 2 + gap, 4096) + b"\0" * gap
    with ZipReader(_write(tmp_path, make_zip([("a.txt", b"abc")], local={"extra": ok}))) as r:
        assert r.entries["a.txt"].aligned
        assert r.entries["a.txt"].data_offset == 4096
        assert r.read("a.txt", max_size=3) == b"abc"


def test_unneeded_zip64_field(tmp_path: Path) -> None:
    z64 = struct.pack("<HHQ", 0x0001, 8, 3)
    _refused(tmp_path, make_zip([("a.txt", b"abc")], central={"extra": z64}), FormatError, "zip64")


def test_entry_comment(tmp_path: Path) -> None:
    data = bytearray(make_zip([("a.txt", b"abc")]))
    cd_offset = struct.unpack_from("<I", data, len(data) - 6)[0]
    assert struct.unpack_from("<I", data, cd_offset)[0] == SIG_CENTRAL
    struct.pack_into("<H", data, cd_offset + 32, 1)  # comment length, no comment bytes
    _refused(tmp_path, bytes(data), FormatError)


def test_deflate_bomb_declared_ratio(tmp_path: Path) -> None:
    """Refused from the directory alone: 4 MiB of zeros deflate to a few KiB."""
    data = make_zip([("bomb.bin", b"\0" * (4 << 20))], method=8)
    csize = len(zlib.compress(b"\0" * (4 << 20))) - 6
    assert MAX_DEFLATE_RATIO * csize < (4 << 20)
    with pytest.raises(LimitError, match="zip bomb"):
        ZipReader(_write(tmp_path, data))


def test_deflate_bomb_lying_size(tmp_path: Path) -> None:
    """Declares 100 bytes, inflates to 4 MiB: inflation stops at the declared size."""
    big = b"\0" * (4 << 20)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    payload = c.compress(big) + c.flush()
    crc = zlib.crc32(big)
    sizes: dict[str, Any] = {"method": 8, "crc": crc, "csize": len(payload), "usize": 100}
    data = bytearray()
    data += (
        struct.pack("<IHHHHHIIIHH", SIG_LOCAL, 20, 0x0800, 8, 0, 33, crc, len(payload), 100, 8, 0)
        + b"bomb.bin"
        + payload
    )
    cd = central_header(b"bomb.bin", payload, 0, **sizes)
    data += cd + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(cd), len(payload) + 38, 0)
    p = _write(tmp_path, bytes(data))
    with ZipReader(p) as r, pytest.raises(FormatError, match="declared"):
        r.read("bomb.bin", max_size=1 << 30)


def test_total_declared_size_limit(tmp_path: Path) -> None:
    with pytest.raises(LimitError, match="uncompressed"):
        ZipReader(_write(tmp_path, make_zip(ITEMS)), max_total=100)


def test_entry_size_limit_on_read(tmp_path: Path) -> None:
    with ZipReader(_write(tmp_path, make_zip(ITEMS))) as r, pytest.raises(LimitError):
        r.read("dir/b.bin", max_size=10)


def test_invalid_deflate_data(tmp_path: Path) -> None:
    payload = b"\xff\xff\xff\xff"
    sizes: dict[str, Any] = {"method": 8, "crc": 0, "csize": 4, "usize": 4}
    lh = local_header(b"a", payload, **sizes)
    cd = central_header(b"a", payload, 0, **sizes)
    data = (
        lh
        + payload
        + cd
        + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(cd), len(lh) + 4, 0)
    )
    with ZipReader(_write(tmp_path, data)) as r, pytest.raises(FormatError, match="DEFLATE"):
        r.read("a", max_size=100)


def _with_padding_bit(content: bytes) -> bytes | None:
    """A raw DEFLATE stream of ``content`` with a set padding bit, if its last byte has one."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    payload = c.compress(content) + c.flush()
    for bit in range(7, 0, -1):
        flipped = payload[:-1] + bytes([payload[-1] | (1 << bit)])
        if flipped == payload:
            continue
        d = zlib.decompressobj(-15)
        try:
            if d.decompress(flipped) == content and d.eof and not d.unused_data:
                return flipped
        except zlib.error:
            pass
    return None


def test_empty_deflate_payload(tmp_path: Path) -> None:
    for usize in (0, 5):
        lh = local_header(b"a", b"", method=8, crc=0, usize=usize)
        cd = central_header(b"a", b"", 0, method=8, crc=0, usize=usize)
        data = lh + cd + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(cd), len(lh), 0)
        with ZipReader(_write(tmp_path, data)) as r, pytest.raises(FormatError):
            r.read("a", max_size=1000)


def test_deflate_padding_bits_must_be_zero(tmp_path: Path) -> None:
    """The bits after a DEFLATE stream's last code are covered by no hash: they must be 0."""
    for n in range(1, 40):
        content = b"bundle " * n + b"x"
        flipped = _with_padding_bit(content)
        if flipped is not None:
            break
    assert flipped is not None, "no DEFLATE stream ending mid-byte in 39 tries"
    crc = zlib.crc32(content)
    lh = local_header(b"a", flipped, method=8, crc=crc, usize=len(content))
    cd = central_header(b"a", flipped, 0, method=8, crc=crc, usize=len(content))
    data = (
        lh
        + flipped
        + cd
        + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(cd), len(lh) + len(flipped), 0)
    )
    with ZipReader(_write(tmp_path, data)) as r, pytest.raises(FormatError, match="padding bits"):
        r.read("a", max_size=1000)


def test_crc_mismatch_is_an_integrity_error(tmp_path: Path) -> None:
    for method in (0, 8):
        data = make_zip([("a.txt", b"abc")], local={"crc": 1}, central={"crc": 1}, method=method)
        _refused(tmp_path, data, IntegrityError, "CRC")
    # streamed reads check the CRC too
    data = make_zip([("a.txt", b"abc")], local={"crc": 1}, central={"crc": 1})
    with ZipReader(_write(tmp_path, data)) as r, pytest.raises(IntegrityError):
        b"".join(r.iter_entry("a.txt", max_size=10))


def test_stored_sizes_must_agree(tmp_path: Path) -> None:
    data = make_zip([("a.txt", b"abc")], local={"usize": 4}, central={"usize": 4})
    _refused(tmp_path, data, FormatError, "stored entry")


def test_truncated_central_directory(tmp_path: Path) -> None:
    # the end record claims more entries than the directory holds
    _refused(tmp_path, make_zip(ITEMS, count=3), FormatError, "truncated")
    # the end record claims a longer directory than there is room for
    _refused(tmp_path, make_zip(ITEMS, cd_size_delta=10), FormatError, "central directory")
    # or a shorter one, cutting the last entry
    _refused(tmp_path, make_zip(ITEMS, cd_size_delta=-10), FormatError, "central directory")
    # and a file cut in the middle of its directory has no end record at all
    good = make_zip(ITEMS)
    cd_offset = struct.unpack_from("<I", good, len(good) - 6)[0]
    _refused(tmp_path, good[: cd_offset + 20], FormatError)


def test_bad_central_signature(tmp_path: Path) -> None:
    data = bytearray(make_zip(ITEMS))
    cd_offset = struct.unpack_from("<I", data, len(data) - 6)[0]
    data[cd_offset] ^= 0xFF
    _refused(tmp_path, bytes(data), FormatError, "signature")


def test_entry_counts_disagree(tmp_path: Path) -> None:
    data = bytearray(make_zip(ITEMS))
    struct.pack_into("<H", data, len(data) - 22 + 8, 1)  # entries on this disk
    _refused(tmp_path, bytes(data), FormatError, "disagree")


def test_multi_disk(tmp_path: Path) -> None:
    data = bytearray(make_zip(ITEMS))
    struct.pack_into("<H", data, len(data) - 22 + 4, 1)
    _refused(tmp_path, bytes(data), FormatError, "multi-disk")


def test_too_many_entries(tmp_path: Path) -> None:
    items = [(f"e{i}", b"") for i in range(MAX_ENTRIES + 1)]
    _refused(tmp_path, make_zip(items), LimitError, "entries")
    assert len(_open(_write(tmp_path, make_zip(items[:MAX_ENTRIES])))) == MAX_ENTRIES


def test_central_directory_too_large(tmp_path: Path) -> None:
    data = bytearray(make_zip(ITEMS))
    struct.pack_into("<I", data, len(data) - 22 + 12, (1 << 20) + 1)
    _refused(tmp_path, bytes(data), LimitError, "central directory")


def test_writer_output_with_patched_local_name(
    signed_bundle: tuple[Path, bundle.PrivateKey], tmp_path: Path
) -> None:
    """Patching a good bundle: rename the manifest in its local header only."""
    path, _ = signed_bundle
    data = bytearray(path.read_bytes())
    at = data.find(struct.pack("<I", SIG_LOCAL))
    while at >= 0:
        nlen = struct.unpack_from("<H", data, at + 26)[0]
        if bytes(data[at + 30 : at + 30 + nlen]) == b"manifest.json":
            data[at + 30 : at + 30 + nlen] = b"manifest.jso0"
            break
        at = data.find(struct.pack("<I", SIG_LOCAL), at + 4)
    _refused(tmp_path, bytes(data), FormatError, "local header names it")


def test_write_raw_round_trip(tmp_path: Path) -> None:
    p = write_raw(
        tmp_path / "r.zip", [EntryData("a", b"1"), EntryData("b", b"2" * 5000, compress=True)]
    )
    assert _open(p) == {"a": b"1", "b": b"2" * 5000}


# --------------------------------------------------------------------------- names


GOOD_NAMES = [
    "model.onnx",
    "weights.safetensors",
    "signatures/" + "a" * 64 + ".sig",
    "a/b/c.txt",
    ".hidden",
    "a..b",
    "..a",
    "a.",
    "résumé.txt",
    "空.bin",
    "a b",
    "x" * 255,
]
BAD_NAMES = [
    "",
    "/",
    "/abs",
    "/etc/passwd",
    "..",
    "../x",
    "a/../b",
    "a/..",
    ".",
    "./a",
    "a/./b",
    "a//b",
    "a/",
    "dir/",
    "a\\b",
    "..\\x",
    "C:",
    "C:x",
    "C:/x",
    "c:\\x",
    "a:b",
    "file.txt:stream",
    "a\x00b",
    "a\nb",
    "\x1f",
    "a\x7f",
    "x" * 256,
    "é" * 128,
]


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_check_entry_name_accepts(name: str) -> None:
    check_entry_name(name)


@pytest.mark.parametrize("name", BAD_NAMES)
def test_check_entry_name_refuses(name: str) -> None:
    with pytest.raises(FormatError) as info:
        check_entry_name(name)
    assert type(info.value) is FormatError
