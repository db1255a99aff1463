"""Coverage-guided fuzzing of ``bundle.verify`` and ``bundle.load`` (atheris / libFuzzer).

    python fuzz/fuzz_verify.py [libFuzzer flags] WORK_CORPUS fuzz/corpus
    python fuzz/fuzz_verify.py --make-seeds fuzz/corpus     # (re)write the seed files

``bash fuzz/run.sh N`` installs atheris if needed and runs N inputs. Any exception
other than a :class:`bundle.BundleError` from verify or load is a crash.

The first input byte picks what the rest is:

* even: the bundle file itself (mutations of signed bundles reach the zip
  reader, the signature layer and, rarely, everything behind them);
* odd: the new bytes of one entry -- ``(byte >> 1) % 3`` picks the graph, the
  weights or the manifest -- of a small bundle that is then hashed and
  **signed by the trusted key**, so the content parsers (safetensors header,
  ONNX checks, manifest schema, canonical JSON) see inputs no signature check
  filters out: the signed-but-malicious case.

``load`` runs after ``verify`` accepts, and after a refusal too when bit 7 of
the first byte is set (it repeats verify's checks, with the weights read into
memory rather than streamed; running it on every refusal would halve the rate).

:func:`run_one` is the whole harness and needs no atheris: the seed corpus and
crash reproducers are replayed by ``tests/test_fuzz_corpus.py``.
"""

from __future__ import annotations

import io
import os
import re
import sys
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
KNOWN_BUGS: dict[str, tuple[str, str]] = {
    # name -> (regex over "ExceptionType: message | file of the last bundle frame", report)
    # (empty: json-float-overflow, found here and in tests/test_adversarial.py, is fixed;
    # its reproducer is fuzz/crashes/crash-json-float-overflow-signed-manifest)
}
"""Bugs already reported, in code this harness's author may not change. They are
counted and printed, not treated as crashes, unless FUZZ_STRICT=1 is set; once
fixed, remove them here."""


@dataclass(frozen=True)
class Outcome:
    """What one input did: accepted by verify and/or load, or refused, or a known bug."""

    verified: bool
    loaded: bool
    known_bug: str | None = None


class Harness:
    """Builds inputs into a bundle file and runs verify and load on it."""

    def __init__(self, work: Path | None = None) -> None:
        from bundle.format.manifest import Manifest

        self._tmp = tempfile.TemporaryDirectory(prefix="fuzz-verify-")  # run.sh: in RAM
        self.work = Path(work or self._tmp.name)
        self.path = self.work / "input.mbundle"
        self.key = _trusted_key()
        self.trust = __import__("bundle").TrustStore([self.key.public_key])
        base = self.work / "base.mbundle"
        _save_base(base, self.key)
        from bundle.export.writer import GRAPH_NAME
        from bundle.format.archive import ZipReader
        from bundle.format.manifest import MANIFEST_NAME
        from bundle.format.weights import WEIGHTS_NAME

        with ZipReader(base) as r:
            self.base = {n: r.read(n, max_size=1 << 20) for n in r.entries}
        self.manifest = Manifest.from_bytes(self.base[MANIFEST_NAME])
        self.names = (GRAPH_NAME, WEIGHTS_NAME, MANIFEST_NAME)
        self.base_file = base.read_bytes()
        self.known: dict[str, int] = {}
        self.outcomes: dict[str, int] = {"refused": 0, "verified": 0, "loaded": 0}

    def close(self) -> None:
        self._tmp.cleanup()

    # -- building inputs

    def signed_with(self, target: str, data: bytes) -> bytes:
        """The base bundle with ``target``'s bytes replaced, hashed and signed."""
        from bundle.export.writer import statement_for
        from bundle.format.archive import EntryData, ZipWriter
        from bundle.format.digest import sha256_bytes
        from bundle.format.manifest import MANIFEST_NAME, FileEntry
        from bundle.trust import dsse

        graph_name, weights_name, _ = self.names
        contents = {graph_name: self.base[graph_name], weights_name: self.base[weights_name]}
        if target != MANIFEST_NAME:
            contents[target] = data
        files = tuple(
            FileEntry(n, "graph" if n == graph_name else "weights", len(d), sha256_bytes(d))
            for n, d in sorted(contents.items())
        )
        manifest = replace(self.manifest, files=files)
        mbytes = data if target == MANIFEST_NAME else manifest.to_bytes()
        sig = dsse.sign_statement(statement_for(manifest, mbytes), self.key)
        buf = io.BytesIO()
        w = ZipWriter(buf)
        for name, d in sorted(contents.items()):
            w.write(EntryData(name, d, compress=(name == graph_name), align=(name == weights_name)))
        w.write(EntryData(MANIFEST_NAME, mbytes))
        w.write(EntryData(f"signatures/{self.key.key_id}.sig", sig))
        w.close()
        return buf.getvalue()

    def file_for(self, data: bytes) -> bytes:
        """The bundle file an input stands for (see the module docstring)."""
        if not data:
            return b""
        if data[0] % 2 == 0:
            return data[1:]
        return self.signed_with(self.names[(data[0] >> 1) % 3], data[1:])

    # -- running

    def run(self, data: bytes) -> Outcome:
        """verify then load the input's bundle; raise anything that is not a BundleError."""
        import bundle

        self.path.write_bytes(self.file_for(data))
        results = []
        for call in (
            lambda: bundle.verify(self.path, trusted_keys=self.trust),
            lambda: bundle.load(self.path, trusted_keys=self.trust, device="cpu"),
        ):
            if results and not results[0] and not (data and data[0] & 0x80):
                results.append(False)  # refused by verify: load only when bit 7 asks
                break
            try:
                call()
                results.append(True)
            except bundle.BundleError:
                results.append(False)
            except Exception as e:
                name = self._known(e)
                if name is None:
                    raise
                self.known[name] = self.known.get(name, 0) + 1
                return Outcome(False, False, name)
        self.outcomes["verified" if results[0] else "refused"] += 1
        self.outcomes["loaded"] += results[1]
        return Outcome(results[0], results[1])

    @staticmethod
    def _known(e: BaseException) -> str | None:
        if os.environ.get("FUZZ_STRICT") == "1":
            return None
        frames = [f for f in traceback.extract_tb(e.__traceback__) if "bundle" in f.filename]
        where = frames[-1].filename if frames else ""
        text = f"{type(e).__name__}: {e} | {where}"
        for name, (pattern, _why) in KNOWN_BUGS.items():
            if re.search(pattern, text, re.DOTALL):
                return name
        return None


_harness: Harness | None = None


def run_one(data: bytes) -> Outcome:
    """The fuzz target: one input through verify and load (a shared Harness)."""
    global _harness
    if _harness is None:
        _harness = Harness()
    return _harness.run(data)


# --------------------------------------------------------------------------- seeds


def _trusted_key() -> object:
    """The fuzzing key: fixed, so seed files stay signed by it across runs."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from bundle.trust import signing

    scalar = int.from_bytes(b"model-bundle fuzz trusted key...", "big") >> 2 | 1
    return signing.PrivateKey(ec.derive_private_key(scalar, ec.SECP256R1()))


def _tiny_model() -> object:
    """X[N,4] @ W[4,3] + B[3] -> Relu (the same model as tests/helpers.tiny_model)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["X", "W"], ["XW"], name="matmul"),
            helper.make_node("Add", ["XW", "B"], ["Z"], name="add"),
            helper.make_node("Relu", ["Z"], ["Y"], name="act"),
        ],
        "tiny",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 3])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="fuzz"
    )
    model.ir_version = 8
    return model


def _save_base(path: Path, key: object) -> None:
    import bundle

    bundle.save(_tiny_model(), path, signing_key=key, name="tiny")  # type: ignore[arg-type]


def make_seeds(out: Path) -> list[Path]:
    """Write the seed corpus: the signed bundle whole, and each entry in signed mode."""
    h = Harness()
    try:
        out.mkdir(parents=True, exist_ok=True)
        seeds = {"bundle-signed": b"\x00" + h.base_file}
        for i, name in enumerate(h.names):
            seeds[f"signed-{name.split('.')[0]}"] = bytes([1 + 2 * i]) + h.base[name]
        seeds["bundle-unsigned"] = b"\x00" + _unsigned(h)
        seeds["bundle-zip64-end-records"] = b"\x00" + _zip64_tail(h.base_file)
        paths = []
        for label, data in seeds.items():
            outcome = h.run(data)
            if (outcome.verified and outcome.loaded) != (label in _VALID_SEEDS):
                raise RuntimeError(f"seed {label}: verify/load gave {outcome}")
            p = out / f"seed-{label}"
            p.write_bytes(data)
            paths.append(p)
        return paths
    finally:
        h.close()


_VALID_SEEDS = {"bundle-signed", "signed-model", "signed-weights", "signed-manifest"}


def _zip64_tail(data: bytes) -> bytes:
    """``data`` with zip64 end records it does not need (refused; seeds the zip64 paths)."""
    import struct

    sig, _d, _c, n, _n, size, offset, _l = struct.unpack("<IHHHHIIH", data[-22:])
    body = data[:-22]
    record = struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, (3 << 8) | 20, 45, 0, 0, n, n, size, offset)
    locator = struct.pack("<IIQI", 0x07064B50, 0, len(body), 1)
    return (
        body
        + record
        + locator
        + struct.pack("<IHHHHIIH", sig, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    )


def _unsigned(h: Harness) -> bytes:
    """The base bundle without its signature entry (refused: unsigned)."""
    from bundle.format.archive import EntryData, ZipWriter

    buf = io.BytesIO()
    w = ZipWriter(buf)
    graph_name, weights_name, _ = h.names
    for name, d in h.base.items():
        if not name.startswith("signatures/"):
            w.write(EntryData(name, d, compress=(name == graph_name), align=(name == weights_name)))
    w.close()
    return buf.getvalue()


# --------------------------------------------------------------------------- main


def _import_load_path() -> None:
    """Import every top-level bundle module now, so the instrumentation sees them all
    (the load path imports several lazily, which would leave them uninstrumented)."""
    import contextlib
    import importlib
    import pkgutil

    import bundle

    for info in pkgutil.iter_modules(bundle.__path__):
        if info.ispkg or info.name in ("__main__", "cli"):
            continue
        # an optional framework module (keras...) is not on the load path
        with contextlib.suppress(ImportError):
            importlib.import_module(f"bundle.{info.name}")


def main(argv: list[str]) -> int:
    if argv[1:2] == ["--make-seeds"]:
        for p in make_seeds(Path(argv[2])):
            print(p)
        return 0
    import atheris

    with atheris.instrument_imports(include=["bundle"]):
        _import_load_path()

    # Everything the load path imports lazily, imported now: outside the timed inputs.
    import onnx  # noqa: F401
    import onnxruntime  # noqa: F401

    runs = next((int(a.split("=", 1)[1]) for a in argv if a.startswith("-runs=")), 0)
    count = 0
    reported: set[str] = set()
    target: Callable[[bytes], Outcome] = run_one
    run_one(b"")

    def report() -> None:
        known = _harness.known if _harness else {}
        outcomes = _harness.outcomes if _harness else {}
        print(
            f"fuzz_verify: {count} inputs through verify+load ({outcomes}); no exception "
            f"but BundleError; known bugs hit: {known or 'none'}",
            file=sys.stderr,
            flush=True,
        )
        for name in known:
            print(f"  {name}: {KNOWN_BUGS[name][1]}", file=sys.stderr, flush=True)

    def test_one(data: bytes) -> None:
        # libFuzzer ends the process with exit(): report from here, not from atexit
        nonlocal count
        count += 1
        outcome = target(data)
        if outcome.known_bug and outcome.known_bug not in reported:
            reported.add(outcome.known_bug)
            report()
        if count == runs:
            report()

    atheris.Setup(argv, test_one)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
