"""The zip container: a deterministic, aligned writer and a defensive reader.

Both are written here rather than taken from :mod:`zipfile` because the format
needs what ``zipfile`` does not give: entries stored at 4096-byte aligned data
offsets (so onnxruntime can read weights straight out of the bundle), byte-exact
output for the same input, and a reader that refuses every ambiguity a zip can
carry -- local headers that disagree with the central directory, overlapping or
interleaved entries, data before, between or after entries, symlinks, encrypted
or data-descriptor entries, unknown extra fields, non-canonical names, and
deflate bombs -- before a single entry is decompressed.

Layout rules the reader enforces (see spec/FORMAT.md, "Container"):
entries are contiguous from offset 0, the central directory follows the last
entry immediately, the end-of-central-directory record ends the file (no
comment), methods are STORED or DEFLATE only, general purpose flags are 0 or
0x0800 (UTF-8 names).
"""

from __future__ import annotations

import os
import stat
import struct
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..errors import FormatError, IntegrityError, LimitError

__all__ = [
    "ALIGNMENT",
    "Entry",
    "EntryData",
    "ZipReader",
    "ZipWriter",
    "check_entry_name",
    "journal_path",
]

ALIGNMENT = 4096
"""Data offset alignment of STORED entries that ask for it (the weights)."""

MAX_ENTRIES = 256
MAX_CENTRAL_DIRECTORY = 1 << 20
MAX_NAME_BYTES = 255
MAX_DEFLATE_RATIO = 200
"""Largest inflated/compressed ratio allowed for entries over 1 MiB inflated."""

_STORED, _DEFLATED = 0, 8
_FLAG_UTF8 = 0x0800
_DOS_DATE_1980 = (0 << 9) | (1 << 5) | 1  # 1980-01-01
_DOS_TIME_0 = 0
_VERSION_MADE_BY = (3 << 8) | 20  # Unix, zip 2.0
_EXTERNAL_ATTR = 0o100644 << 16  # regular file, rw-r--r--
_EXTRA_ZIP64 = 0x0001
_EXTRA_ALIGN = 0xD935  # the padding record Android's zipalign uses
_ALLOWED_EXTRA = {_EXTRA_ZIP64, _EXTRA_ALIGN}
_NEEDED_ZIP64, _NEEDED_PLAIN = 45, 20
_U32 = 0xFFFFFFFF
_U16 = 0xFFFF

_LOCAL = struct.Struct("<IHHHHHIIIHH")
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
_EOCD = struct.Struct("<IHHHHIIH")
_EOCD64 = struct.Struct("<IQHHIIQQQQ")
_LOCATOR64 = struct.Struct("<IIQI")
_SIG_LOCAL, _SIG_CENTRAL, _SIG_EOCD = 0x04034B50, 0x02014B50, 0x06054B50
_SIG_EOCD64, _SIG_LOCATOR64 = 0x06064B50, 0x07064B50


def check_entry_name(name: str) -> None:
    """Refuse any entry name that is not a canonical relative POSIX path."""
    if not name:
        raise FormatError("empty entry name")
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError as e:  # a lone surrogate, from a JSON "\ud800" escape
        raise FormatError(f"entry name {name!r} is not valid Unicode: {e.reason}") from e
    if len(encoded) > MAX_NAME_BYTES:
        raise FormatError(f"entry name longer than {MAX_NAME_BYTES} bytes: {name[:40]!r}...")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise FormatError(f"entry name {name!r} contains control characters", entry=name)
    if "\\" in name:
        raise FormatError(f"entry name {name!r} contains a backslash", entry=name)
    if ":" in name:
        raise FormatError(f"entry name {name!r} contains ':' (drive letter or stream)", entry=name)
    if name.startswith("/"):
        raise FormatError(f"entry name {name!r} is absolute", entry=name)
    for part in name.split("/"):
        if part in ("", ".", ".."):
            raise FormatError(
                f"entry name {name!r} is not canonical (empty, '.' or '..' segment)", entry=name
            )


def _check_no_file_is_a_parent(names: Iterable[str]) -> None:
    """Refuse ``a.txt`` beside ``a.txt/b``: unzipped, a path cannot be a file and a
    directory at once, so one of them could not be extracted (spec/FORMAT.md §3)."""
    have = set(names)
    for name in sorted(have):
        parts = name.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent in have:
                raise FormatError(
                    f"entry {parent!r} is also the parent directory of entry "
                    f"{name!r}; unzipped, one of them could not be written",
                    entry=parent,
                )


# --------------------------------------------------------------------------- writer


def journal_path(path: str | os.PathLike[str]) -> Path:
    """The undo journal of an in-place sign of ``path``: ``.<name>.sign-journal`` beside it.

    Here rather than with the signer (:mod:`bundle.export.writer`) because readers
    look for it too: while it exists a sign may be rewriting the archive's tail.
    """
    target = Path(path)
    return target.parent / f".{target.name}.sign-journal"


@dataclass(frozen=True)
class EntryData:
    """One entry to write: its name, its bytes (or chunks of known total size), how."""

    name: str
    data: bytes | None = None
    chunks: Iterable[bytes] | None = None
    size: int | None = None
    compress: bool = False
    align: bool = False

    def __post_init__(self) -> None:
        check_entry_name(self.name)
        if (self.data is None) == (self.chunks is None):
            raise ValueError("give exactly one of data or chunks")
        if self.chunks is not None and (self.size is None or self.compress):
            raise ValueError("streamed entries need a size and are stored uncompressed")


@dataclass
class _Written:
    name: bytes
    method: int
    crc: int
    csize: int
    size: int
    offset: int

    @classmethod
    def of(cls, e: Entry, offset: int) -> _Written:
        """The central-directory record of an entry kept or copied to ``offset``."""
        return cls(e.name.encode("utf-8"), e.method, e.crc32, e.compressed_size, e.size, offset)


@dataclass
class _Open:
    """A STORED entry being streamed: what its local header needs once the CRC is known."""

    name: bytes
    size: int
    offset: int
    extra: bytes
    zip64: bool
    written: int = 0


def _copy_range(reader: ZipReader, start: int, end: int, dst: BinaryIO) -> None:
    """Copy the source archive's bytes [start, end) to the end of ``dst``."""
    dst.flush()
    at = dst.tell()
    src = reader.fileno()
    pos = start
    if hasattr(os, "copy_file_range"):
        try:
            while pos < end:
                n = os.copy_file_range(src, dst.fileno(), end - pos, pos, at + pos - start)
                if n <= 0:
                    break
                pos += n
        except OSError:
            pass  # not supported across these files: copy through user space below
    dst.seek(at + pos - start)
    for chunk in reader.iter_range(pos, end):
        dst.write(chunk)
    if dst.tell() != at + end - start:
        raise FormatError("the bundle was truncated while being copied")


class ZipWriter:
    """Writes a deterministic zip to a seekable binary file, entry by entry.

    Same entries in the same order give the same bytes: fixed timestamps,
    attributes and versions, no comments, zip64 fields only where a size or
    offset needs them. ``write`` returns the offset of the entry's data, which
    is what ONNX external-data offsets into the bundle are computed from.
    """

    def __init__(self, fp: BinaryIO) -> None:
        self._fp = fp
        self._entries: list[_Written] = []
        self._names: set[str] = set()
        self._open: _Open | None = None

    @classmethod
    def resume(cls, fp: BinaryIO, kept: Sequence[Entry]) -> ZipWriter:
        """A writer continuing an archive after ``kept``, its first entries in file order.

        ``kept`` are entries of a checked :class:`ZipReader` lying back to back from
        offset 0; ``fp.tell()`` must be where the last one ends. What is written next,
        and the central directory :meth:`close` writes, are the bytes a writer that
        had written ``kept`` itself would write there: adding or replacing the last
        entries (the signatures) rewrites only the archive's tail, never the content.
        """
        w = cls(fp)
        end = 0
        for e in kept:
            if e.header_offset != end:
                raise ValueError(f"entry {e.name} does not follow the previous kept entry")
            w._claim(e.name)
            w._entries.append(_Written.of(e, e.header_offset))
            end = e.data_offset + e.compressed_size
        if fp.tell() != end:
            raise ValueError(f"the writer is at {fp.tell()}, the kept entries end at {end}")
        return w

    def _claim(self, name: str) -> None:
        if self._open is not None:
            raise ValueError(f"entry {self._open.name.decode()} is still being written")
        if name in self._names:
            raise ValueError(f"duplicate entry {name}")
        try:
            _check_no_file_is_a_parent([*self._names, name])
        except FormatError as e:  # the reader would refuse the result
            raise ValueError(str(e)) from None
        self._names.add(name)

    def write(self, entry: EntryData) -> int:
        """Append one entry; return the absolute offset of its first data byte."""
        if entry.data is None:
            assert entry.chunks is not None
            assert entry.size is not None
            data_offset = self.begin_stored(entry.name, entry.size, align=entry.align)
            crc = 0
            for chunk in entry.chunks:
                self.write_data(chunk)
                crc = zlib.crc32(chunk, crc)
            self.end_stored(crc)
            return data_offset
        self._claim(entry.name)
        fp = self._fp
        offset = fp.tell()
        name = entry.name.encode("utf-8")
        raw = entry.data
        size = len(raw)
        crc = zlib.crc32(raw)
        if entry.compress:
            comp = zlib.compressobj(9, zlib.DEFLATED, -15, 9)
            payload = comp.compress(raw) + comp.flush()
            method = _DEFLATED
        else:
            payload, method = raw, _STORED
        csize = len(payload)
        zip64, extra = self._extra(offset, name, size, csize, entry.align)
        fp.write(self._local_header(name, method, crc, csize, size, extra, zip64))
        data_offset = fp.tell()
        fp.write(payload)
        self._entries.append(_Written(name, method, crc, csize, size, offset))
        return data_offset

    @staticmethod
    def _extra(
        offset: int,
        name: bytes,
        size: int,
        csize: int,
        align: bool,
    ) -> tuple[bool, bytes]:
        zip64 = size >= _U32 or csize >= _U32
        extra = struct.pack("<HHQQ", _EXTRA_ZIP64, 16, size, csize) if zip64 else b""
        if align:
            base = offset + _LOCAL.size + len(name) + len(extra)
            pad = (-(base + 6)) % ALIGNMENT + 6
            extra += struct.pack("<HHH", _EXTRA_ALIGN, pad - 4, ALIGNMENT) + b"\0" * (pad - 6)
        return zip64, extra

    def begin_stored(self, name: str, size: int, *, align: bool = False) -> int:
        """Start a STORED entry of ``size`` bytes; return the offset of its first data byte.

        The caller writes the data with :meth:`write_data` and finishes with
        :meth:`end_stored`, giving the CRC-32 (which hashing threads may compute
        while the data is written, see :mod:`bundle.digest`).
        """
        check_entry_name(name)
        self._claim(name)
        fp = self._fp
        offset = fp.tell()
        raw = name.encode("utf-8")
        zip64, extra = self._extra(offset, raw, size, size, align)
        fp.write(self._local_header(raw, _STORED, 0, size, size, extra, zip64))
        self._open = _Open(raw, size, offset, extra, zip64)
        return fp.tell()

    def write_data(self, chunk: bytes | memoryview) -> int:
        """Write the next bytes of the entry begun by :meth:`begin_stored`; bytes so far."""
        e = self._open
        if e is None:
            raise ValueError("no entry is being written")
        if e.written + len(chunk) > e.size:
            raise ValueError(f"{e.name.decode()}: more than the declared {e.size} bytes")
        self._fp.write(chunk)
        e.written += len(chunk)
        return e.written

    def end_stored(self, crc: int) -> None:
        """Finish the entry begun by :meth:`begin_stored`: check its size, set its CRC-32."""
        e = self._open
        if e is None:
            raise ValueError("no entry is being written")
        if e.written != e.size:
            raise ValueError(f"{e.name.decode()}: streamed {e.written} bytes, declared {e.size}")
        fp = self._fp
        end = fp.tell()
        fp.seek(e.offset)
        fp.write(self._local_header(e.name, _STORED, crc, e.size, e.size, e.extra, e.zip64))
        fp.seek(end)
        self._open = None
        self._entries.append(_Written(e.name, _STORED, crc, e.size, e.size, e.offset))

    def copy_entry(self, reader: ZipReader, entry: Entry) -> None:
        """Append an entry of another archive verbatim (its local header included)."""
        self.copy_entries(reader, [entry])

    def copy_entries(self, reader: ZipReader, entries: list[Entry]) -> None:
        """Append entries of another archive verbatim, local headers included.

        Entries that lie back to back in the source (a checked archive's do) go in
        one in-kernel copy -- a reflink on file systems that share extents -- so
        re-signing a large bundle does not pass its weights through Python.
        """
        for e in entries:
            self._claim(e.name)
        runs: list[list[Entry]] = []
        for e in entries:
            if runs and runs[-1][-1].data_offset + runs[-1][-1].compressed_size == e.header_offset:
                runs[-1].append(e)
            else:
                runs.append([e])
        for run in runs:
            start = self._fp.tell()
            _copy_range(
                reader,
                run[0].header_offset,
                run[-1].data_offset + run[-1].compressed_size,
                self._fp,
            )
            for e in run:
                self._entries.append(_Written.of(e, start + e.header_offset - run[0].header_offset))

    @staticmethod
    def _local_header(
        name: bytes, method: int, crc: int, csize: int, size: int, extra: bytes, zip64: bool
    ) -> bytes:
        return (
            _LOCAL.pack(
                _SIG_LOCAL,
                45 if zip64 else 20,
                _FLAG_UTF8,
                method,
                _DOS_TIME_0,
                _DOS_DATE_1980,
                crc,
                _U32 if zip64 else csize,
                _U32 if zip64 else size,
                len(name),
                len(extra),
            )
            + name
            + extra
        )

    def close(self) -> None:
        """Write the central directory and end records."""
        if self._open is not None:
            raise ValueError(f"entry {self._open.name.decode()} was not finished")
        fp = self._fp
        cd_start = fp.tell()
        for e in self._entries:
            fields = []
            if e.size >= _U32 or e.csize >= _U32:
                fields += [e.size, e.csize]
            if e.offset >= _U32:
                fields.append(e.offset)
            extra = (
                struct.pack(f"<HH{len(fields)}Q", _EXTRA_ZIP64, 8 * len(fields), *fields)
                if fields
                else b""
            )
            big = bool(fields)
            fp.write(
                _CENTRAL.pack(
                    _SIG_CENTRAL,
                    _VERSION_MADE_BY,
                    45 if big else 20,
                    _FLAG_UTF8,
                    e.method,
                    _DOS_TIME_0,
                    _DOS_DATE_1980,
                    e.crc,
                    _U32 if e.csize >= _U32 or e.size >= _U32 else e.csize,
                    _U32 if e.csize >= _U32 or e.size >= _U32 else e.size,
                    len(e.name),
                    len(extra),
                    0,
                    0,
                    0,
                    _EXTERNAL_ATTR,
                    _U32 if e.offset >= _U32 else e.offset,
                )
                + e.name
                + extra
            )
        cd_end = fp.tell()
        count, cd_size = len(self._entries), cd_end - cd_start
        if count >= _U16 or cd_size >= _U32 or cd_start >= _U32:
            fp.write(
                _EOCD64.pack(
                    _SIG_EOCD64, 44, _VERSION_MADE_BY, 45, 0, 0, count, count, cd_size, cd_start
                )
            )
            fp.write(_LOCATOR64.pack(_SIG_LOCATOR64, 0, cd_end, 1))
            fp.write(_EOCD.pack(_SIG_EOCD, 0, 0, _U16, _U16, _U32, _U32, 0))
        else:
            fp.write(_EOCD.pack(_SIG_EOCD, 0, 0, count, count, cd_size, cd_start, 0))


# --------------------------------------------------------------------------- reader


@dataclass(frozen=True)
class Entry:
    """One entry of a checked archive: where its data lies and how it is stored."""

    name: str
    method: int
    crc32: int
    compressed_size: int
    size: int
    header_offset: int
    data_offset: int
    aligned: bool = False
    """The local header carries the alignment record (and the data is aligned)."""

    @property
    def stored(self) -> bool:
        """True when the entry's bytes lie in the file as they are (no deflate)."""
        return self.method == _STORED


def _parse_extra(data: bytes, where: str) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    pos = 0
    while pos < len(data):
        if pos + 4 > len(data):
            raise FormatError(f"{where}: truncated extra field")
        hid, hlen = struct.unpack_from("<HH", data, pos)
        pos += 4
        if pos + hlen > len(data):
            raise FormatError(f"{where}: extra field 0x{hid:04x} runs past its header")
        if hid not in _ALLOWED_EXTRA:
            raise FormatError(f"{where}: extra field 0x{hid:04x} is not allowed in a bundle")
        if hid in out:
            raise FormatError(f"{where}: extra field 0x{hid:04x} appears twice")
        align = struct.unpack_from("<H", data, pos)[0] if hlen >= 2 else 0
        if hid == _EXTRA_ALIGN and (
            not align or align & (align - 1) or data[pos + 2 : pos + hlen].count(0) != hlen - 2
        ):
            raise FormatError(
                f"{where}: alignment padding must be a power-of-two "
                "alignment followed by zero bytes"
            )
        out[hid] = data[pos : pos + hlen]
        pos += hlen
    return out


def _zip64_values(extra: dict[int, bytes], wanted: list[str], where: str) -> dict[str, int]:
    raw = extra.get(_EXTRA_ZIP64)
    if not wanted:
        if raw is not None:
            raise FormatError(f"{where}: zip64 extra field present but no field needs it")
        return {}
    if raw is None or len(raw) != 8 * len(wanted):
        raise FormatError(f"{where}: zip64 extra field missing or of the wrong length")
    values = struct.unpack(f"<{len(wanted)}Q", raw)
    return dict(zip(wanted, values, strict=True))


def _check_final_bits(before: zlib._Decompress, last: int, tail: bytes, name: str) -> None:
    """Refuse set padding bits after the end of a DEFLATE stream: no hash covers them.

    ``before`` has inflated all but the ``last`` byte, which inflated to ``tail``. A set
    bit of ``last`` whose clearing changes nothing is padding (zlib writes zeros there).
    """
    for bit in range(8):
        if last >> bit & 1:
            probe = before.copy()
            try:
                out = probe.decompress(bytes([last & ~(1 << bit)]), len(tail) + 1)
            except zlib.error:
                continue
            if probe.eof and not probe.unused_data and out == tail:
                raise FormatError(
                    f"entry {name!r}: non-zero padding bits follow the end of its DEFLATE stream",
                    entry=name,
                )


def _check_zip64_markers(name: str, wanted: list[str], usize: int, csize: int, offset: int) -> None:
    """Zip64 fields exactly where the writer puts them: no hash covers these bytes.

    Both sizes are marked when either does not fit in 32 bits, the offset when it
    does not; a marker on a value that fits would be a second encoding of the entry.
    """
    expected = (["size", "csize"] if usize >= _U32 or csize >= _U32 else []) + (
        ["offset"] if offset >= _U32 else []
    )
    if wanted != expected:
        raise FormatError(
            f"entry {name!r}: zip64 markers on {wanted or 'nothing'} where the "
            f"writer marks {expected or 'nothing'} (a value that fits in 32 "
            "bits is marked, or only one of the two sizes is)",
            entry=name,
        )


def _check_alignment(name: str, extra: dict[int, bytes]) -> None:
    """The alignment record is the writer's: last, for ALIGNMENT, under ALIGNMENT zeros.

    The writer pads to the next boundary, never a whole ALIGNMENT more: extra padding
    would move the data (and every later entry) while every hash still matched.
    """
    record = extra[_EXTRA_ALIGN]
    align = struct.unpack_from("<H", record)[0]
    if list(extra)[-1] != _EXTRA_ALIGN or align != ALIGNMENT or len(record) - 2 >= ALIGNMENT:
        raise FormatError(
            f"entry {name!r}: alignment padding is not the writer's (a "
            f"{ALIGNMENT}-byte alignment record, last in the local header, "
            f"with fewer than {ALIGNMENT} zero bytes)",
            entry=name,
        )


_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _open_regular(path: str) -> BinaryIO:
    """``path`` opened for reading, refused unless it is a regular file.

    O_NONBLOCK: open() on a FIFO would otherwise wait for a writer forever,
    and a device may block or never end. The type is checked on the open
    descriptor (fstat), so nothing can be swapped in between check and use.
    """
    flags = (
        os.O_RDONLY
        | getattr(os, "O_NONBLOCK", 0)
        | getattr(os, "O_CLOEXEC", 0)
        | getattr(os, "O_BINARY", 0)
    )
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise FormatError(f"cannot open {path}: {e.strerror}") from e
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((k for test, k in _FILE_KINDS if test(mode)), f"mode {mode:o}")
            raise FormatError(f"{path} is not a regular file ({kind}); a bundle is a file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


class ZipReader:
    """A zip archive whose structure has been checked, opened once by descriptor.

    Construction reads only the end records, the central directory and each
    local header; no entry data. All later reads go through the same open file.
    """

    def __init__(self, path: str | os.PathLike[str], *, max_total: int = 1 << 40) -> None:
        self.path = os.fspath(path)
        self._fp: BinaryIO = _open_regular(self.path)
        try:
            self.entries = self._check(max_total)
        except BaseException:
            self._fp.close()
            raise

    def __enter__(self) -> ZipReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the underlying file."""
        self._fp.close()

    def fileno(self) -> int:
        """The open file's descriptor (for positional reads by hashing threads)."""
        return self._fp.fileno()

    def _pread(self, offset: int, size: int, what: str) -> bytes:
        self._fp.seek(offset)
        data = self._fp.read(size)
        if len(data) != size:
            raise FormatError(f"truncated file: {what} runs past the end of the file")
        return data

    def _check(self, max_total: int) -> dict[str, Entry]:
        file_size = os.fstat(self._fp.fileno()).st_size
        if file_size == 0:
            raise FormatError("empty file: not a bundle")
        if file_size < _EOCD.size:
            raise FormatError(f"file of {file_size} bytes is too short to be a zip archive")
        eocd_at = file_size - _EOCD.size
        (sig, disk, cd_disk, n_disk, n_total, cd_size, cd_offset, comment_len) = _EOCD.unpack(
            self._pread(eocd_at, _EOCD.size, "end of central directory")
        )
        if sig != _SIG_EOCD:
            tail = self._pread(max(0, file_size - 66000), min(file_size, 66000), "tail")
            found = tail.rfind(b"PK\x05\x06")
            if found >= 0 and found + _EOCD.size > len(tail):
                raise FormatError("truncated file: the zip end record is cut short")
            if found >= 0:
                raise FormatError(
                    "data or a comment follows the zip end record; "
                    "bundles end exactly at the end record"
                )
            raise FormatError("not a zip archive (no end-of-central-directory record)")
        if comment_len:
            raise FormatError("zip comment present; bundles carry none")
        if disk or cd_disk:
            raise FormatError("multi-disk zip archives are not bundles")
        cd_end = eocd_at
        if _U16 in (n_disk, n_total) or _U32 in (cd_size, cd_offset):
            if (n_disk, n_total, cd_size, cd_offset) != (_U16, _U16, _U32, _U32):
                raise FormatError(
                    "zip64 end records announced by an end record that marks "
                    "only some of its fields; the writer marks all four"
                )
            if eocd_at < _LOCATOR64.size + _EOCD64.size:
                raise FormatError("zip64 end records missing")
            loc_at = eocd_at - _LOCATOR64.size
            lsig, ldisk, eocd64_at, ndisks = _LOCATOR64.unpack(
                self._pread(loc_at, _LOCATOR64.size, "zip64 locator")
            )
            if lsig != _SIG_LOCATOR64 or ldisk != 0 or ndisks != 1:
                raise FormatError("zip64 end-of-central-directory locator is invalid")
            if eocd64_at != loc_at - _EOCD64.size:
                raise FormatError("zip64 end record is not immediately before its locator")
            (s64, rec_size, made64, need64, d64, cdd64, n_disk, n_total, cd_size, cd_offset) = (
                _EOCD64.unpack(self._pread(eocd64_at, _EOCD64.size, "zip64 end record"))
            )
            if s64 != _SIG_EOCD64 or rec_size != 44 or d64 or cdd64:
                raise FormatError("zip64 end-of-central-directory record is invalid")
            if (made64, need64) != (_VERSION_MADE_BY, _NEEDED_ZIP64):
                raise FormatError(
                    f"zip64 end records carry versions 0x{made64:04x}/{need64}, "
                    f"not the writer's 0x{_VERSION_MADE_BY:04x}/{_NEEDED_ZIP64}"
                )
            # Bytes no hash covers must be canonical: zip64 end records only when needed.
            if n_total < _U16 and cd_size < _U32 and cd_offset < _U32:
                raise FormatError(
                    "zip64 end records, but no count, size or offset needs "
                    "them; bundles use them only when one does not fit"
                )
            cd_end = eocd64_at
        if n_disk != n_total:
            raise FormatError("entry counts in the end record disagree")
        if n_total > MAX_ENTRIES:
            raise LimitError(f"archive has {n_total} entries; the limit is {MAX_ENTRIES}")
        if cd_size > MAX_CENTRAL_DIRECTORY:
            raise LimitError(
                f"central directory of {cd_size} bytes exceeds the limit of {MAX_CENTRAL_DIRECTORY}"
            )
        if cd_offset + cd_size != cd_end:
            raise FormatError(
                "central directory does not end where the end record begins "
                "(truncated, or data between them)"
            )
        cd = self._pread(cd_offset, cd_size, "central directory")
        entries: dict[str, Entry] = {}
        pos = 0
        total = 0
        for index in range(n_total):
            if pos + _CENTRAL.size > len(cd):
                raise FormatError(f"central directory truncated at entry {index}")
            (
                sig,
                made,
                need,
                flags,
                method,
                mtime,
                mdate,
                crc,
                csize,
                usize,
                nlen,
                xlen,
                clen,
                disk_start,
                int_attr,
                ext_attr,
                offset,
            ) = _CENTRAL.unpack_from(cd, pos)
            if sig != _SIG_CENTRAL:
                raise FormatError(f"central directory entry {index} has a bad signature")
            pos += _CENTRAL.size
            raw_name = cd[pos : pos + nlen]
            extra_raw = cd[pos + nlen : pos + nlen + xlen]
            pos += nlen + xlen + clen
            if pos > len(cd):
                raise FormatError(f"central directory entry {index} runs past the directory")
            try:
                name = raw_name.decode("utf-8")
            except UnicodeDecodeError as e:
                raise FormatError(f"entry {index} name is not valid UTF-8: {raw_name!r}") from e
            check_entry_name(name)
            if name in entries:
                raise FormatError(f"duplicate entry name {name!r}", entry=name)
            if clen:
                raise FormatError(f"entry {name!r} has a comment; bundles carry none", entry=name)
            if disk_start:
                raise FormatError(f"entry {name!r} starts on another disk", entry=name)
            if flags & ~_FLAG_UTF8:
                raise FormatError(
                    f"entry {name!r} has general-purpose flags 0x{flags:04x} "
                    "(encryption or data descriptors are not allowed)",
                    entry=name,
                )
            if flags != _FLAG_UTF8:
                raise FormatError(
                    f"entry {name!r} has general-purpose flags 0x{flags:04x}; "
                    "bundles set exactly 0x0800 (UTF-8 names)",
                    entry=name,
                )
            if (mtime, mdate) != (_DOS_TIME_0, _DOS_DATE_1980):
                raise FormatError(
                    f"entry {name!r} has a non-canonical timestamp (time "
                    f"0x{mtime:04x}, date 0x{mdate:04x}); bundles carry "
                    "1980-01-01 00:00",
                    entry=name,
                )
            if method not in (_STORED, _DEFLATED):
                raise FormatError(
                    f"entry {name!r} uses compression method {method}; "
                    "only STORED (0) and DEFLATE (8) are allowed",
                    entry=name,
                )
            mode = ext_attr >> 16
            if (mode & 0o170000) not in (0, 0o100000) or ext_attr & 0x10:
                raise FormatError(
                    f"entry {name!r} is not a regular file "
                    f"(mode {mode:o}: symlink, directory or device)",
                    entry=name,
                )
            # Fields no hash covers must be canonical, or a bundle's bytes could change
            # while it still verifies.
            wanted = [
                k for k, v in (("size", usize), ("csize", csize), ("offset", offset)) if v == _U32
            ]
            if (
                ext_attr != _EXTERNAL_ATTR
                or int_attr
                or made != _VERSION_MADE_BY
                or need != (_NEEDED_ZIP64 if wanted else _NEEDED_PLAIN)
            ):
                raise FormatError(
                    f"entry {name!r} has non-canonical attributes (made by "
                    f"0x{made:04x}, needs {need}, internal {int_attr}, external "
                    f"0x{ext_attr:08x}); bundles hold mode 0644 regular files",
                    entry=name,
                )
            extra = _parse_extra(extra_raw, f"entry {name!r}")
            if _EXTRA_ALIGN in extra:
                raise FormatError(
                    f"entry {name!r}: alignment padding in the central "
                    "directory; it belongs in local headers only",
                    entry=name,
                )
            big = _zip64_values(extra, wanted, f"entry {name!r}")
            usize = big.get("size", usize)
            csize = big.get("csize", csize)
            offset = big.get("offset", offset)
            _check_zip64_markers(name, wanted, usize, csize, offset)
            if method == _STORED and csize != usize:
                raise FormatError(
                    f"stored entry {name!r} declares {csize} compressed and "
                    f"{usize} uncompressed bytes",
                    entry=name,
                )
            if method == _DEFLATED and usize > (1 << 20) and usize > MAX_DEFLATE_RATIO * csize:
                raise LimitError(
                    f"entry {name!r} inflates {csize} bytes to {usize} "
                    f"(ratio over {MAX_DEFLATE_RATIO}): refused as a zip bomb",
                    entry=name,
                )
            total += usize
            if total > max_total:
                raise LimitError(f"archive declares more than {max_total} uncompressed bytes")
            data_at = self._check_local(
                name, raw_name, flags, method, crc, csize, usize, offset, cd_offset, (mtime, mdate)
            )
            entries[name] = Entry(name, method, crc, csize, usize, offset, *data_at)
        if pos != len(cd):
            raise FormatError("central directory holds bytes after its last entry")
        _check_no_file_is_a_parent(entries)
        self._check_layout(entries, cd_offset)
        return entries

    def _check_local(
        self,
        name: str,
        raw_name: bytes,
        flags: int,
        method: int,
        crc: int,
        csize: int,
        usize: int,
        offset: int,
        cd_offset: int,
        stamp: tuple[int, int] = (_DOS_TIME_0, _DOS_DATE_1980),
    ) -> tuple[int, bool]:
        """Check the local header against the central directory.

        Returns the data offset and whether the header carries an alignment record.
        """
        if offset + _LOCAL.size > cd_offset:
            raise FormatError(
                f"entry {name!r} local header lies outside the entry area", entry=name
            )
        (sig, lneed, lflags, lmethod, ltime, ldate, lcrc, lcsize, lusize, nlen, xlen) = (
            _LOCAL.unpack(self._pread(offset, _LOCAL.size, f"local header of {name!r}"))
        )
        if sig != _SIG_LOCAL:
            raise FormatError(f"entry {name!r}: no local header at offset {offset}", entry=name)
        lname = self._pread(offset + _LOCAL.size, nlen, f"local name of {name!r}")
        if lname != raw_name:
            raise FormatError(f"entry {name!r}: local header names it {lname!r}", entry=name)
        lextra = _parse_extra(
            self._pread(offset + _LOCAL.size + nlen, xlen, f"local extra of {name!r}"),
            f"local header of {name!r}",
        )
        sizes64 = usize >= _U32 or csize >= _U32
        if sizes64 and (lcsize, lusize) == (_U32, _U32):
            vals = _zip64_values(lextra, ["size", "csize"], f"local header of {name!r}")
            lusize, lcsize = vals["size"], vals["csize"]
        elif _U32 in (lcsize, lusize):
            raise FormatError(
                f"local header of {name!r}: zip64 markers on sizes that fit in "
                "32 bits, or on only one of them",
                entry=name,
            )
        elif _EXTRA_ZIP64 in lextra:
            raise FormatError(f"local header of {name!r}: unexpected zip64 field", entry=name)
        if (lflags, lmethod, lcrc, lcsize, lusize, (ltime, ldate)) != (
            flags,
            method,
            crc,
            csize,
            usize,
            stamp,
        ) or lneed != (_NEEDED_ZIP64 if sizes64 else _NEEDED_PLAIN):
            raise FormatError(
                f"entry {name!r}: local header (flags, method, crc, sizes, time, version) "
                "disagrees with the central directory",
                entry=name,
            )
        data_offset = int(offset + _LOCAL.size + nlen + xlen)
        if _EXTRA_ALIGN in lextra:
            _check_alignment(name, lextra)
            if data_offset % ALIGNMENT:
                # padding that aligns nothing is a second encoding of the same entry
                raise FormatError(
                    f"entry {name!r}: alignment record on data that is not "
                    f"{ALIGNMENT}-byte aligned",
                    entry=name,
                )
        return data_offset, _EXTRA_ALIGN in lextra

    def _check_layout(self, entries: dict[str, Entry], cd_offset: int) -> None:
        expected = 0
        for e in sorted(entries.values(), key=lambda e: e.header_offset):
            if e.header_offset != expected:
                what = (
                    "overlaps the previous entry"
                    if e.header_offset < expected
                    else "is preceded by bytes that belong to no entry"
                )
                raise FormatError(
                    f"entry {e.name!r} {what} (offset {e.header_offset}, expected {expected})",
                    entry=e.name,
                )
            expected = e.data_offset + e.compressed_size
        if expected != cd_offset:
            what = "overlaps" if expected > cd_offset else "is separated by stray bytes from"
            raise FormatError(f"the last entry {what} the central directory")
        if list(entries) != [
            e.name for e in sorted(entries.values(), key=lambda e: e.header_offset)
        ]:
            raise FormatError(
                "the central directory lists the entries out of file order; "
                "the writer lists them in the order they are stored"
            )

    # -- reading entry data

    def read(self, name: str, *, max_size: int) -> bytes:
        """Return an entry's uncompressed bytes, checking its size bound and CRC."""
        e = self.entries[name]
        if e.size > max_size:
            raise LimitError(
                f"entry {name!r} is {e.size} bytes; the limit is {max_size}", entry=name
            )
        raw = self._pread(e.data_offset, e.compressed_size, f"data of {name!r}")
        if e.method == _DEFLATED:
            d = zlib.decompressobj(-15)
            try:
                data = d.decompress(raw[:-1], e.size + 1)
                before, head = d.copy(), len(data)
                if len(data) <= e.size and not d.unconsumed_tail:
                    data += d.decompress(raw[-1:], e.size + 1 - len(data))
            except zlib.error as err:
                raise FormatError(
                    f"entry {name!r} is not valid DEFLATE data: {err}", entry=name
                ) from err
            if len(data) > e.size or d.unconsumed_tail or not d.eof or d.unused_data:
                raise FormatError(
                    f"entry {name!r} does not inflate to exactly its declared {e.size} bytes",
                    entry=name,
                )
            _check_final_bits(before, raw[-1], data[head:], name)
        else:
            data = raw
        if len(data) != e.size:
            raise FormatError(
                f"entry {name!r} inflates to {len(data)} bytes, declared {e.size}", entry=name
            )
        if zlib.crc32(data) != e.crc32:
            raise IntegrityError(f"entry {name!r} fails its zip CRC-32 check", entry=name)
        return data

    def read_range(self, name: str, start: int, n: int) -> bytes:
        """Bytes [start, start + n) of a STORED entry (no CRC: the caller hashes them)."""
        e = self.entries[name]
        if not e.stored or start < 0 or n < 0 or start + n > e.size:
            raise FormatError(
                f"cannot read bytes {start}..{start + n} of entry {name!r}", entry=name
            )
        return self._pread(e.data_offset + start, n, f"data of {name!r}")

    def iter_entry(self, name: str, *, max_size: int, chunk: int = 1 << 20) -> Iterator[bytes]:
        """Yield an entry's bytes; STORED ones in chunks read with ``read()`` (no mmap)."""
        e = self.entries[name]
        if not e.stored:
            yield self.read(name, max_size=max_size)
            return
        if e.size > max_size:
            raise LimitError(
                f"entry {name!r} is {e.size} bytes; the limit is {max_size}", entry=name
            )
        crc = 0
        left, pos = e.size, e.data_offset
        while left:
            n = min(chunk, left)
            data = self._pread(pos, n, f"data of {name!r}")
            pos += n
            left -= n
            crc = zlib.crc32(data, crc)
            if not left and crc != e.crc32:
                raise IntegrityError(f"entry {name!r} fails its zip CRC-32 check", entry=name)
            yield data

    def iter_range(self, start: int, end: int) -> Iterator[bytes]:
        """Yield the file's bytes [start, end) -- used to copy entries verbatim."""
        pos = start
        while pos < end:
            n = min(1 << 20, end - pos)
            yield self._pread(pos, n, "archive range")
            pos += n
