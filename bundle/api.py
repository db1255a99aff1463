"""The public functions: save, load, verify, inspect, sign."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import (
    BundleError,
    ConversionError,
    FormatError,
    InputError,
    IntegrityError,
    KeyFileError,
    SignatureError,
)
from .format.archive import ALIGNMENT, ZipReader, journal_path
from .format.assets import check_assets
from .format.manifest import (
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    Manifest,
)
from .format.versions import format_time
from .format.weights import WEIGHTS_NAME
from .training.codec import check_entries as check_training_entries
from .trust import dsse, signing
from .trust.policy import TrustPolicy, resolve_policy
from .trust.verify import VerifyReport, signature_entries, verify_archive

if TYPE_CHECKING:
    from .export.options import SklearnOptions, TensorFlowOptions, TorchOptions
    from .runtime.model import Model

__all__ = [
    "CheckReport",
    "Inspection",
    "Verified",
    "check",
    "convert_opset",
    "inspect",
    "load",
    "repair",
    "restore",
    "save",
    "sign",
    "verified",
    "verify",
]

KeyLike = signing.PrivateKey | str | os.PathLike[str]


def _signing_keys(
    signing_key: KeyLike | Sequence[KeyLike] | None,
    passphrase: bytes | None,
    certificate_chain: Any = None,
) -> list[signing.PrivateKey]:
    """Load the keys; a certificate chain goes to the key its leaf certifies."""
    if signing_key is None:
        if certificate_chain is not None:
            raise KeyFileError("certificate_chain given without a signing_key")
        return []
    items: list[Any] = (
        list(signing_key) if isinstance(signing_key, (list, tuple)) else [signing_key]
    )
    keys = [signing.load_private_key(k, passphrase) for k in items]
    if certificate_chain is None:
        return keys
    from .trust.certs import load_certificates

    chain = load_certificates(certificate_chain, "certificate chain")
    leaf_pem = signing.PublicKey(chain[0].public_key()).pem()  # type: ignore[arg-type]
    for i, k in enumerate(keys):
        if k.public_key.pem() == leaf_pem:
            keys[i] = k.with_certificates(chain)
            return keys
    raise KeyFileError(
        f"the certificate {chain[0].subject.rfc4514_string()} does not certify "
        "any of the signing keys (give the leaf certificate first)"
    )


def save(
    model: Any,
    path: str | os.PathLike[str],
    *,
    sample_input: Any = None,
    signing_key: KeyLike | Sequence[KeyLike] | None = None,
    passphrase: bytes | None = None,
    certificate_chain: Any = None,
    expires: Any = None,
    name: str | None = None,
    version: str = "1",
    description: str = "",
    metadata: Mapping[str, str] | None = None,
    tolerance: tuple[float, float] | None = None,
    accept_mismatch: bool = False,
    created: str | None = None,
    target_opset: int | None = None,
    precision: str = "fp32",
    options: TorchOptions | TensorFlowOptions | SklearnOptions | None = None,
    dynamic_axes: Mapping[str, Any] | None = None,
    exporter: str | None = None,
    optimizer: Any = None,
    scheduler: Any = None,
    include_rng: bool = False,
    training_state: bool | None = None,
    signature: str | None = None,
) -> Manifest:
    """Export ``model`` to a bundle at ``path`` and return its manifest.

    ``model`` is a fitted scikit-learn estimator or pipeline, an ``onnx.ModelProto``
    or a path to an ``.onnx`` file. ``sample_input`` (a few rows: array or
    DataFrame) fixes the input signature and is used to measure parity against
    the original; a disagreement beyond ``tolerance`` (atol, rtol) raises
    :class:`ConversionError` unless ``accept_mismatch``. ``signing_key`` (a key,
    a PEM path, or several) signs the bundle; without one it is unsigned.
    ``certificate_chain`` (certificates, PEM/DER bytes or files, leaf first) is
    embedded in the signature of the key its leaf certifies, for verifiers that
    trust a root CA rather than the key. ``expires`` (an aware datetime, a
    timedelta from now, or ``"YYYY-MM-DDTHH:MM:SSZ"``) is recorded in the signed
    manifest; verifiers refuse the bundle from then on. ``version`` should be
    dot-separated integers for verifiers to apply rollback protection.
    ``created`` is an optional timestamp string recorded as given (none by
    default, so the same model gives the same bytes). ``precision`` "fp16" or
    "int8" stores a compressed variant; its deviation from the original is
    measured and recorded like any conversion's (default tolerances per precision
    in :data:`bundle.export.precision.DEFAULT_TOLERANCE`).

    ``options`` is the framework's export options, :class:`bundle.SklearnOptions`,
    :class:`bundle.TorchOptions` or
    :class:`bundle.TensorFlowOptions`; the keywords below are shortcuts that build it
    (give one or the other; a keyword the model's framework does not take is a
    ``TypeError``).

    Compatibility: the graph is run once on this machine's onnxruntime (a bundle it
    cannot load is never written), stamped with the lowest IR version its opsets
    and types allow, and -- unless ``target_opset`` is given, which is then kept --
    with each standard domain's opset lowered to the highest one its operators use
    (no operator changes meaning; see :func:`bundle.format.compat.restamp_opsets`).
    The manifest's ``requires`` block says what a runtime must offer, and the first
    rows of ``sample_input`` with the outputs computed here are kept as signed smoke
    vectors (:meth:`bundle.Model.self_test`, :func:`bundle.check`).

    PyTorch ``nn.Module``: ``sample_input`` is a tensor, a tuple of tensors or a dict
    of named tensors (one row is enough); axis 0 of each input is dynamic unless
    ``dynamic_axes`` (``{input: {axis: "name"}}``) says otherwise. ``exporter``:
    "auto" (dynamo, falling back to TorchScript with a warning), "dynamo" or
    "torchscript". The bundle also holds the module's training state (every
    parameter and buffer exactly, see :mod:`bundle.training.torch`) unless
    ``training_state=False``; ``optimizer``, ``scheduler`` and ``include_rng`` add
    their states, for :func:`restore`. A reduced ``precision`` ("fp16", "int8")
    bundle holds training state only when asked: ``training_state=True``, or an
    ``optimizer``/``scheduler`` (or ``include_rng``) given; the same holds for Keras.

    Keras 3 model (Sequential, functional, subclassed), ``tf.Module`` or SavedModel
    directory (through tf2onnx, see :mod:`bundle.export.tensorflow`):
    ``sample_input`` is an array, a list of arrays or a dict of named arrays, as
    the model takes them; axis 0 and every ``None`` axis of a ``keras.Input`` are
    dynamic unless ``dynamic_axes`` says otherwise (a tf.function's input
    signature decides for the others). ``signature`` names the tf.Module method
    (default ``__call__``) or the SavedModel signature (default
    ``serving_default``). A Keras model's variables are kept for :func:`restore`
    unless ``training_state=False``; ``optimizer`` (``model.optimizer``) adds the
    optimizer's (see :mod:`bundle.training.keras`).
    """
    from .export import convert, converter_name
    from .export.bundler import write_converted
    from .export.options import SklearnOptions, options_for

    keys = _signing_keys(signing_key, passphrase, certificate_chain)
    try:
        expires_at = None if expires is None else format_time(expires)
    except ValueError as e:
        raise ConversionError(f"expires: {e}") from e
    typed = options_for(
        converter_name(model),
        options,
        {
            "dynamic_axes": dynamic_axes,
            "exporter": exporter,
            "optimizer": optimizer,
            "scheduler": scheduler,
            "include_rng": include_rng or None,
            "training_state": training_state,
            "signature": signature,
        },
    )
    if (
        precision != "fp32"
        and typed is not None
        and not isinstance(typed, SklearnOptions)
        and typed.training_state is None
        and not typed.wants_training_state
    ):
        # A reduced-precision bundle is for serving: the full-precision training state
        # beside its weights would make it bigger than the fp32 bundle. Kept when asked.
        typed = dataclasses.replace(typed, training_state=False)
    converted = convert(model, sample_input, target_opset=target_opset, options=typed)
    model_name = (
        name or type(model).__name__
        if not isinstance(model, (str, os.PathLike))
        else name or os.path.splitext(os.path.basename(os.path.normpath(os.fspath(model))))[0]
    )
    return write_converted(
        converted,
        path,
        keys,
        name=model_name,
        version=version,
        description=description,
        metadata=metadata,
        tolerance=tolerance,
        accept_mismatch=accept_mismatch,
        created=created,
        precision=precision,
        expires_at=expires_at,
        restamp=target_opset is None,
    )


def _open_verified(
    path: str | os.PathLike[str],
    policy: TrustPolicy,
    weights_in_memory: bool,
    progress: Any = None,
    in_memory: tuple[str, ...] = (),
) -> Any:
    for attempt in range(_TORN_RETRIES + 1):
        # An in-place sign rewrites the file's tail (signatures, central directory)
        # while its journal exists; a reader that failed meanwhile may have read a
        # torn tail, so it reads again. The content never changes, so a pass that
        # succeeds is sound whatever it overlapped.
        signing_then = journal_path(path).exists()
        before = _file_identity(path)
        reader: ZipReader | None = None
        try:
            reader = ZipReader(path)
            return verify_archive(
                reader,
                policy.trust_store,
                allow_unsigned=policy.allow_unsigned,
                weights_in_memory=weights_in_memory,
                policy=policy.freshness,
                progress=progress,
                in_memory=in_memory,
            )
        except BundleError as e:
            if reader is not None:
                reader.close()
            journal = journal_path(path).exists()
            # A torn tail fails the structure or a signature entry, never a content
            # hash: only those are retried for a journal (one planted beside a bad
            # bundle must not make refusing it cost four full verifications).
            overlapped = (signing_then or journal) and isinstance(e, (FormatError, SignatureError))
            if attempt == _TORN_RETRIES or not (overlapped or _file_identity(path) != before):
                if journal and e.args:  # say how to get the bundle back
                    e.args = (
                        f"{e.args[0]} (an in-place sign of this bundle was interrupted: "
                        "`model-bundle repair` / bundle.repair() rolls it back)",
                        *e.args[1:],
                    )
                raise
            time.sleep(0.02 * (attempt + 1))
        except BaseException:
            if reader is not None:
                reader.close()
            raise
    raise AssertionError("unreachable")


_TORN_RETRIES = 3
"""Times a verification that failed while an in-place sign was writing is retried."""


def _check_content(vb: Any) -> tuple[Any, Any]:
    """Parse and check the verified weights header and graph."""
    from .format.graph import check_graph, io_specs, parse_model
    from .format.weights import parse_header

    manifest = vb.report.manifest
    wfile = manifest.file("weights")
    head = vb.weights if vb.weights is not None else vb.weights_head
    header = parse_header(head, wfile.size, entry=wfile.path)
    gfile = manifest.file("graph")
    model = parse_model(vb.graph, gfile.path)
    check_graph(model, header, gfile.path)
    inputs, outputs = io_specs(model)
    if (inputs, outputs) != (manifest.inputs, manifest.outputs):
        raise FormatError(
            "the manifest's inputs/outputs (names, dtypes, shapes) are not the graph's",
            entry=gfile.path,
        )
    verified = {**vb.inflated, **vb.stored}  # as hashed: never read again
    check_training_entries(manifest, verified)
    check_assets(manifest, verified)
    return model, header


def verify(
    path: str | os.PathLike[str],
    *,
    trust: TrustPolicy | None = None,
    trusted_keys: signing.TrustedKeys | None = None,
    allow_unsigned: bool = False,
    threshold: int | None = None,
    trusted_roots: Any = None,
    now: Any = None,
    min_version: str | None = None,
    rollback_state: str | os.PathLike[str] | None = None,
    progress: Any = None,
) -> VerifyReport:
    """Verify signature, structure, every byte and the graph; return who signed what.

    Raises a :class:`BundleError` subclass naming what failed. Nothing is executed.
    ``trust`` (a :class:`TrustPolicy`) says whom to trust; the other keywords are
    shortcuts that build one (give one or the other). ``trusted_roots`` (root CA
    certificates or PEM files) also accepts signers whose embedded X.509 chain leads
    to one of them; each signer's identity is reported. ``now`` replaces the current
    time (expiry, certificate validity); ``min_version`` refuses older bundles;
    ``rollback_state`` (a JSON file, created if missing) refuses a version lower than
    one already accepted for the same model name from any trusted signer, and records
    this one. See SECURITY.md. A wrong argument value raises ``ValueError``/``TypeError``.
    """
    policy = resolve_policy(
        trust,
        trusted_keys=trusted_keys,
        allow_unsigned=allow_unsigned,
        threshold=threshold,
        trusted_roots=trusted_roots,
        now=now,
        min_version=min_version,
        rollback_state=rollback_state,
    )
    vb = _verified_bundle(path, policy, progress)
    try:
        report: VerifyReport = vb.report
        return report
    finally:
        vb.reader.close()


def _verified_bundle(path: str | os.PathLike[str], policy: TrustPolicy, progress: Any) -> Any:
    """What :func:`verify` and :func:`verified` check: the archive, then its content,
    recorded as seen; the reader stays open for the caller (closed on failure)."""
    vb = _open_verified(path, policy, False, progress)
    try:
        _check_content(vb)
        vb.accept()
    except BaseException:
        vb.reader.close()
        raise
    return vb


def load(
    path: str | os.PathLike[str],
    *,
    trust: TrustPolicy | None = None,
    trusted_keys: signing.TrustedKeys | None = None,
    allow_unsigned: bool = False,
    device: str = "auto",
    threshold: int | None = None,
    zero_copy: bool = False,
    session_options: Any = None,
    provider_options: Mapping[str, Any] | None = None,
    trusted_roots: Any = None,
    now: Any = None,
    min_version: str | None = None,
    rollback_state: str | os.PathLike[str] | None = None,
    prepack: bool | None = None,
    progress: Any = None,
    storage_options: Mapping[str, Any] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Model:
    """Verify a bundle, then return a :class:`bundle.Model` ready to predict.

    ``trust`` (a :class:`TrustPolicy`), or its keyword shortcuts, as for :func:`verify`.

    ``device``: "auto" (CUDA when it really initialises, else CPU), "cpu", "cuda",
    "cuda:N" or "tensorrt"; an explicit GPU device that cannot run raises
    :class:`DeviceError`. ``provider_options`` pass through to the GPU provider.
    By default the weights are read into memory while they are hashed and
    onnxruntime runs on that very buffer (no copy, no 2 GB limit): what runs is
    what was verified. ``zero_copy=True`` instead lets onnxruntime map the weights
    straight from the bundle file (nothing read at load, pages shared between
    processes), which a local writer of the file could change afterwards; see
    SECURITY.md. ``prepack`` (onnxruntime re-laying MatMul/Gemm weights at load):
    None decides by size (:data:`bundle.runtime.session.PREPACK_MAX_BYTES`).
    ``progress(advance, total)`` is called as bytes are hashed.
    ``trusted_roots``, ``now``, ``min_version``, ``rollback_state``: as for :func:`verify`.

    ``path`` may be a URL (``s3://bucket/key.mbundle``, ``https://...``; fsspec options
    such as an S3 endpoint and credentials in ``storage_options``): the file is read in
    parallel ranges, hashed as it arrives, kept in the local cache under its digest
    (``cache_dir``, default the user cache directory) and verified from there in full.
    """
    from .runtime.session import create_session, select_providers

    if "://" in os.fspath(path):  # a URL: the store's fetcher (not imported for local files)
        from .store.remote import fetch_url, is_remote

        if is_remote(path):
            path, _digest = fetch_url(
                str(path), storage_options=storage_options, cache_dir=cache_dir
            )

    policy = resolve_policy(
        trust,
        trusted_keys=trusted_keys,
        allow_unsigned=allow_unsigned,
        threshold=threshold,
        trusted_roots=trusted_roots,
        now=now,
        min_version=min_version,
        rollback_state=rollback_state,
    )
    providers = select_providers(device, provider_options)
    before = _file_identity(path)
    vb = _open_verified(path, policy, not zero_copy, progress)
    try:
        model, header = _check_content(vb)
        manifest = vb.report.manifest
        # Before any session: a runtime too old for the graph is a named error saying
        # which release (or which conversion) would do, not onnxruntime's text. The
        # full check needs onnx's operator schemas (import onnx: ~40 ms), so it runs
        # when the graph's stamps say it may find something, or onnxruntime refuses.
        from .runtime.preflight import check_installed, might_not_run

        if might_not_run(model, manifest):
            check_installed(model, manifest)
        entry = vb.reader.entries[manifest.file("weights").path]
        try:
            session, keep = create_session(
                model,
                header,
                vb.reader.path,
                entry.data_offset,
                vb.weights,
                providers,
                session_options,
                prepack,
                lazy_prepack=True,
            )
        except FormatError:
            check_installed(model, manifest)  # the reason, when it is the runtime's age
            raise
        if zero_copy and _file_identity(path) != before:
            raise IntegrityError(
                f"{path} changed while it was being loaded (zero_copy: the "
                "session reads the file); nothing was loaded"
            )
        vb.accept()
        from .runtime.model import Model

        return Model(session, manifest, vb.report, keep)
    finally:
        vb.reader.close()


def _file_identity(path: str | os.PathLike[str]) -> tuple[int, ...] | None:
    """What changes when a file is replaced or written: device, inode, size, times."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def restore(
    path: str | os.PathLike[str],
    model: Any,
    optimizer: Any = None,
    scheduler: Any = None,
    *,
    trust: TrustPolicy | None = None,
    trusted_keys: signing.TrustedKeys | None = None,
    allow_unsigned: bool = False,
    threshold: int | None = None,
    rng: bool = True,
    trusted_roots: Any = None,
    now: Any = None,
    min_version: str | None = None,
    rollback_state: str | os.PathLike[str] | None = None,
) -> VerifyReport:
    """Verify a bundle exactly as :func:`load` does, then load its training state.

    ``model`` (a PyTorch module of the same architecture) gets every parameter
    and buffer; ``optimizer`` and ``scheduler``, when given, get their saved
    states (the bundle must hold them); the saved RNG states are restored when
    present and ``rng``. Everything is checked first -- names, shapes, dtypes,
    optimizer class and param groups -- and an :class:`InputError` lists every
    mismatch; nothing is loaded unless all fit. Nothing is unpickled.

    A Keras model (and ``optimizer=model.optimizer``, built here if it is not yet)
    gets every variable by position -- paths differ between two instances of one
    model -- after shapes, dtypes and variable names are checked the same way
    (:mod:`bundle.training.keras`); Keras has no separate scheduler, and its
    random layers' seed states are model variables.

    A scikit-learn incremental estimator (``SGDClassifier``, ``MLPRegressor``,
    ``StandardScaler``..., or a ``Pipeline`` of them), built with the parameters it
    was trained with, gets its fitted state rebuilt from an allow-list of classes
    and attributes (:mod:`bundle.training.sklearn`), so ``partial_fit`` continues
    exactly where it stopped.
    """
    from .training.codec import STATE_TENSORS
    from .training.torch import restore_verified

    roots = {(c.__module__ or "").split(".")[0] for c in type(model).__mro__}
    keras_model = "keras" in roots
    sklearn_model = "sklearn" in roots
    if sklearn_model and (optimizer is not None or scheduler is not None):
        raise InputError(
            "a scikit-learn estimator keeps its optimizer state inside itself "
            "(MLP's solver, SGD's t_): pass model= only"
        )
    if keras_model and scheduler is not None:
        raise InputError(
            "Keras keeps a learning-rate schedule inside the optimizer: pass "
            "optimizer=, not scheduler="
        )

    policy = resolve_policy(
        trust,
        trusted_keys=trusted_keys,
        allow_unsigned=allow_unsigned,
        threshold=threshold,
        trusted_roots=trusted_roots,
        now=now,
        min_version=min_version,
        rollback_state=rollback_state,
    )
    vb = _open_verified(path, policy, True, in_memory=(STATE_TENSORS,))
    try:
        _check_content(vb)
        if sklearn_model:
            from .training.sklearn import restore_verified as restore_sklearn

            sklearn_report: VerifyReport = restore_sklearn(vb, model)
            vb.accept()
            return sklearn_report
        if keras_model:
            from .training.keras import restore_verified as restore_keras

            keras_report: VerifyReport = restore_keras(vb, model, optimizer)
            vb.accept()
            return keras_report
        report: VerifyReport = restore_verified(vb, model, optimizer, scheduler, rng=rng)
        vb.accept()
        return report
    finally:
        vb.reader.close()


@dataclass(frozen=True)
class Inspection:
    """A bundle's manifest as it claims to be: NOT verified, for looking only."""

    path: str
    manifest: Manifest
    claimed_signers: tuple[str, ...]
    verified: bool = False
    claimed_identities: Mapping[str, str] = field(default_factory=dict)
    """Key id -> subject (and SAN) of the certificate its signature embeds, as claimed."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, marked unverified."""
        return {
            "path": self.path,
            "verified": False,
            "claimed_signers": list(self.claimed_signers),
            "claimed_identities": dict(self.claimed_identities),
            "manifest": self.manifest.to_dict(),
        }


def _claimed_identities(reader: ZipReader, names: Sequence[str]) -> dict[str, str]:
    """Leaf certificate subjects named by signature entries; nothing is verified."""
    from .errors import SignatureError
    from .trust.certs import claimed_identity, parse_der_chain
    from .trust.verify import MAX_SIGNATURE_BYTES

    out: dict[str, str] = {}
    for name in names:
        key_id = name.split("/")[1].removesuffix(".sig")
        try:
            env = dsse.parse_envelope(reader.read(name, max_size=MAX_SIGNATURE_BYTES), name)
            if env.certificates:
                out[key_id] = claimed_identity(parse_der_chain(env.certificates, name)[0])
        except (SignatureError, FormatError) as e:
            out[key_id] = f"(unreadable signature: {e.one_line()})"
    return out


def inspect(path: str | os.PathLike[str]) -> Inspection:
    """Read a bundle's manifest WITHOUT checking signatures or hashes.

    The zip structure and the manifest schema are still checked; besides the
    manifest only the signature entries are read, for the certificate subjects
    they claim. Use :func:`verify` before trusting anything this returns.
    """
    with ZipReader(path) as reader:
        if MANIFEST_NAME not in reader.entries:
            raise FormatError("bundle has no manifest.json", entry=MANIFEST_NAME)
        manifest = Manifest.from_bytes(reader.read(MANIFEST_NAME, max_size=MAX_MANIFEST_BYTES))
        names = signature_entries(reader)
        claimed = tuple(n.split("/")[1].removesuffix(".sig") for n in names)
        identities = _claimed_identities(reader, names)
    return Inspection(os.fspath(path), manifest, claimed, claimed_identities=identities)


class Verified:
    """A bundle verified and still held open: what :func:`verified` returns.

    ``report`` is its :class:`VerifyReport`. Passed to :func:`sign` instead of a
    path, it is signed without being hashed again: the descriptor that was hashed
    stays open (so the inode cannot be freed and reused) and the file's identity
    (device, inode, size, modification and change times) taken before hashing
    must be unchanged when the signature is written, or :func:`sign` refuses
    (:class:`IntegrityError`). Use it as a context manager (or :meth:`close` it);
    :func:`sign` closes it.
    """

    def __init__(self, vb: Any, identity: tuple[int, ...] | None) -> None:
        self._vb: Any = vb
        self._identity = identity
        self.report: VerifyReport = vb.report
        self.path: str = vb.reader.path

    def __enter__(self) -> Verified:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._vb is not None:
            self._vb.reader.close()
            self._vb = None

    def _take(self) -> tuple[Any, tuple[int, ...] | None]:
        if self._vb is None:
            raise ValueError(f"this Verified handle of {self.path} is closed; verify again")
        vb, self._vb = self._vb, None
        return vb, self._identity


def verified(
    path: str | os.PathLike[str],
    *,
    trust: TrustPolicy | None = None,
    trusted_keys: signing.TrustedKeys | None = None,
    allow_unsigned: bool = False,
    threshold: int | None = None,
    trusted_roots: Any = None,
    now: Any = None,
    min_version: str | None = None,
    rollback_state: str | os.PathLike[str] | None = None,
    progress: Any = None,
) -> Verified:
    """:func:`verify`, keeping the verified file open for :func:`sign`: a :class:`Verified`.

    ``with bundle.verified(path, trusted_keys=...) as v: ... bundle.sign(v, key)``
    hashes the bundle once: the signature is added to the very file that was
    verified, refused if it changed since. Same arguments and errors as
    :func:`verify`.
    """
    policy = resolve_policy(
        trust,
        trusted_keys=trusted_keys,
        allow_unsigned=allow_unsigned,
        threshold=threshold,
        trusted_roots=trusted_roots,
        now=now,
        min_version=min_version,
        rollback_state=rollback_state,
    )
    before = _file_identity(path)
    return Verified(_verified_bundle(path, policy, progress), before)


def sign(
    path: str | os.PathLike[str] | Verified,
    signing_key: KeyLike | Sequence[KeyLike],
    *,
    passphrase: bytes | None = None,
    trust: TrustPolicy | None = None,
    trusted_keys: signing.TrustedKeys | None = None,
    certificate_chain: Any = None,
    trusted_roots: Any = None,
    progress: Any = None,
    in_place: bool = True,
) -> VerifyReport:
    """Add a signature to an existing bundle after checking its integrity.

    With ``trust`` (or ``trusted_keys`` / ``trusted_roots``), the bundle must already
    verify against it before it is countersigned; without, only its integrity is
    checked. ``certificate_chain``: as for :func:`save`. The content is hashed once,
    by that check; ``progress``: as for :func:`load`. ``path`` may be a
    :class:`Verified` (from :func:`verified`, whose policy then decided): it is
    signed without hashing it again, and closed.

    ``in_place`` (default): only the file's tail -- the signature entries and the
    central directory, KBs -- is rewritten, behind an undo journal beside the
    bundle, so signing a 1 GB bundle costs its verification and little more; a
    crash leaves a journal that :func:`repair` rolls back; until then ``sign``
    refuses the bundle (SECURITY.md, "Signing in place"). ``in_place=False`` writes a new file and
    renames it over ``path`` (readers that hold the old file keep it, other hard
    links keep the old signatures), copying the whole bundle. Both give the same
    bytes. Refused (:class:`IntegrityError`) when the file changes between the
    check and the write.
    """
    from .export.writer import refuse_journal, resign
    from .trust.verify import check_signatures

    if isinstance(path, Verified):
        if trust is not None or trusted_keys is not None or trusted_roots is not None:
            path.close()
            raise TypeError(
                "a Verified bundle was checked under the policy given to bundle.verified(); "
                "give no trust arguments to sign"
            )
        held: Verified | None = path
        path = path.path
    else:
        held = None
    try:
        keys = _signing_keys(signing_key, passphrase, certificate_chain)
        if not keys:
            raise KeyFileError("no signing key given")
    except BaseException:
        if held is not None:
            held.close()
        raise
    if held is not None:
        vb, before = held._take()
    else:
        refuse_journal(path)  # an interrupted sign is undone by repair(), never implicitly
        before = _file_identity(path)
        if trust is None and trusted_keys is None and trusted_roots is None:
            policy = TrustPolicy(allow_unsigned=True)
        else:
            policy = resolve_policy(trust, trusted_keys=trusted_keys, trusted_roots=trusted_roots)
        vb = _open_verified(path, policy, False, progress)
    try:
        if held is None:
            _check_content(vb)
        reader = vb.reader
        manifest_bytes = vb.manifest_bytes  # the bytes verified, not a second read
        existing = signature_entries(reader)
        w = reader.entries.get(WEIGHTS_NAME)
        if w is not None and w.data_offset % ALIGNMENT:
            raise FormatError("weights entry is not aligned; re-export the bundle")

        def unchanged() -> None:  # what is kept or copied is what was verified, still at path
            st = os.fstat(reader.fileno())
            now = _file_identity(path)
            if (
                before != (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
                or now is None
                or now[:2] != before[:2]
            ):
                raise IntegrityError(f"{path} changed while it was being signed; not signed")

        resign(
            path,
            reader,
            vb.report.manifest,
            manifest_bytes,
            keys,
            existing,
            unchanged,
            in_place=in_place,
        )
    finally:
        vb.reader.close()
    # The content was verified above and kept unchanged: check the new signatures only,
    # each by the whole statement rule.
    new_keys = signing.TrustStore([k.public_key for k in keys])
    with ZipReader(path) as new:
        signers, untrusted, _ = check_signatures(
            new,
            new.read(MANIFEST_NAME, max_size=MAX_MANIFEST_BYTES),
            new_keys,
            manifest=vb.report.manifest,
        )
    return VerifyReport(
        path=os.fspath(path),
        manifest=vb.report.manifest,
        signers=signers,
        untrusted_signatures=untrusted,
        files=vb.report.files,
        verified=True,
    )


def repair(path: str | os.PathLike[str]) -> bool:
    """Roll back an in-place :func:`sign` of ``path`` that was interrupted; True if one was.

    An interrupted in-place sign leaves ``.<name>.sign-journal`` beside the bundle
    and possibly a torn tail that fails verification; this restores the bundle's
    bytes from before that sign exactly and removes the journal. False (and nothing
    changed) when there is no journal, or only one cut short before the bundle was
    touched (it is removed). Only a journal this user wrote, a regular file with one
    link and no write permission for others, is applied (:class:`IntegrityError`
    otherwise): whoever else can write the directory cannot plant one.
    """
    from .export.writer import roll_back

    return roll_back(path)


@dataclass(frozen=True)
class CheckReport:
    """Whether a runtime can run a verified bundle: :func:`check`'s answer.

    ``problems`` (each with what would do) come from the graph itself against the
    runtime's limits; ``self_test`` is the smoke vectors re-run on the installed
    runtime (None when the runtime is not the installed one, when there are
    problems, or when the bundle carries none).
    """

    path: str
    runtime: str
    report: VerifyReport
    requirements: Any
    problems: tuple[Any, ...]
    self_test: Any = None

    @property
    def ok(self) -> bool:
        """No problem, and the smoke vectors (when run) passed."""
        return not self.problems and (self.self_test is None or self.self_test.passed)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        m = self.report.manifest
        return {
            "path": self.path,
            "runtime": self.runtime,
            "ok": self.ok,
            "verified": self.report.verified,
            "requires": m.requires.to_dict() if m.requires else None,
            "requirements": self.requirements.to_dict(),
            "problems": [p.to_dict() for p in self.problems],
            "smoke_vectors": m.smoke is not None,
            "self_test": self.self_test.to_dict() if self.self_test else None,
        }


def check(
    path: str | os.PathLike[str],
    *,
    runtime: str = "installed",
    trust: TrustPolicy | None = None,
    trusted_keys: signing.TrustedKeys | None = None,
    allow_unsigned: bool = False,
    threshold: int | None = None,
    trusted_roots: Any = None,
    now: Any = None,
    self_test: bool = True,
) -> CheckReport:
    """Preflight: verify a bundle, then say whether ``runtime`` can run it, and why not.

    ``runtime``: ``"installed"`` (ask the onnxruntime installed here, then re-run the
    bundle's smoke vectors on it unless ``self_test=False``) or ``"onnxruntime==X.Y"``
    (from the measured tables of :mod:`bundle.format.compat`; nothing is run). No
    session is created before the graph's IR version and opsets are known to be
    within the runtime's limits. Trust keywords as for :func:`verify`; verification
    failures raise as there. A wrong ``runtime`` is a ``ValueError``.
    """
    from .runtime import preflight as pf

    version = pf.parse_runtime(runtime)
    policy = resolve_policy(
        trust,
        trusted_keys=trusted_keys,
        allow_unsigned=allow_unsigned,
        threshold=threshold,
        trusted_roots=trusted_roots,
        now=now,
    )
    limits = pf.installed_limits() if version is None else pf.table_limits(version)
    vb = _open_verified(path, policy, True)
    try:
        model, header = _check_content(vb)
        manifest = vb.report.manifest
        need, problems = pf.preflight(model, manifest, limits)
        if not pf.supported_by_package(limits.version):
            problems.append(
                pf.Problem(
                    "package",
                    f"model-bundle is built and tested for onnxruntime >= "
                    f"{pf.MIN_SUPPORTED_ONNXRUNTIME}, not {limits.version}",
                    f"install onnxruntime >= {pf.MIN_SUPPORTED_ONNXRUNTIME}",
                )
            )
        result = None
        if version is None and not problems and self_test and manifest.smoke is not None:
            from .runtime.model import Model
            from .runtime.session import create_session

            entry = vb.reader.entries[manifest.file("weights").path]
            session, keep = create_session(
                model,
                header,
                vb.reader.path,
                entry.data_offset,
                vb.weights,
                ["CPUExecutionProvider"],
            )
            result = Model(session, manifest, vb.report, keep).self_test(raise_on_failure=False)
        return CheckReport(os.fspath(path), limits.name, vb.report, need, tuple(problems), result)
    finally:
        vb.reader.close()


def convert_opset(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    target_opset: int,
    *,
    signing_key: KeyLike | Sequence[KeyLike] | None,
    passphrase: bytes | None = None,
    trust: TrustPolicy | None = None,
    trusted_keys: signing.TrustedKeys | None = None,
    allow_unsigned: bool = False,
    trusted_roots: Any = None,
    version: str | None = None,
    expires: Any = None,
) -> Manifest:
    """Write ``dst``: ``src``'s graph converted to ``ai.onnx`` opset ``target_opset``.

    ``src`` is verified first (trust keywords as for :func:`verify`). onnx's version
    converter rewrites every operator through its adapters (never an edit of
    ``ir_version`` by hand: the new graph is stamped with the lowest IR version its
    opsets allow); the result must reproduce ``src``'s smoke vectors within their
    tolerance on this machine's onnxruntime, measured like any export and recorded
    as its parity. The manifest records ``derived_from`` (the SHA-256 of ``src``'s
    manifest). Refused with :class:`ConversionError` naming the reason: no smoke
    vectors to check against, an operator without an adapter, a target below what
    an operator needs, or outputs that differ. Training state and assets are not
    carried over (the graph changed); ``version`` defaults to ``src``'s.
    """
    import hashlib

    import onnx
    from onnx import version_converter

    from .export import Converted
    from .export.bundler import write_converted
    from .format.graph import inline_small_external
    from .format.manifest import DerivedFrom
    from .runtime.smoke import decode

    if isinstance(target_opset, bool) or not isinstance(target_opset, int) or target_opset < 7:
        raise ValueError(f"target_opset must be an integer opset >= 7, not {target_opset!r}")
    keys = _signing_keys(signing_key, passphrase)
    try:
        expires_at = None if expires is None else format_time(expires)
    except ValueError as e:
        raise ConversionError(f"expires: {e}") from e
    policy = resolve_policy(
        trust, trusted_keys=trusted_keys, allow_unsigned=allow_unsigned, trusted_roots=trusted_roots
    )
    vb = _open_verified(src, policy, True)
    try:
        checked, _header = _check_content(vb)
        model = onnx.ModelProto.FromString(checked.SerializeToString())  # onnx's own class
        manifest = vb.report.manifest
        manifest_bytes = vb.reader.read(MANIFEST_NAME, max_size=MAX_MANIFEST_BYTES)
        weights = memoryview(vb.weights)
        inline_small_external(model, lambda off, n: bytes(weights[off : off + n]), 1 << 62)
    finally:
        vb.reader.close()
    if manifest.smoke is None:
        raise ConversionError(
            f"{src} carries no smoke vectors to check the conversion "
            "against; save the model again with a sample_input"
        )
    stamped = next((op.version for op in model.opset_import if op.domain in ("", "ai.onnx")), None)
    if stamped is None:
        raise ConversionError(f"{src}'s graph imports no ai.onnx opset to convert")
    try:
        converted = version_converter.convert_version(model, target_opset)
        onnx.checker.check_model(converted, full_check=True)
    except Exception as e:  # onnx raises RuntimeError/ValidationError/... from C++
        # onnx's C++ assertions read "<file>:<line>: adapt: Assertion `false` failed: WHY"
        reason = " ".join(str(e).split()).split("failed: ")[-1][:400]
        hint = (
            "onnx has no adapter for an operator between these opsets: choose another "
            "target (`model-bundle check` shows the effective opset the operators need)"
            if "adapter" in reason.lower()
            else "the target opset cannot express the graph: choose a target at or above the "
            "effective opset the operators need (`model-bundle check` shows it)"
        )
        raise ConversionError(
            f"cannot convert {src} from opset {stamped} to {target_opset}: {reason} ({hint})"
        ) from e
    squeeze = {m.output for m in manifest.methods.values() if m.squeeze}
    reference = {}
    for t in manifest.smoke.outputs:
        arr = decode(t)
        reference[t.name] = arr.reshape(arr.shape[:-1]) if t.name in squeeze else arr
    feeds = {t.name: decode(t) for t in manifest.smoke.inputs}
    info = manifest.model
    conv = Converted(
        model=converted,
        task=info.task,
        framework=info.framework,
        framework_version=info.framework_version,
        converter="onnx.version_converter",
        converter_version=onnx.__version__,
        feeds=feeds,
        reference=reference,
        methods=manifest.methods,
        columns=manifest.columns,
    )
    derived = DerivedFrom(
        hashlib.sha256(manifest_bytes).hexdigest(),
        info.name,
        info.version,
        f"opset {stamped} -> {target_opset}",
    )
    return write_converted(
        conv,
        dst,
        keys,
        name=info.name,
        version=version or info.version,
        description=info.description,
        metadata=manifest.metadata,
        tolerance=(manifest.smoke.atol, manifest.smoke.rtol),
        accept_mismatch=False,
        created=None,
        precision=info.precision,
        expires_at=expires_at,
        apply_precision=False,
        derived_from=derived,
        restamp=False,
    )
