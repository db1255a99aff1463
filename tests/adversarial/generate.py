"""Build the adversarial corpus: files that ``bundle.verify`` and ``bundle.load`` must refuse.

    python tests/adversarial/generate.py OUTDIR

writes one ``<name>.mbundle`` per case, the public keys the cases trust, and
``cases.json`` (name, category, one-line description, the expected
``BundleError`` subclass, a substring its message must contain, the trusted key
files, the threshold, the file's SHA-256). The output is deterministic: fixed
test keys (derived from fixed labels), RFC 6979 ECDSA signatures, the package's
deterministic writer, so the same source gives the same bytes.

Three kinds of case:

* **container** and **manifest/signature** cases break the zip or the signature
  layer; most are one field of a real signed bundle changed, built by
  :func:`raw_zip`, a field-by-field writer that reproduces the package's own
  output byte for byte when nothing is overridden (checked on every run);
* **signed-but-malicious** cases are correctly hashed and signed by the trusted
  test key (``tests/helpers.build_signed``) and must be refused for what they
  hold (defence in depth);
* **pickle** cases put a pickle stream wherever one could hide.

``known_gap`` marks a case the package does not refuse yet; the test expects it
to fail that way (strictly), naming the module that has to change.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import struct
import sys
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

_TESTS = Path(__file__).resolve().parents[1]
if str(_TESTS) not in sys.path:  # run as a script: make tests/helpers.py importable
    sys.path.insert(0, str(_TESTS))

import bundle  # noqa: E402
from bundle.export.writer import GRAPH_NAME, statement_for  # noqa: E402
from bundle.format import canonical_json as _json  # noqa: E402
from bundle.format.digest import sha256_bytes  # noqa: E402
from bundle.format.manifest import MANIFEST_NAME, FileEntry, Manifest  # noqa: E402
from bundle.format.weights import WEIGHTS_NAME, parse_header  # noqa: E402
from bundle.trust import dsse, signing  # noqa: E402

__all__ = ["Case", "Raw", "build", "raw_zip"]

INDEX = "cases.json"
TRUSTED_PUB, SECOND_PUB, K1_PUB = "trusted.pub", "second.pub", "secp256k1.pub"

LOCAL = struct.Struct("<IHHHHHIIIHH")
CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
EOCD = struct.Struct("<IHHHHIIH")
EOCD64 = struct.Struct("<IQHHIIQQQQ")
LOCATOR64 = struct.Struct("<IIQI")
SIG_LOCAL, SIG_CENTRAL, SIG_EOCD = 0x04034B50, 0x02014B50, 0x06054B50
SIG_EOCD64, SIG_LOCATOR64 = 0x06064B50, 0x07064B50
U16, U32 = 0xFFFF, 0xFFFFFFFF
MADE_BY = (3 << 8) | 20
DOS_DATE_1980 = (1 << 5) | 1
REGULAR_0644 = 0o100644 << 16
ZIP64_ID, ALIGN_ID, ALIGNMENT = 0x0001, 0xD935, 4096


@dataclass(frozen=True)
class Case:
    """One adversarial input and what refusing it must look like."""

    name: str
    category: str
    description: str
    error: str
    """Name of the exact ``bundle.errors`` class expected."""
    message: str
    """A substring the error message must contain."""
    file: str
    sha256: str
    trusted: tuple[str, ...] = (TRUSTED_PUB,)
    threshold: int | None = None
    known_gap: str | None = None
    """Why the package does not refuse this yet, and which module must change."""

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["trusted"] = list(self.trusted)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Case:
        return cls(**{**d, "trusted": tuple(d["trusted"])})


# --------------------------------------------------------------------------- raw zips


@dataclass
class Raw:
    """One zip entry, every header field explicit; defaults are the package writer's."""

    name: bytes
    payload: bytes
    """The bytes stored in the archive (deflated already for method 8)."""
    method: int = 0
    crc: int = 0
    usize: int = 0
    csize: int | None = None
    flags: int = 0x0800
    made: int = MADE_BY
    need: int = 20
    time: int = 0
    date: int = DOS_DATE_1980
    int_attr: int = 0
    ext_attr: int = REGULAR_0644
    lextra: bytes = b""
    cextra: bytes = b""
    comment: bytes = b""
    align: bool = False
    offset: int | None = None
    """Central-directory offset override (default: where the local header was written)."""
    local: dict[str, Any] = field(default_factory=dict)
    """Local-header overrides: name, need, flags, method, time, date, crc, csize, usize, extra."""


def stored(name: str | bytes, data: bytes, **kw: Any) -> Raw:
    """A STORED entry of ``data``."""
    bname = name.encode("utf-8") if isinstance(name, str) else name
    return Raw(bname, data, 0, zlib.crc32(data), len(data), **kw)


def deflate(data: bytes, level: int = 9, mem_level: int = 9) -> bytes:
    """Raw DEFLATE as the package writer does it (level 9, window 15, memLevel 9)."""
    c = zlib.compressobj(level, zlib.DEFLATED, -15, mem_level)
    return c.compress(data) + c.flush()


def deflated(name: str | bytes, data: bytes, **kw: Any) -> Raw:
    """A DEFLATE entry of ``data``."""
    bname = name.encode("utf-8") if isinstance(name, str) else name
    return Raw(bname, deflate(data), 8, zlib.crc32(data), len(data), **kw)


def raw_zip(
    entries: list[Raw],
    *,
    prefix: bytes = b"",
    prefix_counted: bool = True,
    gaps: dict[int, bytes] | None = None,
    before_cd: bytes = b"",
    suffix: bytes = b"",
    zip_comment: bytes = b"",
    eocd: dict[str, int] | None = None,
    cd_order: list[int] | None = None,
    zip64_eocd: dict[str, int] | None = None,
) -> bytes:
    """A zip written field by field; with no overrides, byte-identical to ZipWriter's.

    ``prefix`` precedes everything (counted in the offsets only with
    ``prefix_counted``, as in a self-extracting archive); ``gaps[i]`` precedes
    entry i; ``before_cd`` sits between the last entry and the central directory;
    ``cd_order`` permutes the central directory; ``zip64_eocd`` (overrides, may be
    empty) writes zip64 end records before the end record.
    """
    out = bytearray(prefix)
    shift = 0 if prefix_counted else len(prefix)
    centrals: list[bytes] = []
    for i, e in enumerate(entries):
        out += (gaps or {}).get(i, b"")
        offset = len(out) - shift
        lo = e.local
        lname = lo.get("name", e.name)
        lextra = lo.get("extra", e.lextra)
        if e.align:
            base = len(out) + LOCAL.size + len(lname) + len(lextra)
            pad = (-(base + 6)) % ALIGNMENT + 6
            lextra += struct.pack("<HHH", ALIGN_ID, pad - 4, ALIGNMENT) + b"\0" * (pad - 6)
        csize = len(e.payload) if e.csize is None else e.csize
        out += (
            LOCAL.pack(
                SIG_LOCAL,
                lo.get("need", e.need),
                lo.get("flags", e.flags),
                lo.get("method", e.method),
                lo.get("time", e.time),
                lo.get("date", e.date),
                lo.get("crc", e.crc),
                lo.get("csize", csize),
                lo.get("usize", e.usize),
                len(lname),
                len(lextra),
            )
            + lname
            + lextra
        )
        out += e.payload
        centrals.append(
            CENTRAL.pack(
                SIG_CENTRAL,
                e.made,
                e.need,
                e.flags,
                e.method,
                e.time,
                e.date,
                e.crc,
                csize,
                e.usize,
                len(e.name),
                len(e.cextra),
                len(e.comment),
                0,
                e.int_attr,
                e.ext_attr,
                offset if e.offset is None else e.offset,
            )
            + e.name
            + e.cextra
            + e.comment
        )
    out += before_cd
    cd_offset = len(out) - shift
    cd = b"".join(centrals[j] for j in (cd_order or range(len(centrals))))
    out += cd
    n = len(entries)
    f = {
        "disk": 0,
        "cd_disk": 0,
        "n_disk": n,
        "n_total": n,
        "cd_size": len(cd),
        "cd_offset": cd_offset,
        "comment_len": len(zip_comment),
        **(eocd or {}),
    }
    if zip64_eocd is not None:
        r = {
            "size": 44,
            "made": MADE_BY,
            "need": 45,
            "disk": 0,
            "cd_disk": 0,
            "n_disk": n,
            "n_total": n,
            "cd_size": len(cd),
            "cd_offset": cd_offset,
            "locator_at": 0,
            **zip64_eocd,
        }
        at = len(out) - shift
        out += EOCD64.pack(
            SIG_EOCD64,
            r["size"],
            r["made"],
            r["need"],
            r["disk"],
            r["cd_disk"],
            r["n_disk"],
            r["n_total"],
            r["cd_size"],
            r["cd_offset"],
        )
        out += LOCATOR64.pack(SIG_LOCATOR64, 0, at + r["locator_at"], 1)
    out += (
        EOCD.pack(
            SIG_EOCD,
            f["disk"],
            f["cd_disk"],
            f["n_disk"],
            f["n_total"],
            f["cd_size"],
            f["cd_offset"],
            f["comment_len"],
        )
        + zip_comment
        + suffix
    )
    return bytes(out)


def zip64_extra(*values: int) -> bytes:
    """A zip64 extended-information record holding ``values``."""
    return struct.pack(f"<HH{len(values)}Q", ZIP64_ID, 8 * len(values), *values)


def _cd_size(data: bytes) -> int:
    """The central directory size recorded in a zip's end record."""
    return int(struct.unpack_from("<I", data, len(data) - 10)[0])


# --------------------------------------------------------------------------- keys


def _ec_key(label: str, curve: ec.EllipticCurve) -> ec.EllipticCurvePrivateKey:
    """A fixed test key: the scalar is a hash of ``label`` (below every curve order used)."""
    scalar = int.from_bytes(hashlib.sha256(label.encode()).digest(), "big") >> 2 | 1
    return ec.derive_private_key(scalar, curve)


def fixed_key(label: str) -> signing.PrivateKey:
    """A fixed P-256 signing key (the corpus's trusted key is ``fixed_key("trusted")``)."""
    return signing.PrivateKey(_ec_key(f"model-bundle adversarial {label}", ec.SECP256R1()))


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def envelope(
    payload: bytes,
    sign: Callable[[bytes], bytes],
    *,
    hint: str | None,
    keyid: str | None,
    payload_type: str = dsse.PAYLOAD_TYPE,
    media_type: str = dsse.BUNDLE_MEDIA_TYPE,
    sigs: int = 1,
) -> bytes:
    """A Sigstore bundle like dsse.sign_statement's, with every field choosable."""
    sig = base64.b64encode(sign(dsse.pae(payload_type, payload))).decode("ascii")
    one: dict[str, Any] = {"sig": sig}
    if keyid is not None:
        one["keyid"] = keyid
    material: dict[str, Any] = {"tlogEntries": []}
    if hint is not None:
        material["publicKey"] = {"hint": hint}
    return _json.dumps(
        {
            "mediaType": media_type,
            "verificationMaterial": material,
            "dsseEnvelope": {
                "payload": base64.b64encode(payload).decode("ascii"),
                "payloadType": payload_type,
                "signatures": [one] * sigs,
            },
        }
    )


# --------------------------------------------------------------------------- the bases


PICKLE = (
    b"\x80\x04\x95C\x00\x00\x00\x00\x00\x00\x00\x8c\x05posix\x94\x8c\x06system\x94"
    b"\x93\x94\x8c(echo model-bundle-adversarial-pickle-ran\x94\x85\x94R\x94."
)
"""pickle.dumps of a __reduce__ to os.system (protocol 4), spelled out so it is fixed."""


class Ctx:
    """The material every case is made from: keys, and three bundles signed by the trusted key.

    A is the tiny model (seed 0); B the same graph with other weights (seed 1); C another
    graph (Sigmoid) with A's weights.
    """

    def __init__(self, work: Path) -> None:
        from helpers import tiny_model

        self.work = work
        self.key = fixed_key("trusted")
        self.key2 = fixed_key("second")
        self.other = fixed_key("untrusted")
        self.k1 = _ec_key("model-bundle adversarial secp256k1", ec.SECP256K1())
        self._n = 0
        paths = {}
        for label, model in (
            ("a", tiny_model(0)),
            ("b", tiny_model(1)),
            ("c", tiny_model(0, op="Sigmoid")),
        ):
            paths[label] = work / f"{label}.mbundle"
            bundle.save(model, paths[label], signing_key=self.key, name="tiny")
        self.a_bytes = paths["a"].read_bytes()
        self.a, self.b, self.c = (self.entries(paths[x]) for x in "abc")
        self.manifest = Manifest.from_bytes(self.a[MANIFEST_NAME])
        self.sig = f"signatures/{self.key.key_id}.sig"

    # -- reading and writing

    @staticmethod
    def entries(path: Path) -> dict[str, bytes]:
        from helpers import read_entries

        return read_entries(path)

    def _tmp(self) -> Path:
        self._n += 1
        return self.work / f"t{self._n}.mbundle"

    def rewrite(self, entries: dict[str, bytes]) -> bytes:
        """``entries`` written as the package writes a bundle (aligned weights, deflated graph)."""
        from helpers import rewrite

        return rewrite(self.work / "a.mbundle", self._tmp(), entries).read_bytes()

    def content(self) -> dict[str, bytes]:
        """A's content entries (graph and weights)."""
        return {GRAPH_NAME: self.a[GRAPH_NAME], WEIGHTS_NAME: self.a[WEIGHTS_NAME]}

    def signed(
        self, contents: dict[str, bytes] | None = None, *, keys: Any = None, **kw: Any
    ) -> bytes:
        """``contents`` (default: A's) correctly hashed, listed and signed by the trusted key."""
        from helpers import build_signed

        return build_signed(
            self._tmp(),
            self.content() if contents is None else contents,
            [self.key] if keys is None else keys,
            base=self.manifest,
            **kw,
        ).read_bytes()

    def signed_manifest(
        self, doc: dict[str, Any] | bytes, contents: dict[str, bytes] | None = None
    ) -> bytes:
        """A's content with these manifest bytes (a dict is encoded canonically), signed."""
        mbytes = _json.dumps(doc) if isinstance(doc, dict) else doc
        return self.signed(contents, manifest_bytes=mbytes)

    def manifest_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.a[MANIFEST_NAME])
        return doc

    def graph(self, edit: Callable[[Any], None]) -> bytes:
        """A's content with its graph edited, then hashed and signed."""
        import onnx

        m = onnx.ModelProto()
        m.ParseFromString(self.a[GRAPH_NAME])
        edit(m)
        return self.signed({**self.content(), GRAPH_NAME: m.SerializeToString()})

    def weights(self, data: bytes) -> bytes:
        """A's content with these weights bytes, hashed and signed."""
        return self.signed({**self.content(), WEIGHTS_NAME: data})

    def a_raw(self) -> list[Raw]:
        """A's entries as :class:`Raw` records; ``raw_zip(ctx.a_raw()) == A``'s bytes."""
        out = []
        for name, data in self.a.items():
            if name == GRAPH_NAME:
                out.append(deflated(name, data))
            else:
                out.append(stored(name, data, align=(name == WEIGHTS_NAME)))
        return out

    def a_raw_with(self, name: str, **changes: Any) -> list[Raw]:
        """A's raw entries with fields of entry ``name`` replaced."""
        return [
            dataclasses.replace(e, **changes) if e.name == name.encode() else e
            for e in self.a_raw()
        ]

    def sign_statement(
        self, resources: list[tuple[str, str]], key: signing.PrivateKey | None = None
    ) -> bytes:
        """A signature entry by the trusted key over a statement of exactly ``resources``."""
        statement = dsse.build_statement("tiny", resources)
        return dsse.sign_statement(statement, key or self.key)

    def resources(self) -> list[tuple[str, str]]:
        """A's signed resources: its files and its manifest."""
        r = [(f.path, f.sha256) for f in self.manifest.files]
        return [*r, (MANIFEST_NAME, sha256_bytes(self.a[MANIFEST_NAME]))]

    def with_sig(self, sig: bytes, name: str | None = None) -> bytes:
        """A with its signature entry replaced (under ``name``, default the trusted key's)."""
        entries = {k: v for k, v in self.a.items() if k != self.sig}
        entries[name or self.sig] = sig
        return self.rewrite(entries)

    def env_edit(self, edit: Callable[[dict[str, Any], dict[str, Any]], None]) -> bytes:
        """A with its signature envelope (and decoded statement) edited, re-signed validly."""
        env = json.loads(self.a[self.sig])
        statement = json.loads(base64.b64decode(env["dsseEnvelope"]["payload"]))
        edit(env, statement)
        payload = _json.dumps(statement)
        ptype = env["dsseEnvelope"]["payloadType"]
        sig = self.key.sign(dsse.pae(ptype, payload))
        env["dsseEnvelope"]["payload"] = base64.b64encode(payload).decode()
        env["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(sig).decode()
        return self.with_sig(_json.dumps(env))


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class _Spec:
    name: str
    category: str
    error: str
    message: str
    description: str
    make: Callable[[Ctx], bytes]
    trusted: tuple[str, ...] = (TRUSTED_PUB,)
    threshold: int | None = None
    known_gap: str | None = None


_SPECS: list[_Spec] = []


def case(
    name: str, category: str, error: str, message: str, description: str, **opts: Any
) -> Callable[[Callable[[Ctx], bytes]], Callable[[Ctx], bytes]]:
    """Register a case builder: ``make(ctx)`` returns the file's bytes."""

    def deco(make: Callable[[Ctx], bytes]) -> Callable[[Ctx], bytes]:
        if any(s.name == name for s in _SPECS):
            raise ValueError(f"duplicate case name {name}")
        _SPECS.append(_Spec(name, category, error, message, description, make, **opts))
        return make

    return deco


def simple(
    name: str,
    category: str,
    error: str,
    message: str,
    description: str,
    make: Callable[[Ctx], bytes],
    **opts: Any,
) -> None:
    """Register a case whose builder is a lambda."""
    case(name, category, error, message, description, **opts)(make)


# Builders for the cases registered in loops: each binds its loop value as an argument
# (a lambda with a default argument would too, but its type cannot be inferred).


def _with_entry(name: str) -> Callable[[Ctx], bytes]:
    """A's raw entries plus a stored entry with this name."""

    def make(c: Ctx) -> bytes:
        return raw_zip([*c.a_raw(), stored(name, b"x")])

    return make


def _graph_edit(edit: Callable[[Any], None]) -> Callable[[Ctx], bytes]:
    """A with its graph changed by ``edit``, signed."""

    def make(c: Ctx) -> bytes:
        return c.graph(edit)

    return make


def _with_weights(data: bytes) -> Callable[[Ctx], bytes]:
    """A with these weights bytes, signed."""

    def make(c: Ctx) -> bytes:
        return c.weights(data)

    return make


# --------------------------------------------------------------------------- container

Z = "container"

for _label, _bad in (
    ("dotdot", "../model.onnx"),
    ("nested-dotdot", "a/../../x.onnx"),
    ("dot-segment", "./manifest.json"),
    ("double-slash", "assets//x"),
    ("trailing-slash", "assets/"),
):
    simple(
        f"zip-name-{_label}",
        Z,
        "FormatError",
        "not canonical",
        f"an entry named {_bad!r} (path traversal / non-canonical segment)",
        _with_entry(_bad),
    )

simple(
    "zip-name-absolute",
    Z,
    "FormatError",
    "is absolute",
    "an entry named '/etc/cron.d/job' (absolute path)",
    lambda c: raw_zip([stored("/etc/cron.d/job", b"* * * * * root id\n"), *c.a_raw()]),
)
simple(
    "zip-name-drive-letter",
    Z,
    "FormatError",
    "contains ':'",
    "an entry named 'C:/Windows/x.dll' (drive letter)",
    lambda c: raw_zip([*c.a_raw(), stored("C:/Windows/x.dll", b"MZ")]),
)
simple(
    "zip-name-backslash",
    Z,
    "FormatError",
    "backslash",
    "an entry named '..\\\\..\\\\evil.onnx' (Windows separators)",
    lambda c: raw_zip([*c.a_raw(), stored("..\\..\\evil.onnx", b"x")]),
)
simple(
    "zip-name-control-chars",
    Z,
    "FormatError",
    "control characters",
    "an entry name carrying an ANSI escape sequence",
    lambda c: raw_zip([*c.a_raw(), stored("notes\x1b[2J.txt", b"x")]),
)
simple(
    "zip-name-not-utf8",
    Z,
    "FormatError",
    "not valid UTF-8",
    "an entry name that is not valid UTF-8",
    lambda c: raw_zip([*c.a_raw(), stored(b"model\xff.onnx", b"x")]),
)
simple(
    "zip-name-empty",
    Z,
    "FormatError",
    "empty entry name",
    "an entry with an empty name",
    lambda c: raw_zip([*c.a_raw(), stored(b"", b"x")]),
)
simple(
    "zip-name-too-long",
    Z,
    "FormatError",
    "longer than 255",
    "an entry name of 300 bytes",
    lambda c: raw_zip([*c.a_raw(), stored("a" * 300, b"x")]),
)
simple(
    "zip-symlink-entry",
    Z,
    "FormatError",
    "not a regular file",
    "the weights entry is a symlink to /etc/passwd (Unix mode 0120777)",
    lambda c: raw_zip(
        [
            stored(e.name, b"/etc/passwd", ext_attr=0o120777 << 16)
            if e.name == WEIGHTS_NAME.encode()
            else e
            for e in c.a_raw()
        ]
    ),
)
simple(
    "zip-directory-entry",
    Z,
    "FormatError",
    "not a regular file",
    "an entry with directory mode (040755) and the MS-DOS directory bit",
    lambda c: raw_zip([*c.a_raw(), stored("assets", b"", ext_attr=(0o040755 << 16) | 0x10)]),
)
simple(
    "zip-device-entry",
    Z,
    "FormatError",
    "not a regular file",
    "an entry with character-device mode (020644)",
    lambda c: raw_zip([*c.a_raw(), stored("dev", b"", ext_attr=0o020644 << 16)]),
)
simple(
    "zip-executable-mode",
    Z,
    "FormatError",
    "non-canonical attributes",
    "the manifest entry has mode 0755 (bytes no hash covers must be canonical)",
    lambda c: raw_zip(c.a_raw_with(MANIFEST_NAME, ext_attr=0o100755 << 16)),
)
simple(
    "zip-duplicate-name",
    Z,
    "FormatError",
    "duplicate entry name",
    "manifest.json twice: the first signed, the second an attacker's",
    lambda c: raw_zip([*c.a_raw(), stored(MANIFEST_NAME, b"{}")]),
)


@case(
    "zip-file-is-also-a-directory",
    Z,
    "FormatError",
    "is also the parent directory",
    "a signed asset named 'weights.safetensors/x.txt': unzipped, the weights would have "
    "to be a file and a directory at once",
)
def _file_and_directory(c: Ctx) -> bytes:
    # Ctx.signed() writes through the package's ZipWriter, which refuses this pair of
    # names; an attacker's writer does not, so hash, list and sign it by hand.
    asset, data = f"{WEIGHTS_NAME}/x.txt", b"hi\n"
    files = sorted(
        (*c.manifest.files, FileEntry(asset, "asset", len(data), sha256_bytes(data))),
        key=lambda f: f.path,
    )
    manifest = dataclasses.replace(c.manifest, files=tuple(files))
    mbytes = manifest.to_bytes()
    sig = dsse.sign_statement(statement_for(manifest, mbytes), c.key)
    content = [e for e in c.a_raw() if e.name.decode() in (GRAPH_NAME, WEIGHTS_NAME)]
    return raw_zip(
        [
            *content,
            stored(asset, data, align=True),
            stored(MANIFEST_NAME, mbytes),
            stored(c.sig, sig),
        ]
    )


simple(
    "zip-local-name-differs",
    Z,
    "FormatError",
    "local header names it",
    "the manifest's local header names it 'manifest.jsoN' (central vs local disagreement)",
    lambda c: raw_zip(c.a_raw_with(MANIFEST_NAME, local={"name": b"manifest.jsoN"})),
)
simple(
    "zip-local-size-differs",
    Z,
    "FormatError",
    "disagrees with the central",
    "the graph's local header declares one byte more than the central directory",
    lambda c: raw_zip(c.a_raw_with(GRAPH_NAME, local={"usize": len(c.a[GRAPH_NAME]) + 1})),
)
simple(
    "zip-local-crc-differs",
    Z,
    "FormatError",
    "disagrees with the central",
    "the weights' local header carries another CRC-32",
    lambda c: raw_zip(c.a_raw_with(WEIGHTS_NAME, local={"crc": 0xDEADBEEF})),
)
simple(
    "zip-local-method-differs",
    Z,
    "FormatError",
    "disagrees with the central",
    "the manifest's local header says DEFLATE, the central directory STORED",
    lambda c: raw_zip(c.a_raw_with(MANIFEST_NAME, local={"method": 8})),
)
simple(
    "zip-local-flags-differ",
    Z,
    "FormatError",
    "disagrees with the central",
    "the manifest's local header clears the UTF-8 flag the central directory sets",
    lambda c: raw_zip(c.a_raw_with(MANIFEST_NAME, local={"flags": 0})),
)


@case(
    "zip-overlapping-entries",
    Z,
    "FormatError",
    "overlaps the previous entry",
    "a second entry whose local header lies inside the first entry's data",
)
def _overlap(c: Ctx) -> bytes:
    inner = stored("evil.bin", b"payload")
    inner_bytes = (
        LOCAL.pack(SIG_LOCAL, 20, 0x800, 0, 0, DOS_DATE_1980, inner.crc, 7, 7, 8, 0)
        + b"evil.bin"
        + b"payload"
    )
    outer = stored("outer.bin", b"AAAA" + inner_bytes)
    at = LOCAL.size + len(b"outer.bin") + 4
    return raw_zip([outer, dataclasses.replace(inner, payload=b"", offset=at, csize=7)])


simple(
    "zip-entry-overlaps-central-directory",
    Z,
    "FormatError",
    "overlaps the central directory",
    "the last entry declares more bytes than lie before the central directory",
    lambda c: raw_zip(
        [
            *c.a_raw()[:-1],
            dataclasses.replace(
                c.a_raw()[-1],
                csize=len(c.a[c.sig]) + 40,
                usize=len(c.a[c.sig]) + 40,
                local={"csize": len(c.a[c.sig]) + 40, "usize": len(c.a[c.sig]) + 40},
            ),
        ]
    ),
)
simple(
    "zip-deflate-bomb-ratio",
    Z,
    "LimitError",
    "zip bomb",
    "the graph entry inflates 8 MiB of zeros from a few KiB (ratio over 200)",
    lambda c: raw_zip([deflated(GRAPH_NAME, bytes(8 << 20)), *c.a_raw()[1:]]),
)


@case(
    "zip-deflate-bomb-lying-size",
    Z,
    "FormatError",
    "does not inflate to exactly",
    "manifest.json declares 300 bytes but its DEFLATE stream inflates to 16 MiB",
)
def _lying(c: Ctx) -> bytes:
    big = bytes(16 << 20)
    raws = c.a_raw_with(
        MANIFEST_NAME, payload=deflate(big), method=8, crc=zlib.crc32(big), usize=300
    )
    return raw_zip(raws)


simple(
    "zip-too-many-entries",
    Z,
    "LimitError",
    "the limit is 256",
    "257 entries (the limit is 256)",
    lambda c: raw_zip([*c.a_raw(), *(stored(f"e/{i:03d}", b"") for i in range(253))]),
)
simple(
    "zip-central-directory-too-large",
    Z,
    "LimitError",
    "exceeds the limit",
    "the end record declares a central directory of 1 MiB + 1 byte",
    lambda c: raw_zip(c.a_raw(), eocd={"cd_size": (1 << 20) + 1}),
)


@case(
    "zip-total-size-over-limit",
    Z,
    "LimitError",
    "uncompressed bytes",
    "three zip64 entries declaring 512 GiB each (over the 1 TiB archive limit)",
)
def _total(c: Ctx) -> bytes:
    big = 1 << 39
    raws = [
        Raw(
            f"part{i}".encode(),
            b"",
            0,
            0,
            U32,
            csize=U32,
            need=45,
            cextra=zip64_extra(big, big),
            local={"extra": zip64_extra(big, big)},
        )
        for i in range(3)
    ]
    return raw_zip(raws)


simple(
    "zip-data-before-entries",
    Z,
    "FormatError",
    "preceded by bytes",
    "a 64-byte script before the first entry, offsets counting it (self-extractor style)",
    lambda c: raw_zip(c.a_raw(), prefix=b"#!/bin/sh\nexec evil\n".ljust(64, b"#")),
)
simple(
    "zip-data-before-entries-uncounted",
    Z,
    "FormatError",
    "does not end where",
    "bytes prepended to a bundle, its offsets left as they were",
    lambda c: b"#!/bin/sh\n" + c.a_bytes,
)
simple(
    "zip-data-between-entries",
    Z,
    "FormatError",
    "preceded by bytes",
    "a pickle stream hidden between the weights and the manifest",
    lambda c: raw_zip(c.a_raw(), gaps={2: PICKLE}),
)
simple(
    "zip-data-before-central-directory",
    Z,
    "FormatError",
    "separated by stray bytes",
    "bytes between the last entry and the central directory",
    lambda c: raw_zip(c.a_raw(), before_cd=b"hidden"),
)
simple(
    "zip-data-after-end-record",
    Z,
    "FormatError",
    "follows the zip end record",
    "bytes appended after the end-of-central-directory record",
    lambda c: c.a_bytes + b"appended",
)
simple(
    "zip-archive-comment",
    Z,
    "FormatError",
    "follows the zip end record",
    "a zip archive comment",
    lambda c: raw_zip(c.a_raw(), zip_comment=b"hello"),
)
simple(
    "zip-comment-length-without-comment",
    Z,
    "FormatError",
    "zip comment present",
    "an end record declaring a comment the file does not hold",
    lambda c: raw_zip(c.a_raw(), eocd={"comment_len": 5}),
)
simple(
    "zip-entry-comment",
    Z,
    "FormatError",
    "has a comment",
    "a comment on the manifest's central-directory entry",
    lambda c: raw_zip(c.a_raw_with(MANIFEST_NAME, comment=b"note")),
)
simple(
    "zip-central-directory-truncated",
    Z,
    "FormatError",
    "central directory truncated",
    "the end record counts one entry more than the central directory holds",
    lambda c: raw_zip(c.a_raw(), eocd={"n_disk": 5, "n_total": 5}),
)
simple(
    "zip-central-directory-size-short",
    Z,
    "FormatError",
    "does not end where",
    "the end record's central directory size is 10 bytes short",
    lambda c: raw_zip(c.a_raw(), eocd={"cd_size": _cd_size(c.a_bytes) - 10}),
)
simple(
    "zip-truncated-half",
    Z,
    "FormatError",
    "not a zip archive",
    "the first half of a signed bundle",
    lambda c: c.a_bytes[: len(c.a_bytes) // 2],
)
simple(
    "zip-truncated-last-byte",
    Z,
    "FormatError",
    "cut short",
    "a signed bundle without its last byte",
    lambda c: c.a_bytes[:-1],
)
simple(
    "zip-counts-disagree",
    Z,
    "FormatError",
    "disagree",
    "entries on this disk and in total differ in the end record",
    lambda c: raw_zip(c.a_raw(), eocd={"n_disk": 3}),
)
simple(
    "zip-multi-disk",
    Z,
    "FormatError",
    "multi-disk",
    "the end record says the archive spans disks",
    lambda c: raw_zip(c.a_raw(), eocd={"disk": 1}),
)
simple(
    "zip-bad-central-signature",
    Z,
    "FormatError",
    "bad signature",
    "the first central-directory record has a wrong signature",
    lambda c: (lambda d, at: d[:at] + b"PK\x01\x03" + d[at + 4 :])(
        c.a_bytes, struct.unpack_from("<I", c.a_bytes, len(c.a_bytes) - 6)[0]
    ),
)
simple(
    "zip64-locator-missing",
    Z,
    "FormatError",
    "locator",
    "the end record holds zip64 markers but no zip64 records precede it",
    lambda c: raw_zip(
        c.a_raw(), eocd={"n_disk": U16, "n_total": U16, "cd_size": U32, "cd_offset": U32}
    ),
)
simple(
    "zip64-record-misplaced",
    Z,
    "FormatError",
    "not immediately before its locator",
    "the zip64 locator points 4 bytes before the zip64 end record",
    lambda c: raw_zip(
        c.a_raw(),
        zip64_eocd={"locator_at": -4},
        eocd={"n_disk": U16, "n_total": U16, "cd_size": U32, "cd_offset": U32},
    ),
)
simple(
    "zip64-end-records-unneeded",
    Z,
    "FormatError",
    "zip64 end records",
    "a small bundle re-written with zip64 end records (same content, other bytes)",
    lambda c: raw_zip(
        c.a_raw(),
        zip64_eocd={},
        eocd={"n_disk": U16, "n_total": U16, "cd_size": U32, "cd_offset": U32},
    ),
)
simple(
    "zip64-end-record-partial-markers",
    Z,
    "FormatError",
    "zip64 end records",
    "zip64 end records with only the offset marked in the end record",
    lambda c: raw_zip(c.a_raw(), zip64_eocd={}, eocd={"cd_offset": U32}),
)
simple(
    "zip64-end-record-version",
    Z,
    "FormatError",
    "zip64 end records",
    "zip64 end records whose 'made by'/'needed' versions are not the writer's",
    lambda c: raw_zip(
        c.a_raw(),
        zip64_eocd={"made": 0xFFFF, "need": 0xFFFF},
        eocd={"n_disk": U16, "n_total": U16, "cd_size": U32, "cd_offset": U32},
    ),
)
simple(
    "zip64-extra-unneeded",
    Z,
    "FormatError",
    "zip64 extra field present",
    "a zip64 record on the manifest's central entry that no field needs",
    lambda c: raw_zip(c.a_raw_with(MANIFEST_NAME, cextra=zip64_extra(5))),
)
simple(
    "zip64-extra-wrong-length",
    Z,
    "FormatError",
    "wrong length",
    "a zip64-marked size whose zip64 record holds one value instead of two",
    lambda c: raw_zip(
        c.a_raw_with(
            MANIFEST_NAME,
            usize=U32,
            csize=U32,
            need=45,
            cextra=zip64_extra(len(c.a[MANIFEST_NAME])),
        )
    ),
)
simple(
    "zip64-markers-for-small-sizes",
    Z,
    "FormatError",
    "fits in 32 bits",
    "the manifest's sizes written as zip64 markers though they fit in 32 bits",
    lambda c: raw_zip(
        c.a_raw_with(
            MANIFEST_NAME,
            usize=U32,
            csize=U32,
            need=45,
            cextra=zip64_extra(len(c.a[MANIFEST_NAME]), len(c.a[MANIFEST_NAME])),
            local={
                "usize": U32,
                "csize": U32,
                "need": 45,
                "extra": zip64_extra(len(c.a[MANIFEST_NAME]), len(c.a[MANIFEST_NAME])),
            },
        )
    ),
)
simple(
    "zip64-local-marker-hides-size",
    Z,
    "FormatError",
    "local header",
    "the local header marks only its size zip64, its compressed size left arbitrary",
    lambda c: raw_zip(
        c.a_raw_with(
            MANIFEST_NAME,
            local={
                "usize": U32,
                "csize": 12345,
                "extra": zip64_extra(len(c.a[MANIFEST_NAME]), len(c.a[MANIFEST_NAME])),
            },
        )
    ),
)
simple(
    "zip-not-a-zip",
    Z,
    "FormatError",
    "not a zip archive",
    "a PNG image",
    lambda c: b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4,
)
simple("zip-empty-file", Z, "FormatError", "empty file", "an empty file", lambda c: b"")
simple(
    "zip-too-short", Z, "FormatError", "too short", "ten bytes", lambda c: b"PK\x05\x06\0\0\0\0\0\0"
)
simple(
    "zip-encrypted-entry",
    Z,
    "FormatError",
    "general-purpose flags",
    "the graph entry flagged as encrypted (bit 0)",
    lambda c: raw_zip(c.a_raw_with(GRAPH_NAME, flags=0x0801)),
)
simple(
    "zip-data-descriptor",
    Z,
    "FormatError",
    "general-purpose flags",
    "the manifest flagged as followed by a data descriptor (bit 3)",
    lambda c: raw_zip(c.a_raw_with(MANIFEST_NAME, flags=0x0808)),
)
simple(
    "zip-utf8-flag-cleared",
    Z,
    "FormatError",
    "general-purpose flags",
    "the UTF-8 flag cleared in both headers of the manifest (same name bytes)",
    lambda c: raw_zip(c.a_raw_with(MANIFEST_NAME, flags=0)),
)
simple(
    "zip-method-lzma",
    Z,
    "FormatError",
    "compression method 14",
    "the manifest entry claims LZMA compression",
    lambda c: raw_zip(c.a_raw_with(MANIFEST_NAME, method=14)),
)
simple(
    "zip-unknown-extra-field",
    Z,
    "FormatError",
    "is not allowed",
    "an extended-timestamp (0x5455) extra field on the graph's local header",
    lambda c: raw_zip(c.a_raw_with(GRAPH_NAME, lextra=struct.pack("<HHBI", 0x5455, 5, 1, 0))),
)
simple(
    "zip-crc-mismatch",
    Z,
    "IntegrityError",
    "CRC-32",
    "the weights' CRC-32 changed in both headers, the data intact (a CRC no hash covers)",
    lambda c: raw_zip(c.a_raw_with(WEIGHTS_NAME, crc=zlib.crc32(c.a[WEIGHTS_NAME]) ^ 1)),
)
simple(
    "zip-data-changed-crc-stale",
    Z,
    "IntegrityError",
    "weights.safetensors",
    "one weights byte changed, the zip CRC left as it was",
    lambda c: raw_zip(c.a_raw_with(WEIGHTS_NAME, payload=c.a[WEIGHTS_NAME][:-1] + b"\x01")),
)
simple(
    "zip-stored-sizes-differ",
    Z,
    "FormatError",
    "stored entry",
    "a STORED entry whose compressed and uncompressed sizes differ",
    lambda c: raw_zip(
        c.a_raw_with(
            MANIFEST_NAME,
            usize=len(c.a[MANIFEST_NAME]) + 1,
            local={"usize": len(c.a[MANIFEST_NAME]) + 1},
        )
    ),
)
simple(
    "zip-invalid-deflate",
    Z,
    "FormatError",
    "not valid DEFLATE data",
    "manifest.json stored as DEFLATE with a stream that is not DEFLATE",
    lambda c: raw_zip(c.a_raw_with(MANIFEST_NAME, method=8, payload=b"\xff" * 32)),
)
simple(
    "zip-timestamp",
    Z,
    "FormatError",
    "timestamp",
    "the manifest's time and date set to 2024-01-01 12:00 in both headers",
    lambda c: raw_zip(c.a_raw_with(MANIFEST_NAME, time=12 << 11, date=(44 << 9) | (1 << 5) | 1)),
)
simple(
    "zip-made-by-version",
    Z,
    "FormatError",
    "non-canonical attributes",
    "the manifest's central 'version made by' is 4.5 instead of the writer's 2.0",
    lambda c: raw_zip(c.a_raw_with(MANIFEST_NAME, made=(3 << 8) | 45)),
)
simple(
    "zip-version-needed",
    Z,
    "FormatError",
    "non-canonical attributes",
    "the manifest's 'version needed' is 4.5 (zip64) in both headers of a small entry",
    lambda c: raw_zip(c.a_raw_with(MANIFEST_NAME, need=45)),
)
simple(
    "zip-central-directory-reordered",
    Z,
    "FormatError",
    "order",
    "the central directory lists the entries in another order than the file holds them",
    lambda c: raw_zip(c.a_raw(), cd_order=[1, 0, 2, 3]),
)


@case(
    "zip-alignment-padding-excess",
    Z,
    "FormatError",
    "alignment",
    "4096 more zero bytes of alignment padding before the weights (data still aligned)",
)
def _pad(c: Ctx) -> bytes:
    raws = c.a_raw()
    graph = raws[0]
    base = LOCAL.size + len(graph.name) + len(graph.payload) + LOCAL.size + len(WEIGHTS_NAME)
    pad = (-(base + 6)) % ALIGNMENT + 6 + ALIGNMENT
    extra = struct.pack("<HHH", ALIGN_ID, pad - 4, ALIGNMENT) + b"\0" * (pad - 6)
    raws[1] = dataclasses.replace(raws[1], align=False, lextra=extra)
    return raw_zip(raws)


simple(
    "zip-alignment-record-in-central-directory",
    Z,
    "FormatError",
    "alignment",
    "an alignment record in the central directory (the writer puts it in local headers)",
    lambda c: raw_zip(
        c.a_raw_with(MANIFEST_NAME, cextra=struct.pack("<HHH", ALIGN_ID, 2, ALIGNMENT))
    ),
)


@case(
    "zip-deflate-padding-bits",
    Z,
    "FormatError",
    "padding bits",
    "the graph's DEFLATE stream with a set padding bit after its end (same content)",
)
def _padding_bits(c: Ctx) -> bytes:
    data = c.a[GRAPH_NAME]
    for level in range(9, 0, -1):
        for mem in range(9, 0, -1):
            stream = deflate(data, level, mem)
            for bit in range(7, 0, -1):
                flipped = stream[:-1] + bytes([stream[-1] | (1 << bit)])
                if flipped == stream:
                    continue
                d = zlib.decompressobj(-15)
                try:
                    if d.decompress(flipped) == data and d.eof and not d.unused_data:
                        return raw_zip(c.a_raw_with(GRAPH_NAME, payload=flipped))
                except zlib.error:
                    pass
    raise RuntimeError("no DEFLATE encoding of the graph ends mid-byte")


# A DEFLATE stream re-encoded at another level (same content, other bytes) is accepted
# by design (FORMAT.md 2.5, SECURITY.md): tests/trust/test_verify.py checks that.
simple(
    "zip-entries-reordered",
    Z,
    "FormatError",
    "order",
    "manifest.json moved before the content entries (same entries, other bytes)",
    lambda c: (lambda r: raw_zip([r[2], r[0], r[1], r[3]]))(c.a_raw()),
)
simple(
    "zip-alignment-record-added",
    Z,
    "FormatError",
    "alignment",
    "a 4096-byte alignment record added to the manifest's local header",
    lambda c: raw_zip(c.a_raw_with(MANIFEST_NAME, align=True)),
)
simple(
    "zip-signature-deflated",
    Z,
    "FormatError",
    "STORED",
    "the signature entry DEFLATE-compressed instead of STORED (same content)",
    lambda c: raw_zip([*c.a_raw()[:3], deflated(c.sig, c.a[c.sig])]),
)
simple(
    "zip-weights-deflated",
    Z,
    "FormatError",
    "must be STORED",
    "the weights entry DEFLATE-compressed (signed): it must be STORED to be mapped",
    lambda c: raw_zip(
        [
            deflated(e.name, c.a[WEIGHTS_NAME]) if e.name == WEIGHTS_NAME.encode() else e
            for e in c.a_raw()
        ]
    ),
)
simple(
    "zip-weights-unaligned",
    Z,
    "FormatError",
    "not aligned",
    "the weights entry without its 4096-byte alignment (signed, same content)",
    lambda c: raw_zip(c.a_raw_with(WEIGHTS_NAME, align=False)),
)


# --------------------------------------------------------------------------- manifest

M = "manifest"


def _drop(c: Ctx, name: str) -> bytes:
    return c.rewrite({k: v for k, v in c.a.items() if k != name})


simple(
    "unlisted-entry",
    M,
    "IntegrityError",
    "not listed in the manifest",
    "an extra entry no manifest lists and no signature covers",
    lambda c: c.rewrite({**c.a, "extra/run.sh": b"#!/bin/sh\nid\n"}),
)
simple(
    "listed-entry-missing",
    M,
    "IntegrityError",
    "are missing",
    "the weights entry removed (the signed manifest still lists it)",
    lambda c: _drop(c, WEIGHTS_NAME),
)
simple(
    "manifest-missing",
    M,
    "FormatError",
    "no manifest.json",
    "the manifest entry removed",
    lambda c: _drop(c, MANIFEST_NAME),
)


def _files_edit(edit: Callable[[list[dict[str, Any]]], None]) -> Callable[[Ctx], bytes]:
    def make(c: Ctx) -> bytes:
        d = c.manifest_dict()
        edit(d["files"])
        return c.signed_manifest(d)

    return make


def _graph_path(path: str) -> Callable[[list[dict[str, Any]]], None]:
    """Edit the manifest's first file entry (the graph) to this path."""

    def edit(files: list[dict[str, Any]]) -> None:
        files[0].update(path=path)

    return edit


for _label, _path in (
    ("dot-slash", "./model.onnx"),
    ("double-slash", "model//model.onnx"),
    ("trailing-slash", "model.onnx/"),
    ("dotdot", "../model.onnx"),
    ("backslash", "models\\model.onnx"),
):
    simple(
        f"manifest-path-{_label}",
        M,
        "FormatError",
        "backslash" if _label == "backslash" else "not canonical",
        f"the signed manifest lists the graph as {_path!r}",
        _files_edit(_graph_path(_path)),
    )


@case(
    "manifest-path-not-utf8",
    M,
    "FormatError",
    "not valid UTF-8",
    "the signed manifest's graph path holds a byte that is not UTF-8",
)
def _not_utf8(c: Ctx) -> bytes:
    mbytes = c.a[MANIFEST_NAME].replace(b'"path":"model.onnx"', b'"path":"model\xff.onnx"')
    assert mbytes != c.a[MANIFEST_NAME]
    return c.signed_manifest(mbytes)


simple(
    "manifest-duplicate-resource",
    M,
    "FormatError",
    "unique and sorted",
    "the signed manifest lists model.onnx twice",
    _files_edit(lambda files: files.insert(0, dict(files[0]))),
)
simple(
    "manifest-not-canonical-indented",
    M,
    "FormatError",
    "not canonical",
    "the signed manifest is valid JSON, indented",
    lambda c: c.signed_manifest(json.dumps(c.manifest_dict(), indent=1, sort_keys=True).encode()),
)
simple(
    "manifest-not-canonical-key-order",
    M,
    "FormatError",
    "not canonical",
    "the signed manifest is valid JSON with its keys in reverse order",
    lambda c: c.signed_manifest(
        json.dumps(
            dict(reversed(list(c.manifest_dict().items()))),
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode()
    ),
)
simple(
    "manifest-not-canonical-escape",
    M,
    "FormatError",
    "not canonical",
    "the signed manifest spells a character as a \\u escape (same JSON value)",
    lambda c: c.signed_manifest(c.a[MANIFEST_NAME].replace(b'"tiny"', b'"tin\\u0079"')),
)
simple(
    "manifest-not-canonical-newline",
    M,
    "FormatError",
    "not canonical",
    "the signed manifest with a trailing newline",
    lambda c: c.signed_manifest(c.a[MANIFEST_NAME] + b"\n"),
)
simple(
    "manifest-duplicate-key",
    M,
    "FormatError",
    "duplicate key",
    "the signed manifest repeats a key (two parsers could read two manifests)",
    lambda c: c.signed_manifest(
        c.a[MANIFEST_NAME].replace(b'"created":null', b'"created":null,"created":"x"')
    ),
)
simple(
    "manifest-float-overflow",
    M,
    "FormatError",
    "out of range",
    "the signed manifest holds the number 1e400 (no finite float)",
    lambda c: c.signed_manifest(c.a[MANIFEST_NAME].replace(b'"created":null', b'"created":1e400')),
)
simple(
    "manifest-not-json",
    M,
    "FormatError",
    "not valid JSON",
    "the signed manifest is not JSON at all",
    lambda c: c.signed_manifest(b"{manifest"),
)


def _schema(edit: Callable[[dict[str, Any]], None]) -> Callable[[Ctx], bytes]:
    def make(c: Ctx) -> bytes:
        d = c.manifest_dict()
        edit(d)
        return c.signed_manifest(d)

    return make


for _label, _edit, _msg, _what in (
    (
        "unknown-field",
        lambda d: d.update(run_on_load="os.system('id')"),
        "unknown field",
        "an unknown top-level field",
    ),
    ("missing-field", lambda d: d.pop("files"), "missing field", "no 'files' field"),
    (
        "size-as-string",
        lambda d: d["files"][0].update(size="123"),
        "expected an integer",
        "a file size given as a string",
    ),
    (
        "negative-size",
        lambda d: d["files"][0].update(size=-1),
        "expected an integer",
        "a negative file size",
    ),
    ("format-version-2", lambda d: d.update(format_version=2), "not supported", "format_version 2"),
    (
        "format-version-bool",
        lambda d: d.update(format_version=True),
        "not supported",
        "format_version true (equal to 1 in Python)",
    ),
    (
        "unknown-role",
        lambda d: d["files"][0].update(role="script"),
        "is not one of",
        "a file role 'script'",
    ),
    (
        "sha256-uppercase",
        lambda d: d["files"][0].update(sha256=d["files"][0]["sha256"].upper()),
        "64 lowercase hex",
        "an upper-case SHA-256",
    ),
    (
        "two-graphs",
        lambda d: d["files"][1].update(role="graph"),
        "exactly one 'graph'",
        "two files of role graph",
    ),
    (
        "reserved-path",
        lambda d: d["files"].insert(0, {**d["files"][0], "path": "manifest.json"}),
        "reserved",
        "a file named manifest.json",
    ),
    (
        "method-output-unknown",
        lambda d: d["methods"].update(predict={"output": "nope", "squeeze": False}),
        "is not a graph output",
        "predict mapped to an output the graph lacks",
    ),
    (
        "metadata-not-string",
        lambda d: d["metadata"].update(x=1),
        "must be strings",
        "a metadata value that is a number",
    ),
    (
        "inputs-not-list",
        lambda d: d.update(inputs={"X": 1}),
        "expected a list",
        "inputs given as an object",
    ),
):
    simple(
        f"schema-{_label}",
        M,
        "FormatError",
        _msg,
        f"the signed manifest has {_what}",
        _schema(_edit),
    )


@case(
    "manifest-size-mismatch",
    M,
    "IntegrityError",
    "manifest records",
    "the signed manifest records the weights one byte longer than the entry",
)
def _size(c: Ctx) -> bytes:
    d = c.manifest_dict()
    d["files"][1]["size"] += 1
    return c.signed_manifest(d)


simple(
    "content-hash-mismatch",
    M,
    "IntegrityError",
    "SHA-256",
    "one weights byte changed, the zip CRC updated, the signed manifest not",
    lambda c: c.rewrite({**c.a, WEIGHTS_NAME: c.a[WEIGHTS_NAME][:-1] + b"\x01"}),
)
simple(
    "mix-weights-from-other-bundle",
    M,
    "IntegrityError",
    "SHA-256",
    "bundle A with bundle B's weights (both signed by the trusted key)",
    lambda c: c.rewrite({**c.a, WEIGHTS_NAME: c.b[WEIGHTS_NAME]}),
)
simple(
    "mix-graph-from-other-bundle",
    M,
    "IntegrityError",
    "manifest records",
    "bundle A with bundle C's graph (both signed by the trusted key)",
    lambda c: c.rewrite({**c.a, GRAPH_NAME: c.c[GRAPH_NAME]}),
)
simple(
    "mix-manifest-and-signature-from-other-bundle",
    M,
    "IntegrityError",
    "SHA-256",
    "bundle A's content with bundle B's manifest and signature",
    lambda c: c.rewrite({**c.a, MANIFEST_NAME: c.b[MANIFEST_NAME], c.sig: c.b[c.sig]}),
)

# --------------------------------------------------------------------------- signatures

S = "signature"

simple(
    "signature-substitution",
    S,
    "SignatureError",
    "does not cover",
    "bundle A carrying bundle B's signature (valid, by the trusted key, for B)",
    lambda c: c.with_sig(c.b[c.sig]),
)
simple(
    "mix-manifest-from-other-bundle",
    S,
    "SignatureError",
    "does not cover",
    "bundle A with bundle B's manifest and A's own signature",
    lambda c: c.rewrite({**c.a, MANIFEST_NAME: c.b[MANIFEST_NAME]}),
)
simple(
    "unsigned",
    S,
    "SignatureError",
    "unsigned",
    "the signature entry removed",
    lambda c: _drop(c, c.sig),
)
simple(
    "untrusted-signer",
    S,
    "SignatureError",
    "signed by 0 trusted key",
    "signed only by a key the verifier does not trust",
    lambda c: c.signed(keys=[c.other]),
)


@case(
    "signature-counted-twice",
    S,
    "SignatureError",
    "signed by 1 trusted key",
    "the trusted key's signature stored twice (hint-less copy) against a 2-of-2 threshold",
    trusted=(TRUSTED_PUB, SECOND_PUB),
    threshold=2,
)
def _twice(c: Ctx) -> bytes:
    env = json.loads(c.a[c.sig])
    del env["verificationMaterial"]["publicKey"]
    del env["dsseEnvelope"]["signatures"][0]["keyid"]
    return c.rewrite({**c.a, "signatures/" + "0" * 64 + ".sig": _json.dumps(env)})


simple(
    "signature-under-another-key-name",
    S,
    "SignatureError",
    "holds a signature for key",
    "the trusted key's signature filed under the second key's id",
    lambda c: c.with_sig(c.a[c.sig], f"signatures/{c.key2.key_id}.sig"),
    trusted=(TRUSTED_PUB, SECOND_PUB),
)
simple(
    "signature-key-id-mismatch",
    S,
    "SignatureError",
    "mismatched key id",
    "a signature by the trusted key whose hint and keyid name another key",
    lambda c: c.with_sig(
        envelope(
            base64.b64decode(json.loads(c.a[c.sig])["dsseEnvelope"]["payload"]),
            c.key.sign,
            hint=c.other.key_id,
            keyid=c.other.key_id,
        ),
        f"signatures/{c.other.key_id}.sig",
    ),
)
simple(
    "signature-keyid-disagrees-with-hint",
    S,
    "SignatureError",
    "disagree",
    "the DSSE keyid and the public-key hint name different keys",
    lambda c: c.env_edit(
        lambda env, st: env["dsseEnvelope"]["signatures"][0].update(keyid=c.other.key_id)
    ),
)
simple(
    "dsse-wrong-payload-type",
    S,
    "SignatureError",
    "payload type",
    "a DSSE envelope signed over payload type text/plain",
    lambda c: c.env_edit(lambda env, st: env["dsseEnvelope"].update(payloadType="text/plain")),
)
simple(
    "statement-wrong-predicate-type",
    S,
    "SignatureError",
    "predicate type",
    "a validly signed statement with another predicate type",
    lambda c: c.env_edit(lambda env, st: st.update(predicateType="https://slsa.dev/provenance/v1")),
)
simple(
    "statement-wrong-type",
    S,
    "SignatureError",
    "in-toto Statement v1",
    "a validly signed statement of type in-toto v0.1",
    lambda c: c.env_edit(lambda env, st: st.update(_type="https://in-toto.io/Statement/v0.1")),
)
simple(
    "statement-subject-digest",
    S,
    "SignatureError",
    "subject digest",
    "a validly signed statement whose subject digest does not match its resources",
    lambda c: c.env_edit(lambda env, st: st["subject"][0]["digest"].update(sha256="0" * 64)),
)
simple(
    "statement-duplicate-resource",
    S,
    "SignatureError",
    "sorted and unique",
    "a validly signed statement listing model.onnx twice",
    lambda c: c.with_sig(c.sign_statement([c.resources()[0], *c.resources()])),
)
simple(
    "statement-resource-not-canonical",
    S,
    "SignatureError",
    "not canonical",
    "a validly signed statement naming './model.onnx'",
    lambda c: c.with_sig(
        c.sign_statement([("./model.onnx", c.resources()[0][1]), *c.resources()[1:]])
    ),
)
simple(
    "statement-extra-resource",
    S,
    "SignatureError",
    "disagree",
    "a validly signed statement that covers this manifest and one more file",
    lambda c: c.with_sig(c.sign_statement([*c.resources(), ("zz.bin", "0" * 64)])),
)
simple(
    "signature-bad-base64",
    S,
    "SignatureError",
    "not valid base64",
    "the DSSE signature is not base64",
    lambda c: c.with_sig(c.a[c.sig].replace(b'"sig":"', b'"sig":"!!')),
)
simple(
    "signature-two-dsse-signatures",
    S,
    "SignatureError",
    "exactly one DSSE signature",
    "an envelope holding two signatures",
    lambda c: c.with_sig(
        envelope(
            base64.b64decode(json.loads(c.a[c.sig])["dsseEnvelope"]["payload"]),
            c.key.sign,
            hint=c.key.key_id,
            keyid=c.key.key_id,
            sigs=2,
        )
    ),
)
simple(
    "signature-media-type",
    S,
    "SignatureError",
    "media type",
    "a signature entry of another media type",
    lambda c: c.with_sig(c.a[c.sig].replace(b"bundle.v0.3+json", b"bundle.v0.1+json")),
)
simple(
    "signature-not-json",
    S,
    "SignatureError",
    "not valid JSON",
    "a signature entry that is not JSON",
    lambda c: c.with_sig(b"\x00\x01garbage"),
)
simple(
    "signature-entry-bad-name",
    S,
    "FormatError",
    "not a valid signature entry name",
    "a signature stored as signatures/<KEY ID IN CAPITALS>.sig",
    lambda c: c.with_sig(c.a[c.sig], f"signatures/{c.key.key_id.upper()}.sig"),
)
simple(
    "signature-entry-oversized",
    S,
    "LimitError",
    "the limit is",
    "a signature entry of 4 MiB + 1 byte",
    lambda c: c.with_sig(c.a[c.sig] + b" " * ((4 << 20) + 1 - len(c.a[c.sig]))),
)
simple(
    "signature-empty-sig",
    S,
    "SignatureError",
    "signed by 0 trusted key",
    "an envelope whose signature is empty",
    lambda c: c.with_sig(
        c.a[c.sig].replace(
            json.loads(c.a[c.sig])["dsseEnvelope"]["signatures"][0]["sig"].encode(), b""
        )
    ),
)
simple(
    "trusted-key-unsupported-curve",
    S,
    "KeyFileError",
    "unsupported elliptic curve",
    "a valid bundle checked against a trusted key on secp256k1",
    lambda c: c.a_bytes,
    trusted=(K1_PUB,),
)


@case(
    "signature-unsupported-curve",
    S,
    "SignatureError",
    "signed by 0 trusted key",
    "a bundle signed (validly) with a secp256k1 key",
)
def _k1(c: Ctx) -> bytes:
    hint = hashlib.sha256(_pem(c.k1)).hexdigest()
    payload = base64.b64decode(json.loads(c.a[c.sig])["dsseEnvelope"]["payload"])
    ecdsa = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)
    sig = envelope(payload, lambda m: c.k1.sign(m, ecdsa), hint=hint, keyid=hint)
    entries = {k: v for k, v in c.a.items() if k != c.sig}
    return c.rewrite({**entries, f"signatures/{hint}.sig": sig})


@case(
    "threshold-counts-a-signature-refused-alone",
    S,
    "SignatureError",
    "disagree",
    "2-of-2: the first key's statement lists the same digests as the second's but cuts the "
    "weights at another length (refused on its own), the second's is good",
    trusted=(TRUSTED_PUB, SECOND_PUB),
    threshold=2,
)
def _refused_alone(c: Ctx) -> bytes:
    from bundle.format.digest import MIN_SHARD_SIZE

    first, second = sorted((c.key, c.key2), key=lambda k: k.key_id)
    pieces = [
        (f"{f.path}:0:{f.size + (8 if f.role == 'weights' else 0)}", f.sha256)
        for f in c.manifest.files
    ]
    pieces.append((f"{MANIFEST_NAME}:0:{len(c.a[MANIFEST_NAME])}", c.resources()[-1][1]))
    bad = dsse.sign_statement(dsse.build_statement("tiny", pieces, MIN_SHARD_SIZE), first)
    good = dsse.sign_statement(statement_for(c.manifest, c.a[MANIFEST_NAME]), second)
    entries = {k: v for k, v in c.a.items() if k != c.sig}
    return c.rewrite(
        {**entries, f"signatures/{first.key_id}.sig": bad, f"signatures/{second.key_id}.sig": good}
    )


@case(
    "signature-keyid-not-a-string",
    S,
    "SignatureError",
    "keyid is not a string",
    "the only signature's DSSE keyid is the number 5 (and it has no key hint)",
)
def _keyid_number(c: Ctx) -> bytes:
    env = json.loads(c.a[c.sig])
    del env["verificationMaterial"]["publicKey"]
    env["dsseEnvelope"]["signatures"][0]["keyid"] = 5
    return c.with_sig(_json.dumps(env), "signatures/" + "0" * 64 + ".sig")


@case(
    "statement-resource-lone-surrogate",
    S,
    "SignatureError",
    "not canonical",
    "a validly signed statement naming a resource '\\ud800' (no UTF-8 encoding exists)",
)
def _surrogate(c: Ctx) -> bytes:
    resources = [("\ud800", "0" * 64), *c.resources()]
    doc = json.loads(dsse.build_statement("tiny", c.resources()))
    doc["predicate"]["resources"] = [
        {"algorithm": "sha256", "digest": d, "name": n} for n, d in resources
    ]
    doc["subject"][0]["digest"]["sha256"] = dsse.resources_digest(resources)
    statement = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("ascii")
    return c.with_sig(dsse.sign_statement(statement, c.key))


simple(
    "signature-deflated-not-inflated",
    S,
    "FormatError",
    "must be STORED",
    "a DEFLATE signature entry of 256 KiB of JSON: refused from the central directory, "
    "never inflated or parsed",
    lambda c: raw_zip(
        [
            *c.a_raw()[:3],
            deflated(
                c.sig,
                b'{"junk":"'
                + b"".join(
                    hashlib.sha256(i.to_bytes(4, "big")).hexdigest().encode() for i in range(4096)
                )
                + b'"}',
            ),
        ]
    ),
)


# --------------------------------------------------------------------------- signed content

C = "content"


def _location(value: str) -> Callable[[Any], None]:
    def edit(m: Any) -> None:
        for e in m.graph.initializer[0].external_data:
            if e.key == "location":
                e.value = value

    return edit


for _label, _loc in (
    ("dotdot", "../x"),
    ("nested-dotdot", "a/../../x"),
    ("absolute", "/etc/passwd"),
    ("ort-memory-marker", "*/_ORT_MEM_ADDR_/*"),
    ("windows-path", "C:\\Windows\\win.ini"),
    ("inside-weights-then-out", "weights.safetensors/../../x"),
    ("graph-itself", GRAPH_NAME),
):
    simple(
        f"external-data-{_label}",
        C,
        "UntrustedContentError",
        "may only point into weights.safetensors",
        f"signed graph: an initializer's external data location is {_loc!r}",
        _graph_edit(_location(_loc)),
    )


def _ext_field(key: str, value: str) -> Callable[[Any], None]:
    def edit(m: Any) -> None:
        init = m.graph.initializer[0]
        for e in init.external_data:
            if e.key == key:
                e.value = value
                return
        e = init.external_data.add()
        e.key, e.value = key, value

    return edit


simple(
    "external-data-offset-elsewhere",
    C,
    "UntrustedContentError",
    "do not match",
    "signed graph: an initializer reads the weights file from offset 0 (its header)",
    lambda c: c.graph(_ext_field("offset", "0")),
)
simple(
    "external-data-length-past-tensor",
    C,
    "UntrustedContentError",
    "do not match",
    "signed graph: an initializer reads 1 MiB from its offset",
    lambda c: c.graph(_ext_field("length", str(1 << 20))),
)
simple(
    "external-data-extra-key",
    C,
    "UntrustedContentError",
    "exactly location, offset and length",
    "signed graph: external data with a 'basepath' key",
    lambda c: c.graph(_ext_field("basepath", "/")),
)


def _inline_too(m: Any) -> None:
    m.graph.initializer[0].raw_data = b"\0" * 48


simple(
    "external-data-and-inline-data",
    C,
    "UntrustedContentError",
    "inline",
    "signed graph: an external initializer also carrying raw data",
    lambda c: c.graph(_inline_too),
)


def _inline_field(name: str, values: list[Any]) -> Callable[[Ctx], bytes]:
    def edit(m: Any) -> None:
        getattr(m.graph.initializer[0], name).extend(values)

    return lambda c: c.graph(edit)


# Every data field of TensorProto, not only the usual float/int ones: onnxruntime may
# take the inline copy instead of the checked external bytes.
for _field, _values in (
    ("uint64_data", [1, 2, 3]),
    ("string_data", [b"x"]),
    ("float_data", [0.5]),
    ("double_data", [0.5]),
    ("int32_data", [1]),
    ("int64_data", [1]),
):
    simple(
        f"external-data-and-{_field.replace('_', '-')}",
        C,
        "UntrustedContentError",
        "inline",
        f"signed graph: an external initializer also carrying {_field}",
        _inline_field(_field, _values),
    )


def _sparse_initializer(m: Any) -> None:
    from onnx import TensorProto, helper

    # 7 bytes of values that onnxruntime densifies at session creation: here 4 MB, but
    # the dense shape is the signer's to choose (2**28 x 4 would be 4 GiB).
    values = helper.make_tensor("S", TensorProto.FLOAT, [1], [1.0])
    indices = helper.make_tensor("S_i", TensorProto.INT64, [1], [0])
    m.graph.sparse_initializer.append(helper.make_sparse_tensor(values, indices, [1 << 18, 4]))


def _sparse_constant(m: Any) -> None:
    from onnx import TensorProto, helper

    values = helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])
    indices = helper.make_tensor("i", TensorProto.INT64, [1], [0])
    m.graph.node.insert(
        0,
        helper.make_node(
            "Constant",
            [],
            ["sparse_c"],
            sparse_value=helper.make_sparse_tensor(values, indices, [1 << 18, 4]),
        ),
    )


simple(
    "graph-sparse-initializer",
    C,
    "UntrustedContentError",
    "sparse",
    "signed graph with a sparse initializer (onnxruntime densifies it at load: a few "
    "bytes become the dense shape's size in memory)",
    lambda c: c.graph(_sparse_initializer),
)
simple(
    "graph-sparse-constant",
    C,
    "UntrustedContentError",
    "sparse",
    "signed graph with a Constant node holding a sparse_value (densified likewise)",
    lambda c: c.graph(_sparse_constant),
)


def _node_domain(m: Any) -> None:
    m.graph.node[2].domain = "com.evil"


def _opset(m: Any) -> None:
    from onnx import helper

    m.opset_import.append(helper.make_opsetid("com.microsoft", 1))


def _epcontext(m: Any) -> None:
    m.graph.node[2].op_type = "EPContext"
    m.graph.node[2].domain = "com.microsoft"


def _epcontext_default(m: Any) -> None:
    m.graph.node[2].op_type = "EPContext"


def _function(m: Any) -> None:
    from onnx import helper

    m.functions.append(
        helper.make_function(
            "local",
            "F",
            ["a"],
            ["b"],
            [helper.make_node("Relu", ["a"], ["b"])],
            [helper.make_opsetid("", 17)],
        )
    )


def _subgraph(m: Any) -> None:
    from onnx import TensorProto, helper

    then = helper.make_graph(
        [helper.make_node("Evil", ["Z"], ["t"], domain="com.evil")],
        "then",
        [],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)],
    )
    els = helper.make_graph(
        [helper.make_node("Identity", ["Z"], ["e"])],
        "else",
        [],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)],
    )
    m.graph.node.append(
        helper.make_node("If", ["cond"], ["unused"], then_branch=then, else_branch=els)
    )


def _attr_external(m: Any) -> None:
    from onnx import TensorProto, helper

    t = helper.make_tensor("c", TensorProto.FLOAT, [1], [0.0])
    t.ClearField("float_data")
    t.data_location = TensorProto.EXTERNAL
    e = t.external_data.add()
    e.key, e.value = "location", "../secret"
    m.graph.node.insert(0, helper.make_node("Constant", [], ["c"], value=t))


def _training_info(m: Any) -> None:
    from onnx import TensorProto, helper

    info = m.training_info.add()
    info.algorithm.CopyFrom(
        helper.make_graph(
            [helper.make_node("Relu", ["a"], ["b"])],
            "train",
            [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1])],
            [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1])],
        )
    )


for _label, _edit, _msg, _what in (
    ("custom-domain-node", _node_domain, "custom-domain", "a node in domain com.evil"),
    (
        "custom-opset-import",
        _opset,
        "imports operator set domain",
        "an opset import of com.microsoft",
    ),
    ("epcontext-node", _epcontext, "EPContext", "an EPContext node (precompiled engine)"),
    (
        "epcontext-default-domain",
        _epcontext_default,
        "EPContext",
        "an EPContext node claiming the default domain",
    ),
    ("model-local-function", _function, "model-local function", "a model-local function"),
    ("custom-op-in-subgraph", _subgraph, "com.evil", "a custom op inside an If branch"),
    (
        "attribute-tensor-external",
        _attr_external,
        "external data",
        "a Constant whose tensor reads external data '../secret'",
    ),
    ("training-info-graph", _training_info, "training_info", "an ONNX training_info graph"),
):
    simple(
        f"graph-{_label}",
        C,
        "UntrustedContentError",
        _msg,
        f"signed graph with {_what}",
        _graph_edit(_edit),
    )


@case(
    "graph-over-size-limit",
    C,
    "LimitError",
    "the limit is",
    "a signed manifest listing a graph of 1 GiB + 1 byte (DEFLATE, ratio under 200)",
)
def _big_graph(c: Ctx) -> bytes:
    size = (1 << 30) + 1
    csize = size // 200 + 1
    files = [FileEntry(GRAPH_NAME, "graph", size, "ab" * 32), c.manifest.files[1]]
    manifest = dataclasses.replace(c.manifest, files=tuple(files))
    mbytes = manifest.to_bytes()
    sig = dsse.sign_statement(statement_for(manifest, mbytes), c.key)
    raws = c.a_raw()
    raws[0] = Raw(GRAPH_NAME.encode(), bytes(csize), 8, 0, size)
    raws[2] = stored(MANIFEST_NAME, mbytes)
    raws[3] = stored(c.sig, sig)
    return raw_zip(raws)


def _pb(field_no: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field."""

    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
            n >>= 7
            if not n:
                return bytes(out)

    return varint(field_no << 3 | 2) + varint(len(payload)) + payload


@case(
    "graph-nesting-bomb",
    C,
    "FormatError",
    "not a valid ONNX model",
    "a signed graph of Loop bodies nested 500 deep (protobuf recursion)",
)
def _nesting(c: Ctx) -> bytes:
    graph = b""
    for _ in range(500):
        attribute = _pb(1, b"body") + _pb(6, graph) + b"\xa0\x01\x05"  # type = GRAPH
        graph = _pb(1, _pb(4, b"Loop") + _pb(5, attribute))
    model = b"\x08\x08" + _pb(8, b"\x10\x11") + _pb(7, graph)  # ir 8, opset 17
    return c.signed({**c.content(), GRAPH_NAME: model})


simple(
    "graph-name-not-utf8",
    C,
    "FormatError",
    "not valid UTF-8",
    "a signed graph whose node output name is not UTF-8",
    lambda c: c.signed({**c.content(), GRAPH_NAME: c.a[GRAPH_NAME].replace(b"XW", b"X\xff")}),
)
simple(
    "graph-not-onnx",
    C,
    "FormatError",
    "not a valid ONNX model",
    "a signed graph entry of 0xff bytes",
    lambda c: c.signed({**c.content(), GRAPH_NAME: b"\xff" * 64}),
)
simple(
    "graph-empty-model",
    C,
    "FormatError",
    "holds no graph",
    "a signed graph entry that is an empty ModelProto",
    lambda c: c.signed({**c.content(), GRAPH_NAME: b""}),
)


def _st(header: dict[str, Any], size: int) -> bytes:
    from helpers import safetensors_bytes

    return safetensors_bytes(header, bytes(i % 251 for i in range(size)))


def _t(dtype: str, shape: list[int], begin: int, end: int) -> dict[str, Any]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


for _label, _weights, _err, _msg, _what in (
    (
        "header-oversized",
        (100_000_001).to_bytes(8, "little") + b"{}",
        "LimitError",
        "exceeds the limit",
        "a header length of 100 MB + 1",
    ),
    (
        "header-length-huge",
        (1 << 63).to_bytes(8, "little") + b"{}",
        "LimitError",
        "exceeds the limit",
        "a header length of 2**63",
    ),
    (
        "header-past-end",
        (4096).to_bytes(8, "little") + b"{}",
        "FormatError",
        "runs past the end",
        "a header length past the end of the entry",
    ),
    ("too-short", b"\x08\0\0", "FormatError", "too short", "3 bytes"),
    (
        "overlap",
        _st({"B": _t("F32", [3], 0, 12), "W": _t("F32", [4, 3], 8, 56)}, 56),
        "FormatError",
        "overlaps",
        "two tensors sharing bytes",
    ),
    (
        "gap",
        _st({"B": _t("F32", [3], 0, 12), "W": _t("F32", [4, 3], 16, 64)}, 64),
        "FormatError",
        "gap",
        "a gap between tensors",
    ),
    (
        "trailing-bytes",
        _st({"B": _t("F32", [3], 0, 12), "W": _t("F32", [4, 3], 12, 60)}, 64),
        "FormatError",
        "trailing bytes",
        "4 bytes after the last tensor",
    ),
    (
        "dtype-times-shape",
        _st({"B": _t("F32", [3], 0, 12), "W": _t("F64", [4, 3], 12, 60)}, 60),
        "FormatError",
        "needs",
        "F64 x [4, 3] in 48 bytes",
    ),
    (
        "shape-overflow",
        _st({"B": _t("F32", [3], 0, 12), "W": _t("F32", [1 << 62, 1 << 62], 12, 60)}, 60),
        "FormatError",
        "overflows",
        "a shape whose product overflows 64 bits",
    ),
    (
        "negative-dim",
        _st({"B": _t("F32", [-3], 0, 12)}, 12),
        "FormatError",
        "invalid shape",
        "a negative dimension",
    ),
    (
        "offsets-outside",
        _st({"B": _t("F32", [3], 0, 12), "W": _t("F32", [4, 3], 12, 4000)}, 60),
        "FormatError",
        "outside the data area",
        "data_offsets past the end",
    ),
    (
        "offsets-reversed",
        _st({"B": _t("F32", [0], 12, 0)}, 12),
        "FormatError",
        "outside the data area",
        "data_offsets [12, 0]",
    ),
    (
        "offsets-bool",
        _st({"B": {"dtype": "F32", "shape": [3], "data_offsets": [False, 12]}}, 12),
        "FormatError",
        "invalid data_offsets",
        "a boolean offset",
    ),
    (
        "unsupported-dtype",
        _st({"B": _t("F8_E4M3", [3], 0, 3)}, 3),
        "FormatError",
        "unsupported dtype",
        "dtype F8_E4M3",
    ),
    (
        "extra-tensor-field",
        _st({"B": {**_t("F32", [3], 0, 12), "x": 1}}, 12),
        "FormatError",
        "exactly dtype, shape, data_offsets",
        "an extra field in a tensor entry",
    ),
    (
        "metadata-not-string",
        _st({"__metadata__": {"a": 1}, "B": _t("F32", [3], 0, 12)}, 12),
        "FormatError",
        "__metadata__",
        "a metadata value that is a number",
    ),
    (
        "metadata-not-object",
        _st({"__metadata__": ["a"], "B": _t("F32", [3], 0, 12)}, 12),
        "FormatError",
        "__metadata__",
        "metadata that is a list",
    ),
    (
        "duplicate-name",
        (lambda raw: len(raw).to_bytes(8, "little") + raw + bytes(24))(
            b'{"B":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},'
            b'"B":{"dtype":"F32","shape":[3],"data_offsets":[12,24]}}'
        ),
        "FormatError",
        "duplicate key",
        "the same tensor name twice",
    ),
    (
        "not-json",
        (8).to_bytes(8, "little") + b"{nope!!}",
        "FormatError",
        "not valid JSON",
        "a header that is not JSON",
    ),
    (
        "not-object",
        (2).to_bytes(8, "little") + b"[]",
        "FormatError",
        "start with",
        "a header that is a JSON list",
    ),
):
    simple(
        f"safetensors-{_label}",
        C,
        _err,
        _msg,
        f"signed weights with {_what}",
        _with_weights(_weights),
    )


@case(
    "safetensors-unused-tensor",
    C,
    "UntrustedContentError",
    "never uses",
    "signed weights holding a tensor no initializer reads",
)
def _unused(c: Ctx) -> bytes:
    from helpers import safetensors_bytes

    from bundle.format.weights import Header, bind_external

    w = c.a[WEIGHTS_NAME]
    h = parse_header(w, len(w))
    header = {n: _t(t.dtype, list(t.shape), t.begin, t.end) for n, t in h.tensors.items()}
    end = max(t.end for t in h.tensors.values())
    header["secret"] = _t("U8", [4], end, end + 4)
    new = safetensors_bytes(header, w[h.data_start :] + b"evil")
    nh = parse_header(new, len(new))

    def rebind(m: Any) -> None:
        for init in m.graph.initializer:
            del init.external_data[:]
        bind_external(m, Header(nh.tensors, {}, nh.data_start))

    import onnx

    m = onnx.ModelProto()
    m.ParseFromString(c.a[GRAPH_NAME])
    rebind(m)
    return c.signed({GRAPH_NAME: m.SerializeToString(), WEIGHTS_NAME: new})


# --------------------------------------------------------------------------- pickle

P = "pickle"

simple(
    "pickle-unlisted-txt",
    P,
    "IntegrityError",
    "not listed in the manifest",
    "a pickle stream added as notes.txt, unlisted and unsigned",
    lambda c: c.rewrite({**c.a, "notes.txt": PICKLE}),
)
simple(
    "pickle-signed-asset-txt",
    P,
    "UntrustedContentError",
    "notes.txt",
    "a pickle stream listed and signed as an 'asset' named notes.txt",
    lambda c: c.signed({**c.content(), "notes.txt": PICKLE}, roles={"notes.txt": "asset"}),
)
simple(
    "pickle-signed-training-state",
    P,
    "FormatError",
    "training/state.json",
    "a pickle stream listed and signed as training/state.json",
    lambda c: c.signed(
        {**c.content(), "training/state.json": PICKLE},
        roles={"training/state.json": "training_state"},
    ),
)
simple(
    "pickle-as-weights",
    P,
    "LimitError",
    "exceeds the limit",
    "a signed pickle stream in place of weights.safetensors",
    lambda c: c.weights(PICKLE),
)
simple(
    "pickle-as-graph",
    P,
    "FormatError",
    "model.onnx",
    "a signed pickle stream in place of model.onnx",
    lambda c: c.signed({**c.content(), GRAPH_NAME: PICKLE}),
)
simple(
    "pickle-as-manifest",
    P,
    "FormatError",
    "not valid UTF-8",
    "a signed pickle stream in place of manifest.json",
    lambda c: c.signed_manifest(PICKLE),
)
simple(
    "pickle-as-signature",
    P,
    "SignatureError",
    "not valid JSON",
    "a pickle stream in place of the signature entry",
    lambda c: c.with_sig(PICKLE),
)
simple(
    "pickle-whole-file",
    P,
    "FormatError",
    "not a zip archive",
    "the file is a pickle stream",
    lambda c: PICKLE,
)
simple(
    "pickle-torch-style-zip",
    P,
    "FormatError",
    "no manifest.json",
    "a torch.save-style zip (archive/data.pkl) renamed .mbundle",
    lambda c: raw_zip([stored("archive/data.pkl", PICKLE), stored("archive/version", b"3\n")]),
)
simple(
    "pickle-between-entries-of-signed-bundle",
    P,
    "FormatError",
    "preceded by bytes",
    "a pickle stream between the manifest and the signature of a signed bundle",
    lambda c: raw_zip(c.a_raw(), gaps={3: PICKLE}),
)


# --------------------------------------------------------------------------- build


def _write_keys(ctx: Ctx, out: Path) -> None:
    (out / TRUSTED_PUB).write_bytes(ctx.key.public_key.pem())
    (out / SECOND_PUB).write_bytes(ctx.key2.public_key.pem())
    (out / K1_PUB).write_bytes(_pem(ctx.k1))


def _self_check(ctx: Ctx) -> None:
    """The raw writer reproduces the package's bundle exactly: each case is one change."""
    if raw_zip(ctx.a_raw()) != ctx.a_bytes:
        raise RuntimeError(
            "raw_zip(a_raw()) differs from the package writer's bytes: the "
            "container cases would not be single changes of a real bundle"
        )


def specs() -> Iterator[_Spec]:
    """The registered case specifications, in registration order."""
    yield from _SPECS


def build(out: str | os.PathLike[str]) -> list[Case]:
    """Write every case, the keys and ``cases.json`` into ``out``; return the cases."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cases: list[Case] = []
    with tempfile.TemporaryDirectory(prefix="adversarial-") as work:
        ctx = Ctx(Path(work))
        _self_check(ctx)
        _write_keys(ctx, out)
        for s in _SPECS:
            data = s.make(ctx)
            file = f"{s.name}.mbundle"
            (out / file).write_bytes(data)
            cases.append(
                Case(
                    s.name,
                    s.category,
                    s.description,
                    s.error,
                    s.message,
                    file,
                    sha256_bytes(data),
                    s.trusted,
                    s.threshold,
                    s.known_gap,
                )
            )
    (out / INDEX).write_text(json.dumps([c.to_dict() for c in cases], indent=1) + "\n")
    return cases


def load_index(out: str | os.PathLike[str]) -> list[Case]:
    """The cases described by ``out/cases.json``."""
    return [Case.from_dict(d) for d in json.loads((Path(out) / INDEX).read_text())]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python tests/adversarial/generate.py OUTDIR", file=sys.stderr)
        return 2
    cases = build(args[0])
    by: dict[str, int] = {}
    for c in cases:
        by[c.error] = by.get(c.error, 0) + 1
    print(
        f"{len(cases)} cases in {args[0]}: " + ", ".join(f"{k} {v}" for k, v in sorted(by.items()))
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
