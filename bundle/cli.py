"""The ``model-bundle`` command line: parse arguments, call the library, print.

Exit codes (one per class of failure, documented in README.md; the table is
:data:`EXIT_CODES`): 0 ok, 1 unexpected error, 2 usage, 3 format, 4 integrity,
5 signature, 6 untrusted content, 7 conversion, 8 input, 9 key file, 10 device,
11 run timeout, 12 compatibility (the runtime cannot run the bundle), 13 self-test
(smoke vectors give other outputs on this runtime), 14 a legacy file needs more than
was approved (scan/migrate), 15 store, 16 not found in the store, 17 store conflict,
18 fetch (a bundle could not be fetched).
"""

from __future__ import annotations

import contextlib
import getpass
import json
import math
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click

from . import api
from ._version import __version__
from .errors import (
    ApprovalError,
    BundleError,
    CompatibilityError,
    ConversionError,
    DeviceError,
    FetchError,
    FormatError,
    InputError,
    IntegrityError,
    KeyFileError,
    RunTimeoutError,
    SelfTestError,
    SignatureError,
    StoreConflictError,
    StoreError,
    StoreNotFoundError,
    UntrustedContentError,
)
from .trust import signing
from .trust.policy import TrustPolicy

F = TypeVar("F", bound=Callable[..., Any])

EXIT_UNEXPECTED = 1
EXIT_USAGE = 2
EXIT_CODES: dict[type[BundleError], int] = {
    FormatError: 3,  # LimitError too
    IntegrityError: 4,
    SignatureError: 5,  # FreshnessError too
    UntrustedContentError: 6,
    ConversionError: 7,
    InputError: 8,
    KeyFileError: 9,
    DeviceError: 10,
    RunTimeoutError: 11,
    CompatibilityError: 12,
    SelfTestError: 13,
    ApprovalError: 14,
    StoreError: 15,
    StoreNotFoundError: 16,
    StoreConflictError: 17,
    # StoreLogError is a SignatureError: 5
    FetchError: 18,
}
"""The exit code of each class of failure; a subclass exits with its nearest listed base."""


def exit_code_of(error: BundleError | type[BundleError]) -> int:
    """The CLI exit code for an error (or error class): its class's, else its nearest
    listed base's."""
    for cls in (error if isinstance(error, type) else type(error)).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]
    return EXIT_UNEXPECTED


def _safe(value: object) -> str:
    """Text from a bundle, made inert for the terminal: control and format characters
    (ANSI escapes, bidi overrides) shown escaped, rich markup brackets escaped."""
    from rich.markup import escape

    text = str(value)
    if not text.isprintable():
        text = "".join(
            c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
        )
    return escape(text)


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


PROGRESS_MIN_BYTES = 100_000_000
"""Hashing less than this shows no progress bar (it takes well under a second)."""


@contextlib.contextmanager
def _hash_progress() -> Iterator[Callable[[int, int], None]]:
    """A ``progress(advance, total)`` callback drawing a bar on stderr, when it is a
    terminal and the bundle is large enough for the wait to be noticed."""
    console = _console(stderr=True)
    state: dict[str, Any] = {}

    def advance(n: int, total: int) -> None:
        if "bar" not in state:
            if total < PROGRESS_MIN_BYTES or not console.is_terminal:
                state["bar"] = None
            else:
                from rich.progress import (
                    BarColumn,
                    DownloadColumn,
                    Progress,
                    TimeRemainingColumn,
                    TransferSpeedColumn,
                )

                bar = Progress(
                    "verifying SHA-256",
                    BarColumn(),
                    DownloadColumn(),
                    TransferSpeedColumn(),
                    TimeRemainingColumn(),
                    console=console,
                    transient=True,
                )
                bar.start()
                state["bar"], state["task"] = bar, bar.add_task("hash", total=total)
        if state["bar"] is not None:
            state["bar"].advance(state["task"], n)

    try:
        yield advance
    finally:
        if state.get("bar") is not None:
            state["bar"].stop()


PASSPHRASE_ENV = "MODEL_BUNDLE_PASSPHRASE"  # noqa: S105 (a variable name, not a secret)
"""Read when no --passphrase-env is given and it is set. There is deliberately no
--passphrase option: command lines are visible to other users (ps, /proc, history)."""


def _env_passphrase(var: str) -> bytes:
    value = os.environ.get(var)
    if value is None:
        raise KeyFileError(f"environment variable {var} is not set")
    if not value:
        raise KeyFileError(f"environment variable {var} is empty; a passphrase is needed")
    return value.encode("utf-8")


def _passphrase(env: str | None, key_path: str, prompt: bool) -> bytes | None:
    """The passphrase of an existing key: --passphrase-env VAR, else $MODEL_BUNDLE_PASSPHRASE
    (only for an encrypted key), else a no-echo prompt when stdin is a terminal."""
    if env:
        return _env_passphrase(env)
    if not prompt:
        return None
    data = Path(key_path).read_bytes()[:256] if Path(key_path).is_file() else b""
    if b"ENCRYPTED" not in data:
        return None
    if os.environ.get(PASSPHRASE_ENV) is not None:
        return _env_passphrase(PASSPHRASE_ENV)
    if not sys.stdin.isatty():
        raise KeyFileError(
            f"{key_path} is encrypted: set {PASSPHRASE_ENV} or name a variable "
            "with --passphrase-env VAR (no terminal to prompt on)"
        )
    return getpass.getpass(f"Passphrase for {key_path}: ").encode("utf-8")


def _new_passphrase(env: str | None, encrypt: bool) -> bytes | None:
    """The passphrase to encrypt a new key with: --passphrase-env VAR, else
    $MODEL_BUNDLE_PASSPHRASE if set, else (with --encrypt) typed twice at a prompt."""
    if env:
        return _env_passphrase(env)
    if os.environ.get(PASSPHRASE_ENV) is not None:
        return _env_passphrase(PASSPHRASE_ENV)
    if not encrypt:
        return None
    if not sys.stdin.isatty():
        raise KeyFileError(f"--encrypt needs a terminal to prompt on; or set {PASSPHRASE_ENV}")
    first = getpass.getpass("New key passphrase: ")
    if not first:
        raise KeyFileError("empty passphrase")
    if getpass.getpass("Repeat passphrase: ") != first:
        raise KeyFileError("the passphrases do not match")
    return first.encode("utf-8")


def _load_key(key_path: str, env: str | None, chain: tuple[str, ...] = ()) -> signing.PrivateKey:
    key = signing.load_private_key(key_path, _passphrase(env, key_path, True))
    return key.with_certificates(list(chain)) if chain else key


def _expires(value: str | None) -> str | None:
    """--expires: an RFC 3339 UTC time, or a duration from now such as 90d or 12h."""
    if value is None:
        return None
    import datetime as dt

    from .format.versions import format_time

    units = {"d": "days", "h": "hours", "m": "minutes"}
    if value[:-1].isdigit() and value[-1:] in units:
        return format_time(dt.timedelta(**{units[value[-1]]: int(value[:-1])}))
    try:
        return format_time(value)
    except ValueError as e:
        raise click.BadParameter(
            f"{e}; or give a duration such as 90d, 12h", param_hint="--expires"
        ) from e


def _policy(
    keys: tuple[str, ...],
    threshold: int | None = None,
    roots: tuple[str, ...] = (),
    *,
    min_version: str | None = None,
    rollback_state: str | None = None,
    allow_unsigned: bool = False,
) -> TrustPolicy:
    """The trust options as one policy; a wrong value is a usage error (exit 2)."""
    try:
        return TrustPolicy(
            list(keys) if keys else None,
            roots=list(roots) or None,
            threshold=threshold or 1,
            min_version=min_version,
            rollback_state=rollback_state,
            allow_unsigned=allow_unsigned,
        )
    except (ValueError, TypeError) as e:
        raise click.UsageError(str(e)) from e


def _signer_text(s: Any) -> str:
    text = f"{s.key_type} {_short(s.key_id)}"
    return text + (f" (certificate {_safe(s.identity.describe())})" if s.identity else "")


_PASSPHRASE_HELP = (
    f"Environment variable holding the key's passphrase (default: "
    f"{PASSPHRASE_ENV} if set; else prompted on a terminal)."
)
_CHAIN_HELP = (
    "X.509 certificate(s) of the key, PEM or DER, leaf first then intermediates "
    "(repeatable, or one PEM file holding the chain); embedded in the signature."
)
_ROOT_HELP = "Trusted root CA certificate (PEM/DER, repeatable): accept signers it certifies."
_MIN_VERSION_HELP = "Refuse a bundle whose model version is lower (integers: 3, 1.10.2)."
_STATE_HELP = (
    "Rollback record (JSON, created if missing; not a symlink): refuse a version "
    "lower than one already accepted for the model name from any trusted signer; "
    "record this one."
)


def _short(key_id: str) -> str:
    return key_id[:16]


# --------------------------------------------------------------------------- commands


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="model-bundle")
def cli() -> None:
    """Signed, portable, pickle-free model bundles: keygen, sign, verify, inspect, predict."""


@cli.command()
@click.option("--out", "prefix", required=True, help="Writes PREFIX.key (0600) and PREFIX.pub.")
@click.option(
    "--type",
    "key_type",
    type=click.Choice(signing.KEY_TYPES),
    default="ecdsa-p256",
    show_default=True,
)
@click.option(
    "--passphrase-env",
    metavar="VAR",
    help="Encrypt the private key with the passphrase in this environment variable "
    f"(default: {PASSPHRASE_ENV} if set).",
)
@click.option("--encrypt", is_flag=True, help="Prompt (twice, no echo) for a passphrase.")
@click.option("--force", is_flag=True, help="Overwrite existing key files.")
def keygen(
    prefix: str, key_type: str, passphrase_env: str | None, encrypt: bool, force: bool
) -> None:
    """Generate a signing key pair."""
    passphrase = _new_passphrase(passphrase_env, encrypt)
    key = signing.generate_key(key_type)
    key_path, pub_path = key.save(prefix, passphrase=passphrase, overwrite=force)
    _console().print(
        f"wrote {key_path} (private, mode 0600) and {pub_path}\nkey id {key.key_id} ({key_type})"
    )


@cli.command()
@click.argument("bundle_path", metavar="BUNDLE", type=click.Path(dir_okay=False))
@click.option(
    "--key",
    "key_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="Private key (PEM) to sign with.",
)
@click.option("--passphrase-env", metavar="VAR", help=_PASSPHRASE_HELP)
@click.option(
    "--certificate-chain", "chain", multiple=True, type=click.Path(dir_okay=False), help=_CHAIN_HELP
)
@click.option(
    "--trusted-key",
    "trusted",
    multiple=True,
    type=click.Path(),
    help="Only countersign if already signed by one of these keys.",
)
@click.option(
    "--trusted-root",
    "roots",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="Only countersign if already signed by a signer this root CA certifies.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def sign(
    bundle_path: str,
    key_path: str,
    passphrase_env: str | None,
    chain: tuple[str, ...],
    trusted: tuple[str, ...],
    roots: tuple[str, ...],
    as_json: bool,
) -> None:
    """Add a signature to BUNDLE (after checking its integrity)."""
    key = _load_key(key_path, passphrase_env, chain)
    with _hash_progress() as progress:
        report = api.sign(
            bundle_path,
            key,
            trust=_policy(trusted, roots=roots) if trusted or roots else None,
            progress=progress,
        )
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        _console().print(
            f"signed {bundle_path} with {key.public_key.key_type} key {_short(key.key_id)}"
        )


def _trust_options(fn: Any) -> Any:
    """The trust and freshness options shared by verify and predict."""
    for option in reversed(
        (
            click.option(
                "--trusted-key",
                "trusted",
                multiple=True,
                type=click.Path(),
                help="Trusted public key file or trust-store directory (repeatable).",
            ),
            click.option(
                "--threshold",
                type=click.IntRange(min=1),
                help="Require signatures by at least this many distinct trusted keys.",
            ),
            click.option(
                "--trusted-root",
                "roots",
                multiple=True,
                type=click.Path(dir_okay=False),
                help=_ROOT_HELP,
            ),
            click.option("--min-version", help=_MIN_VERSION_HELP),
            click.option("--rollback-state", type=click.Path(dir_okay=False), help=_STATE_HELP),
        )
    ):
        fn = option(fn)
    return fn


@cli.command()
@click.argument("bundle_path", metavar="BUNDLE", type=click.Path(dir_okay=False))
@_trust_options
@click.option(
    "--allow-unsigned",
    is_flag=True,
    help="Check integrity only, without requiring a trusted signature.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def verify(
    bundle_path: str,
    trusted: tuple[str, ...],
    threshold: int | None,
    roots: tuple[str, ...],
    allow_unsigned: bool,
    min_version: str | None,
    rollback_state: str | None,
    as_json: bool,
) -> None:
    """Verify BUNDLE: exit 0 only if signed by a trusted key and every byte matches."""
    with _hash_progress() as progress:
        report = api.verify(
            bundle_path,
            progress=progress,
            trust=_policy(
                trusted,
                threshold,
                roots,
                min_version=min_version,
                rollback_state=rollback_state,
                allow_unsigned=allow_unsigned,
            ),
        )
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    m = report.manifest.model
    out = _console()
    if report.verified:
        who = ", ".join(_signer_text(s) for s in report.signers)
        until = f"; expires {report.manifest.expires}" if report.manifest.expires else ""
        out.print(
            f"[green]OK[/green] {_safe(bundle_path)}: {_safe(repr(m.name))} "
            f"v{_safe(m.version)} signed by {who}; "
            f"{len(report.files)} files + manifest hashed{until}"
        )
    else:
        out.print(
            f"[yellow]INTEGRITY OK, NOT SIGNED BY A TRUSTED KEY[/yellow] "
            f"{_safe(bundle_path)}: {_safe(repr(m.name))} v{_safe(m.version)}; "
            f"{len(report.files)} files + manifest hashed"
        )


def _inspect_table(insp: api.Inspection) -> None:
    from rich.table import Table

    man = insp.manifest
    m = man.model
    out = _console()
    out.print(
        f"[bold]{_safe(m.name)}[/bold] v{_safe(m.version)}  ({_safe(m.framework)} "
        f"{_safe(m.framework_version)}, {_safe(m.task)}, via {_safe(m.converter)} "
        f"{_safe(m.converter_version)}, precision {_safe(m.precision)})"
    )
    out.print(
        "[yellow]UNVERIFIED[/yellow]: read without checking signatures or hashes; "
        "run `model-bundle verify` before trusting it"
    )
    if m.description:
        out.print(_safe(m.description))
    out.print(
        f"ONNX IR {man.onnx.ir_version}, opsets "
        f"{', '.join(f'{k}={v}' for k, v in sorted(man.onnx.opsets.items()))}, "
        f"needs onnxruntime >= {man.onnx.min_onnxruntime}"
    )
    if man.requires is not None:
        out.print(
            "Operators need opsets "
            + ", ".join(f"{_safe(k)}={v}" for k, v in sorted(man.requires.min_opsets.items()))
            + f"; run on {_safe(', '.join(man.requires.execution_providers))}"
        )
    if man.smoke is not None:
        rows = man.smoke.inputs[0].shape[0] if man.smoke.inputs[0].shape else 1
        out.print(
            f"Smoke vectors: {rows} row(s), atol {man.smoke.atol:g}, rtol "
            f"{man.smoke.rtol:g} (`model-bundle check` re-runs them)"
        )
    if man.derived_from is not None:
        d = man.derived_from
        out.print(
            f"Derived from {_safe(d.name)} v{_safe(d.version)} (manifest "
            f"{d.manifest_sha256[:16]}...): {_safe(d.change)}"
        )
    io = Table(title="Inputs / outputs")
    for col in ("", "name", "dtype", "shape", "dynamic axes"):
        io.add_column(col)
    for kind, specs in (("in", man.inputs), ("out", man.outputs)):
        for s in specs:
            shape = "[" + ", ".join("?" if d is None else str(d) for d in s.shape) + "]"
            io.add_row(
                kind,
                _safe(s.name),
                _safe(s.dtype),
                _safe(shape),
                _safe(", ".join(map(str, s.dynamic_axes))) or "-",
            )
    out.print(io)
    if man.columns:
        out.print(
            "Columns: " + ", ".join(f"{_safe(c.name)} ({_safe(c.kind)})" for c in man.columns)
        )
    if man.methods:
        out.print(
            "Methods: "
            + ", ".join(f"{_safe(k)} -> {_safe(v.output)}" for k, v in man.methods.items())
        )
    if man.parity:
        p = man.parity
        t = Table(
            title=f"Parity on {p.sample_rows} sample rows (atol {p.atol}, rtol {p.rtol})"
            + (" [red]MISMATCH ACCEPTED[/red]" if p.accepted_mismatch else "")
        )
        for col in ("output", "max abs", "max rel", "out of tolerance"):
            t.add_column(col)
        for o in p.outputs:
            t.add_row(_safe(o.name), f"{o.max_abs:.3g}", f"{o.max_rel:.3g}", str(o.mismatches))
        out.print(t)
    else:
        out.print("Parity: not measured")
    ft = Table(title="Files")
    for col in ("path", "role", "size", "sha256"):
        ft.add_column(col)
    for f in man.files:
        ft.add_row(_safe(f.path), _safe(f.role), f"{f.size:,}", f.sha256[:16] + "...")
    out.print(ft)
    training = any(f.role == "training_state" for f in man.files)
    out.print(f"Training state: {'present' if training else 'none'}")
    if man.expires:
        out.print(f"Expires: {man.expires}")
    out.print(
        "Claimed signers (unverified): "
        + (
            ", ".join(
                _short(k)
                + (
                    f" (certificate {_safe(insp.claimed_identities[k])})"
                    if k in insp.claimed_identities
                    else ""
                )
                for k in insp.claimed_signers
            )
            or "none"
        )
    )
    for k, v in man.metadata.items():
        out.print(f"  {_safe(k)}: {_safe(v)}")


@cli.command()
@click.argument("bundle_path", metavar="BUNDLE", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def inspect(bundle_path: str, as_json: bool) -> None:
    """Show BUNDLE's manifest WITHOUT verifying it (marked unverified)."""
    insp = api.inspect(bundle_path)
    if as_json:
        click.echo(json.dumps(insp.to_dict(), indent=2))
    else:
        _inspect_table(insp)


def _read_npy(path: str) -> Any:
    """A .npy array, its header checked against the file before anything is allocated.

    np.load trusts the header's shape: a few bytes claiming 10^12 rows ask for
    terabytes. Object arrays are refused outright (they would need pickle).
    """
    import math

    import numpy as np

    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise InputError(
                f"input {path}: .npy format version {version} is not supported (1.0 and 2.0 are)"
            )
        if dtype.hasobject:
            raise InputError(f"input {path}: object arrays are refused (they need pickle)")
        if dtype.itemsize == 0:
            raise InputError(f"input {path}: dtype {dtype} has zero-size elements")
        if any(d < 0 for d in shape):
            raise InputError(f"input {path}: negative dimension in shape {shape}")
        need = math.prod(shape) * dtype.itemsize
        have = os.fstat(f.fileno()).st_size - f.tell()
        if need != have:
            raise InputError(
                f"input {path}: the header's shape {shape} of {dtype} needs "
                f"{need} bytes of data, the file holds {have} bytes"
            )
        f.seek(0)
        return np.load(f, allow_pickle=False)


def _read_input(path: str, model: Any) -> Any:
    import csv

    import numpy as np

    suffix = Path(path).suffix.lower()
    try:
        if suffix == ".npy":
            return _read_npy(path)
        if suffix == ".json":
            with open(path, encoding="utf-8") as f:
                try:
                    data = json.load(f)
                except RecursionError:
                    raise InputError(f"input {path}: JSON nested too deeply") from None
            if isinstance(data, list) and data and isinstance(data[0], dict):
                if not all(isinstance(row, dict) for row in data):
                    raise InputError(f"input {path}: a list of row objects must hold only objects")
                keys = list(data[0])
                return {k: [row.get(k) for row in data] for k in keys}
            return data
        if suffix == ".csv":
            with open(path, newline="", encoding="utf-8") as f:
                rows = list(csv.reader(f))
            if not rows:
                raise InputError(f"{path} is empty")
            widths = {len(r) for r in rows}
            if len(widths) != 1:
                raise InputError(
                    f"input {path}: rows have different numbers of fields "
                    f"({min(widths)} to {max(widths)})"
                )
            if model.manifest.columns:
                header, body = rows[0], rows[1:]
                cols: dict[str, Any] = {name: [r[i] for r in body] for i, name in enumerate(header)}
                for c in model.manifest.columns:
                    if c.name in cols and c.kind != "string":
                        dtype = np.int64 if c.kind == "integer" else np.float64
                        cols[c.name] = np.asarray(cols[c.name], dtype=dtype)
                return cols
            try:
                return np.asarray(rows, dtype=np.float64)
            except ValueError:
                return np.asarray(rows[1:], dtype=np.float64)
    except (OSError, ValueError, csv.Error) as e:
        raise InputError(f"cannot read input {path}: {e}") from e
    raise InputError(f"input {path}: use a .npy, .csv or .json file")


def _write_output(path: str, outputs: dict[str, Any]) -> None:
    import numpy as np

    suffix = Path(path).suffix.lower()
    if suffix == ".npy":
        if len(outputs) != 1:
            raise InputError("a .npy output holds one array: use --method, or a .json output")
        np.save(path, next(iter(outputs.values())), allow_pickle=False)
    elif suffix == ".json":
        Path(path).write_text(json.dumps({k: v.tolist() for k, v in outputs.items()}))
    elif suffix == ".csv":
        if len(outputs) != 1:
            raise InputError("a .csv output holds one array: use --method, or a .json output")
        arr = np.asarray(next(iter(outputs.values())))
        np.savetxt(path, arr.reshape(len(arr), -1), delimiter=",", fmt="%s")
    else:
        raise InputError(f"output {path}: use a .npy, .csv or .json file")


def _positive_seconds(
    ctx: click.Context, param: click.Parameter, value: float | None
) -> float | None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise click.BadParameter(f"{value} is not a positive number of seconds")
    return value


@cli.command()
@click.argument("bundle_path", metavar="BUNDLE", type=click.Path(dir_okay=False))
@_trust_options
@click.option("--allow-unsigned", is_flag=True, help="Run a bundle with no trusted signature.")
@click.option(
    "--input",
    "input_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="Input data: .npy, .csv (with a header row for tabular models) or .json.",
)
@click.option(
    "--output",
    "output_path",
    type=click.Path(dir_okay=False),
    help="Write results to .npy, .csv or .json instead of printing them.",
)
@click.option(
    "--method",
    type=click.Choice(["predict", "predict_proba", "transform", "decision_function", "run"]),
    default="predict",
    show_default=True,
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N")
@click.option(
    "--timeout",
    type=float,
    metavar="SECONDS",
    callback=_positive_seconds,
    help="Stop the run after SECONDS (exit code 11); default: no limit.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def predict(
    bundle_path: str,
    trusted: tuple[str, ...],
    threshold: int | None,
    roots: tuple[str, ...],
    min_version: str | None,
    rollback_state: str | None,
    allow_unsigned: bool,
    input_path: str,
    output_path: str | None,
    method: str,
    device: str,
    timeout: float | None,
    as_json: bool,
) -> None:
    """Verify BUNDLE, then run it on an input file."""
    with _hash_progress() as progress:
        model = api.load(
            bundle_path,
            device=device,
            progress=progress,
            trust=_policy(
                trusted,
                threshold,
                roots,
                min_version=min_version,
                rollback_state=rollback_state,
                allow_unsigned=allow_unsigned,
            ),
        )
    data = _read_input(input_path, model)
    outputs = (
        model.run(data, timeout=timeout)
        if method == "run"
        else {method: getattr(model, method)(data, timeout=timeout)}
    )
    if output_path:
        _write_output(output_path, outputs)
    if as_json:
        doc: dict[str, Any] = {
            "providers": model.providers,
            "signers": model.signers,
            "verified": model.report.verified,
        }
        if not output_path:
            doc["outputs"] = {k: v.tolist() for k, v in outputs.items()}
        else:
            doc["output_file"] = output_path
        click.echo(json.dumps(doc))
        return
    out = _console()
    if output_path:
        out.print(f"wrote {output_path} (ran on {', '.join(model.providers)})")
        return
    import numpy as np

    with np.printoptions(threshold=200, linewidth=100):
        for k, v in outputs.items():
            out.print(f"[bold]{_safe(k)}[/bold] {v.dtype} {list(v.shape)}")
            out.print(_safe(str(v)))


@cli.command()
@click.argument("onnx_path", metavar="MODEL.onnx", type=click.Path(dir_okay=False, exists=True))
@click.argument("bundle_path", metavar="BUNDLE", type=click.Path(dir_okay=False))
@click.option(
    "--key",
    "key_paths",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="Private key(s) to sign with; unsigned without.",
)
@click.option("--passphrase-env", metavar="VAR", help=_PASSPHRASE_HELP)
@click.option(
    "--certificate-chain",
    "chain",
    multiple=True,
    type=click.Path(dir_okay=False),
    help=_CHAIN_HELP + " Attached to the --key its leaf certifies.",
)
@click.option("--name", help="Model name (default: the file name).")
@click.option("--version", "model_version", default="1", show_default=True)
@click.option("--description", default="")
@click.option(
    "--expires",
    "expires",
    metavar="TIME",
    help="Signed expiry: RFC 3339 UTC (2030-01-31T00:00:00Z) or a duration (90d, 12h).",
)
def export(
    onnx_path: str,
    bundle_path: str,
    key_paths: tuple[str, ...],
    passphrase_env: str | None,
    chain: tuple[str, ...],
    name: str | None,
    model_version: str,
    description: str,
    expires: str | None,
) -> None:
    """Pack an existing ONNX model (weights into safetensors) into a signed BUNDLE."""
    keys = [signing.load_private_key(k, _passphrase(passphrase_env, k, True)) for k in key_paths]
    manifest = api.save(
        onnx_path,
        bundle_path,
        signing_key=keys or None,
        name=name,
        version=model_version,
        description=description,
        certificate_chain=list(chain) or None,
        expires=_expires(expires),
    )
    signed = "signed by " + ", ".join(_short(k.key_id) for k in keys) if keys else "UNSIGNED"
    _console().print(
        f"wrote {bundle_path}: {manifest.model.name!r} v{manifest.model.version}, {signed}"
    )


@cli.command()
@click.argument("directory", metavar="DIR", type=click.Path(file_okay=False, exists=True))
@click.argument("bundle_path", metavar="BUNDLE", type=click.Path(dir_okay=False))
@click.option(
    "--signature",
    "signatures",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="A signature file over DIR (e.g. model_signing's model.sig), repeatable; "
    "DIR/signatures/*.sig are kept too.",
)
def pack(directory: str, bundle_path: str, signatures: tuple[str, ...]) -> None:
    """Pack DIR (an unzipped bundle, maybe signed with model_signing) into BUNDLE.

    Every file is checked against DIR/manifest.json; verify BUNDLE afterwards.
    """
    from .export.pack import pack_directory

    manifest = pack_directory(directory, bundle_path, signatures=signatures)
    _console().print(
        f"wrote {_safe(bundle_path)}: {_safe(repr(manifest.model.name))} "
        f"v{_safe(manifest.model.version)}, {len(manifest.files)} files; "
        "run `model-bundle verify` to check its signatures"
    )


@cli.command()
@click.argument("path", metavar="FILE", type=click.Path(exists=True))
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Machine-readable report (what `migrate --approve-from` reads).",
)
def scan(path: str, as_json: bool) -> None:
    """Scan a legacy model FILE (pickle, joblib, torch, npy/npz, keras, h5, SavedModel)
    without running it: every import and call target, and a verdict.

    Exits 0 for tensors-only, no-code and needs-approval; 14 for dangerous or unscannable.
    """
    from .legacy import scan as scan_file

    report = scan_file(path)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        out = _console()
        colour = {"tensors-only": "green", "no-code": "green", "needs-approval": "yellow"}
        out.print(
            f"[{colour.get(report.verdict, 'red')}]{report.verdict.upper()}[/] "
            f"{_safe(path)}: {report.format}, {report.size} bytes, "
            f"sha256 {report.sha256[:16]}..."
        )
        for f in report.findings:
            mark = "[red]DANGER[/red] " if f.danger else ("tensor " if f.tensor else "needs  ")
            how = "called" if f.called else "imported"
            why = f" ({_safe(f.danger)})" if f.danger else ""
            out.print(f"  {mark}{_safe(f.target)} \\[{how}, {_safe(f.where)}]{why}")
        for p in report.problems:
            out.print(f"  [red]unresolved[/red] {_safe(p)}")
        for n in report.notes:
            out.print(f"  note: {_safe(n)}")
    if report.verdict in ("dangerous", "unscannable"):
        raise ApprovalError(
            f"{path} is {report.verdict}: nothing in it can be approved", entry=path
        )


@cli.command()
@click.argument("path", metavar="FILE", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--out", "out", required=True, type=click.Path(dir_okay=False), help="The bundle to write."
)
@click.option(
    "--approve",
    "approve",
    multiple=True,
    metavar="MODULE.NAME",
    help="Approve one global the scan listed (repeatable).",
)
@click.option(
    "--approve-from",
    "approve_from",
    type=click.Path(dir_okay=False, exists=True),
    help="Approve every global a saved `scan --json` report of this very file lists.",
)
@click.option(
    "--sample-input",
    "sample",
    required=True,
    type=click.Path(dir_okay=False),
    help="A .npy of a few input rows: parity against the original is required.",
)
@click.option(
    "--key",
    "key_path",
    type=click.Path(dir_okay=False),
    help="Private key to sign with; unsigned without.",
)
@click.option("--passphrase-env", metavar="VAR", help=_PASSPHRASE_HELP)
@click.option("--name", help="Model name (default: the file name).")
@click.option("--version", "model_version", default="1", show_default=True)
@click.option(
    "--python-path",
    "search_path",
    multiple=True,
    type=click.Path(file_okay=False),
    help="Directory the sandbox may import approved classes from (repeatable).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def migrate(
    path: str,
    out: str,
    approve: tuple[str, ...],
    approve_from: str | None,
    sample: str,
    key_path: str | None,
    passphrase_env: str | None,
    name: str | None,
    model_version: str,
    search_path: tuple[str, ...],
    as_json: bool,
) -> None:
    """Convert a legacy model FILE into a signed bundle, running nothing unapproved.

    Object pickles (joblib, pickled torch modules) and .keras files are loaded in a
    sandboxed child with only the approved globals; see `model-bundle scan`.
    """
    from .legacy import approvals_from_scan
    from .legacy import migrate as migrate_file

    approved = list(approve)
    if approve_from:
        approved += approvals_from_scan(approve_from, path)
    key = _load_key(key_path, passphrase_env) if key_path else None
    manifest = migrate_file(
        path,
        out,
        approve=approved,
        sample_input=_read_npy(sample),
        signing_key=key,
        name=name,
        version=model_version,
        search_path=search_path,
    )
    if as_json:
        click.echo(json.dumps(manifest.to_dict(), indent=2))
        return
    signed = f"signed by {_short(key.key_id)}" if key else "UNSIGNED"
    _console().print(
        f"wrote {_safe(out)}: {_safe(repr(manifest.model.name))} "
        f"v{_safe(manifest.model.version)} from {_safe(path)}, parity passed, "
        f"{signed}"
    )


@cli.command()
@click.argument("bundle_paths", metavar="[BUNDLE]...", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--store", "store_url", metavar="URL", help="Serve aliases from this model store.")
@click.option(
    "--model",
    "specs",
    multiple=True,
    metavar="NAME@ALIAS",
    help="A model alias in --store to serve and follow (repeatable).",
)
@_trust_options
@click.option("--allow-unsigned", is_flag=True, help="Serve bundles no trusted key signed.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--poll-interval",
    type=float,
    metavar="SECONDS",
    callback=_positive_seconds,
    help="How often sources are checked (default: 1 s for files, 5 s for a store).",
)
@click.option(
    "--request-timeout",
    default=30.0,
    show_default=True,
    type=float,
    metavar="SECONDS",
    callback=_positive_seconds,
    help="Longest a run may take (504).",
)
@click.option(
    "--max-body-bytes",
    default=16 << 20,
    show_default=True,
    type=click.IntRange(min=1),
    help="Larger request bodies are refused (413).",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    help="onnxruntime threads per model (default: the CPUs this process may use).",
)
@click.option(
    "--probation-window",
    default=60.0,
    show_default=True,
    type=float,
    metavar="SECONDS",
    help="Compare a new version with the previous one this long; "
    "0 turns probation and automatic rollback off.",
)
@click.option(
    "--rollback-key",
    "rollback_key",
    type=click.Path(dir_okay=False),
    help="Private key that signs automatic rollback records into --store.",
)
@click.option("--passphrase-env", metavar="VAR", help=_PASSPHRASE_HELP)
@click.option(
    "--graceful-timeout",
    default=30,
    show_default=True,
    type=click.IntRange(min=0),
    help="Seconds running requests get to finish on SIGTERM/SIGINT.",
)
def serve(
    bundle_paths: tuple[str, ...],
    store_url: str | None,
    specs: tuple[str, ...],
    trusted: tuple[str, ...],
    threshold: int | None,
    roots: tuple[str, ...],
    min_version: str | None,
    rollback_state: str | None,
    allow_unsigned: bool,
    host: str,
    port: int,
    poll_interval: float | None,
    request_timeout: float,
    max_body_bytes: int,
    threads: int | None,
    probation_window: float,
    rollback_key: str | None,
    passphrase_env: str | None,
    graceful_timeout: int,
) -> None:
    """Serve BUNDLE files (reloaded when they change) and/or --store aliases over HTTP.

    Open Inference Protocol v2 (/v2/...), POST /v2/models/NAME/predict, /metrics and a
    page at /. Every version is verified under the trust options before it goes live.
    """
    import logging

    from . import serve as serving

    if not bundle_paths and not specs:
        raise click.UsageError("give BUNDLE files, or --store URL with --model NAME@ALIAS")
    if specs and not store_url:
        raise click.UsageError("--model needs --store")
    if probation_window < 0:
        raise click.UsageError("--probation-window must be 0 (off) or positive")
    policy = _policy(
        trusted,
        threshold,
        roots,
        min_version=min_version,
        rollback_state=rollback_state,
        allow_unsigned=allow_unsigned,
    )
    sources: list[Any] = [
        serving.FileSource(p, trust=policy, poll_interval=poll_interval or 1.0)
        for p in bundle_paths
    ]
    if specs:
        store_cls = getattr(sys.modules[__package__ or "bundle"], "Store", None)  # issue 14
        if store_cls is None:
            raise click.UsageError(
                "--store needs bundle.Store (the model store), which this "
                "installation does not have"
            )
        store = store_cls(store_url, trust=policy)
        key = _load_key(rollback_key, passphrase_env) if rollback_key else None
        sources += [
            serving.StoreSource(store, spec, signing_key=key, poll_interval=poll_interval or 5.0)
            for spec in specs
        ]
    elif rollback_key:
        raise click.UsageError("--rollback-key needs --store")
    try:
        options = serving.ServeOptions(
            request_timeout=request_timeout,
            max_body_bytes=max_body_bytes,
            threads=threads,
            probation=serving.ProbationPolicy(window=probation_window)
            if probation_window
            else None,
        )
        registry = serving.Registry(sources, options)
    except ValueError as e:
        raise click.UsageError(str(e)) from e
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    failures = registry.start(supervise=False)
    if failures:  # nothing to serve for a model: say why and stop, with its exit code
        for name, err in failures.items():
            click.echo(
                f"error: model {name}: {err.one_line() if isinstance(err, BundleError) else err}",
                err=True,
            )
        first = next(iter(failures.values()))
        if isinstance(first, BundleError):
            raise first
        raise click.ClickException(str(first))
    _console(stderr=True).print(
        f"serving {', '.join(sorted(registry.slots))} on http://{host}:{port}/"
    )
    serving.serve(
        serving.create_app(registry=registry),
        host=host,
        port=port,
        graceful_timeout=graceful_timeout,
    )


@cli.command()
@click.argument("bundle_path", metavar="BUNDLE", type=click.Path(dir_okay=False))
@click.option(
    "--runtime",
    default="installed",
    show_default=True,
    metavar="RUNTIME",
    help="'installed' (ask the onnxruntime here, then re-run the smoke vectors) or "
    "'onnxruntime==X.Y' (from the measured tables; nothing is run).",
)
@click.option(
    "--trusted-key",
    "trusted",
    multiple=True,
    type=click.Path(),
    help="Trusted public key file or trust-store directory (repeatable).",
)
@click.option(
    "--trusted-root", "roots", multiple=True, type=click.Path(dir_okay=False), help=_ROOT_HELP
)
@click.option("--allow-unsigned", is_flag=True, help="Check a bundle with no trusted signature.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def check(
    bundle_path: str,
    runtime: str,
    trusted: tuple[str, ...],
    roots: tuple[str, ...],
    allow_unsigned: bool,
    as_json: bool,
) -> None:
    """Preflight: can RUNTIME run BUNDLE? Verifies it, compares what the graph needs with
    what the runtime loads, and re-runs the signed smoke vectors on the installed one.

    Exit 12 when the runtime cannot run it (each reason with what would do), 13 when
    the smoke vectors give other outputs here.
    """
    try:
        report = api.check(
            bundle_path,
            runtime=runtime,
            trust=_policy(trusted, roots=roots, allow_unsigned=allow_unsigned),
        )
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--runtime") from e
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        out = _console()
        need = report.requirements
        opsets = ", ".join(f"{k}={v}" for k, v in sorted(need.opsets.items()))
        effective = ", ".join(f"{k}={v}" for k, v in sorted(need.min_opsets.items()))
        out.print(
            f"{_safe(bundle_path)}: IR {need.ir_version} (lowest possible "
            f"{need.lowest_ir_version}), opsets {_safe(opsets)} (operators need "
            f"{_safe(effective)}); loads on onnxruntime >= {need.onnxruntime or '?'}"
        )
        for p in report.problems:
            out.print(
                f"[red]CANNOT RUN[/red] on {_safe(report.runtime)}: {_safe(p.message)}\n"
                f"  what would do: {_safe(p.fix)}"
            )
        if report.self_test is not None:
            word = "[green]passed[/green]" if report.self_test.passed else "[red]FAILED[/red]"
            out.print(f"smoke vectors {word}: {_safe(report.self_test.describe())}")
        elif not report.problems and report.report.manifest.smoke is None:
            out.print(
                "no smoke vectors in this bundle (saved without a sample input, or "
                "before they existed): nothing re-run"
            )
        if report.ok:
            out.print(f"[green]OK[/green] {_safe(report.runtime)} can run it")
    if report.problems:
        raise CompatibilityError("; ".join(p.message for p in report.problems))
    if report.self_test is not None and not report.self_test.passed:
        raise SelfTestError(report.self_test.describe())


@cli.command("convert-opset")
@click.argument("src", metavar="SRC", type=click.Path(dir_okay=False))
@click.argument("dst", metavar="DST", type=click.Path(dir_okay=False))
@click.option(
    "--target-opset",
    required=True,
    type=click.IntRange(min=7),
    help="The ai.onnx opset to convert the graph to.",
)
@click.option(
    "--key",
    "key_paths",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="Private key(s) to sign DST with; unsigned without.",
)
@click.option("--passphrase-env", metavar="VAR", help=_PASSPHRASE_HELP)
@click.option(
    "--trusted-key",
    "trusted",
    multiple=True,
    type=click.Path(),
    help="SRC must be signed by one of these keys (repeatable).",
)
@click.option(
    "--trusted-root", "roots", multiple=True, type=click.Path(dir_okay=False), help=_ROOT_HELP
)
@click.option("--allow-unsigned", is_flag=True, help="Convert a SRC with no trusted signature.")
def convert_opset(
    src: str,
    dst: str,
    target_opset: int,
    key_paths: tuple[str, ...],
    passphrase_env: str | None,
    trusted: tuple[str, ...],
    roots: tuple[str, ...],
    allow_unsigned: bool,
) -> None:
    """Write DST: SRC's graph converted to another opset, checked against SRC's smoke
    vectors and recording SRC's manifest digest as derived_from."""
    keys = [signing.load_private_key(k, _passphrase(passphrase_env, k, True)) for k in key_paths]
    manifest = api.convert_opset(
        src,
        dst,
        target_opset,
        signing_key=keys or None,
        trust=_policy(trusted, roots=roots, allow_unsigned=allow_unsigned),
    )
    req = manifest.requires
    signed = "signed by " + ", ".join(_short(k.key_id) for k in keys) if keys else "UNSIGNED"
    _console().print(
        f"wrote {_safe(dst)}: opset {target_opset}, IR {manifest.onnx.ir_version}, "
        f"loads on onnxruntime >= {req.onnxruntime if req else '?'}; smoke "
        f"vectors of {_safe(src)} reproduced; {signed}"
    )


# --------------------------------------------------------------------------- store


def _store_options(fn: Any) -> Any:
    """Where the store is and whom it trusts: shared by every ``store`` command."""
    for option in reversed(
        (
            click.argument("url", metavar="STORE"),
            click.option(
                "--trusted-key",
                "trusted",
                multiple=True,
                type=click.Path(),
                help="Trusted public key file or trust-store directory (repeatable): "
                "bundles and alias records must be signed by it.",
            ),
            click.option(
                "--threshold",
                type=click.IntRange(min=1),
                help="Require signatures by at least this many distinct trusted keys.",
            ),
            click.option(
                "--state",
                type=click.Path(dir_okay=False),
                help="Client state file (created if missing): refuse an alias whose "
                "log goes backwards (replayed or frozen).",
            ),
            click.option(
                "--cache-dir",
                type=click.Path(file_okay=False),
                help="Where fetched bundles are kept by digest (default: the user "
                "cache directory, or $MODEL_BUNDLE_CACHE).",
            ),
            click.option(
                "--endpoint-url",
                help="S3-compatible endpoint (credentials from the "
                "usual AWS environment variables or files).",
            ),
            click.option(
                "--storage-options",
                "storage_json",
                metavar="JSON",
                help="fsspec storage options as a JSON object.",
            ),
            click.option("--json", "as_json", is_flag=True, help="Machine-readable output."),
        )
    ):
        fn = option(fn)
    return fn


def _open_store(
    url: str,
    trusted: tuple[str, ...],
    threshold: int | None,
    state: str | None,
    cache_dir: str | None,
    endpoint_url: str | None,
    storage_json: str | None,
) -> Any:
    from .store import Store

    options: dict[str, Any] = {}
    if storage_json:
        try:
            options = json.loads(storage_json)
        except ValueError as e:
            raise click.BadParameter(f"not JSON: {e}", param_hint="--storage-options") from e
        if not isinstance(options, dict):
            raise click.BadParameter("must be a JSON object", param_hint="--storage-options")
    if endpoint_url:
        options.setdefault("client_kwargs", {})["endpoint_url"] = endpoint_url
    return Store(
        url,
        trust=_policy(trusted, threshold),
        storage_options=options or None,
        state=state,
        cache_dir=cache_dir,
    )


def _emit(as_json: bool, doc: Any, text: str) -> None:
    if as_json:
        click.echo(json.dumps(doc, indent=2))
    else:
        _console().print(text)


def _record_text(r: Any) -> str:
    until = f", expires {r.expires}" if r.expires else ""
    why = f" ({_safe(r.reason)})" if r.reason else ""
    return (
        f"{r.seq:>4} {r.time} {r.action:<8} -> v{_safe(r.target.version)} "
        f"{r.target.digest[:16]} by {', '.join(_short(k) for k in r.signers)}{until}{why}"
    )


@cli.group()
def store() -> None:
    """A model store on a folder or an S3 bucket: versions, signed aliases, rollback."""


@store.command("push")
@_store_options
@click.argument("bundle_path", metavar="BUNDLE", type=click.Path(dir_okay=False, exists=True))
def store_push(url: str, bundle_path: str, as_json: bool, **kw: Any) -> None:
    """Verify BUNDLE and store it as its name and version (immutable)."""
    v = _open_store(url, **kw).push(bundle_path)
    _emit(as_json, v.to_dict(), f"stored {_safe(v.name)}:{_safe(v.version)} as sha256:{v.digest}")


@store.command("list")
@_store_options
def store_list(url: str, as_json: bool, **kw: Any) -> None:
    """The model names in the store, with their versions and aliases (not verified)."""
    s = _open_store(url, **kw)
    doc = {
        n: {"versions": [v.version for v in s.versions(n)], "aliases": s.aliases(n)}
        for n in s.names()
    }
    _emit(
        as_json,
        doc,
        "\n".join(
            f"{_safe(n)}: versions {', '.join(map(_safe, d['versions'])) or '-'}; aliases "
            f"{', '.join(map(_safe, d['aliases'])) or '-'}"
            for n, d in doc.items()
        )
        or "(empty)",
    )


@store.command("versions")
@_store_options
@click.argument("name")
def store_versions(url: str, name: str, as_json: bool, **kw: Any) -> None:
    """The stored versions of NAME and their digests."""
    vs = _open_store(url, **kw).versions(name)
    if not vs:
        raise StoreNotFoundError(f"no versions of {name!r} in {url}")
    _emit(
        as_json,
        [v.to_dict() for v in vs],
        "\n".join(f"{_safe(v.version):>10} sha256:{v.digest} {v.size} bytes" for v in vs),
    )


def _key_options(fn: Any) -> Any:
    for option in reversed(
        (
            click.option(
                "--key",
                "key_paths",
                multiple=True,
                required=True,
                type=click.Path(dir_okay=False),
                help="Private key(s) to sign the record.",
            ),
            click.option("--passphrase-env", metavar="VAR", help=_PASSPHRASE_HELP),
            click.option("--reason", default=None, help="Why: recorded in the signed record."),
            click.option(
                "--expires",
                "expires",
                metavar="TIME",
                help="The record's expiry: RFC 3339 UTC or a duration (90d, 12h).",
            ),
        )
    ):
        fn = option(fn)
    return fn


@store.command("promote")
@_store_options
@click.argument("name")
@click.argument("alias")
@click.argument("version", metavar="VERSION|DIGEST")
@_key_options
def store_promote(
    url: str,
    name: str,
    alias: str,
    version: str,
    key_paths: tuple[str, ...],
    passphrase_env: str | None,
    reason: str | None,
    expires: str | None,
    as_json: bool,
    **kw: Any,
) -> None:
    """Point NAME@ALIAS at a stored version with a new signed record."""
    keys = [_load_key(k, passphrase_env) for k in key_paths]
    r = _open_store(url, **kw).promote(
        name, alias, version, signing_key=keys, reason=reason or "", expires=_expires(expires)
    )
    _emit(
        as_json,
        r.to_dict(),
        f"{_safe(name)}@{_safe(alias)} -> v{_safe(r.target.version)} (record {r.seq})",
    )


@store.command("rollback")
@_store_options
@click.argument("name")
@click.argument("alias")
@click.option(
    "--to",
    "to",
    metavar="VERSION|DIGEST",
    help="Target (default: the previous one, see spec/STORE.md).",
)
@_key_options
def store_rollback(
    url: str,
    name: str,
    alias: str,
    to: str | None,
    key_paths: tuple[str, ...],
    passphrase_env: str | None,
    reason: str | None,
    expires: str | None,
    as_json: bool,
    **kw: Any,
) -> None:
    """Point NAME@ALIAS back with a new signed record."""
    keys = [_load_key(k, passphrase_env) for k in key_paths]
    r = _open_store(url, **kw).rollback(
        name, alias, signing_key=keys, to=to, reason=reason or "rollback", expires=_expires(expires)
    )
    _emit(
        as_json,
        r.to_dict(),
        f"{_safe(name)}@{_safe(alias)} -> v{_safe(r.target.version)} (record {r.seq}, rollback)",
    )


@store.command("history")
@_store_options
@click.argument("name")
@click.argument("alias")
def store_history(url: str, name: str, alias: str, as_json: bool, **kw: Any) -> None:
    """Every record of NAME@ALIAS, each verified."""
    records = _open_store(url, **kw).history(name, alias)
    _emit(as_json, [r.to_dict() for r in records], "\n".join(map(_record_text, records)))


@store.command("resolve")
@_store_options
@click.argument("ref", metavar="REF")
def store_resolve(url: str, ref: str, as_json: bool, **kw: Any) -> None:
    """What REF (name@alias, name:version, sha256:digest) names, verified."""
    try:
        r = _open_store(url, **kw).resolve(ref)
    except ValueError as e:  # a malformed reference is the caller's: a usage error
        raise click.BadParameter(str(e), param_hint="REF") from e
    _emit(
        as_json,
        r.to_dict(),
        f"{_safe(ref)} -> {_safe(r.name or '?')}:{_safe(r.version or '?')} sha256:{r.digest}",
    )


@store.command("pull")
@_store_options
@click.argument("ref", metavar="REF")
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False),
    help="Also write the verified bundle here (atomically).",
)
def store_pull(url: str, ref: str, out: str | None, as_json: bool, **kw: Any) -> None:
    """Fetch the bundle REF names into the cache, verify it, optionally copy it out."""
    s = _open_store(url, **kw)
    path = s.pull(ref)
    report = api.verify(path, trust=s.trust)
    if out is not None:
        path = s.pull(ref, out)
    _emit(
        as_json,
        {"path": str(path), **report.to_dict()},
        f"[green]OK[/green] {_safe(ref)} verified: {_safe(path)}",
    )


@store.command("gc")
@_store_options
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=3600.0,
    show_default=True,
    help="Keep unreferenced blobs younger than this many seconds.",
)
@click.option("--dry-run", is_flag=True, help="Say what would be deleted; delete nothing.")
def store_gc(url: str, grace: float, dry_run: bool, as_json: bool, **kw: Any) -> None:
    """Delete blobs that no version or alias record references."""
    report = _open_store(url, **kw).gc(grace=grace, dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    _emit(
        as_json,
        report.to_dict(),
        f"{verb} {len(report.deleted)} blob(s); kept {report.kept}; {len(report.young)} too young",
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, turning every failure into one line and an exit code."""
    try:
        cli.main(args=argv, prog_name="model-bundle", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return EXIT_UNEXPECTED
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except BundleError as e:
        click.echo(f"error: {e.one_line()}", err=True)
        return exit_code_of(e)
    except Exception as e:  # never a traceback for a user; the class names the bug
        click.echo(
            f"error: unexpected {type(e).__name__}: {' '.join(str(e).split())[:300]}", err=True
        )
        return EXIT_UNEXPECTED
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
