"""The ``model-bundle`` command line: parse arguments, call the library, print.

Exit codes (one per class of failure, documented in README.md; the table is
:data:`EXIT_CODES`): 0 ok, 1 unexpected error, 2 usage, 3 format, 4 integrity,
5 signature, 6 untrusted content, 7 conversion, 8 input, 9 key file, 10 device,
11 run timeout, 18 fetch.
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
    BundleError,
    ConversionError,
    DeviceError,
    FetchError,
    FormatError,
    InputError,
    IntegrityError,
    KeyFileError,
    RunTimeoutError,
    SignatureError,
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
    FetchError: 18,  # 12-17 are taken on main (compatibility, self-test, store)
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
        text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                       for c in text)
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

                bar = Progress("verifying SHA-256", BarColumn(), DownloadColumn(),
                               TransferSpeedColumn(), TimeRemainingColumn(),
                               console=console, transient=True)
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
        raise KeyFileError(f"{key_path} is encrypted: set {PASSPHRASE_ENV} or name a variable "
                           "with --passphrase-env VAR (no terminal to prompt on)")
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


def _load_key(key_path: str, env: str | None,
              chain: tuple[str, ...] = ()) -> signing.PrivateKey:
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
        raise click.BadParameter(f"{e}; or give a duration such as 90d, 12h",
                                 param_hint="--expires") from e


def _policy(keys: tuple[str, ...], threshold: int | None = None, roots: tuple[str, ...] = (),
            *, min_version: str | None = None, rollback_state: str | None = None,
            allow_unsigned: bool = False) -> TrustPolicy:
    """The trust options as one policy; a wrong value is a usage error (exit 2)."""
    try:
        return TrustPolicy(list(keys) if keys else None, roots=list(roots) or None,
                           threshold=threshold or 1, min_version=min_version,
                           rollback_state=rollback_state, allow_unsigned=allow_unsigned)
    except (ValueError, TypeError) as e:
        raise click.UsageError(str(e)) from e


def _signer_text(s: Any) -> str:
    text = f"{s.key_type} {_short(s.key_id)}"
    return text + (f" (certificate {_safe(s.identity.describe())})" if s.identity else "")


_PASSPHRASE_HELP = (f"Environment variable holding the key's passphrase (default: "
                    f"{PASSPHRASE_ENV} if set; else prompted on a terminal).")
_CHAIN_HELP = ("X.509 certificate(s) of the key, PEM or DER, leaf first then intermediates "
               "(repeatable, or one PEM file holding the chain); embedded in the signature.")
_ROOT_HELP = "Trusted root CA certificate (PEM/DER, repeatable): accept signers it certifies."
_MIN_VERSION_HELP = "Refuse a bundle whose model version is lower (integers: 3, 1.10.2)."
_STATE_HELP = ("Rollback record (JSON, created if missing; not a symlink): refuse a version "
               "lower than one already accepted for the model name from any trusted signer; "
               "record this one.")


def _short(key_id: str) -> str:
    return key_id[:16]


# --------------------------------------------------------------------------- commands


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="model-bundle")
def cli() -> None:
    """Signed, portable, pickle-free model bundles: keygen, sign, verify, inspect, predict."""


@cli.command()
@click.option("--out", "prefix", required=True, help="Writes PREFIX.key (0600) and PREFIX.pub.")
@click.option("--type", "key_type", type=click.Choice(signing.KEY_TYPES),
              default="ecdsa-p256", show_default=True)
@click.option("--passphrase-env", metavar="VAR",
              help="Encrypt the private key with the passphrase in this environment variable "
                   f"(default: {PASSPHRASE_ENV} if set).")
@click.option("--encrypt", is_flag=True, help="Prompt (twice, no echo) for a passphrase.")
@click.option("--force", is_flag=True, help="Overwrite existing key files.")
def keygen(prefix: str, key_type: str, passphrase_env: str | None, encrypt: bool,
           force: bool) -> None:
    """Generate a signing key pair."""
    passphrase = _new_passphrase(passphrase_env, encrypt)
    key = signing.generate_key(key_type)
    key_path, pub_path = key.save(prefix, passphrase=passphrase, overwrite=force)
    _console().print(f"wrote {key_path} (private, mode 0600) and {pub_path}\n"
                     f"key id {key.key_id} ({key_type})")


@cli.command()
@click.argument("bundle_path", metavar="BUNDLE", type=click.Path(dir_okay=False))
@click.option("--key", "key_path", required=True, type=click.Path(dir_okay=False),
              help="Private key (PEM) to sign with.")
@click.option("--passphrase-env", metavar="VAR", help=_PASSPHRASE_HELP)
@click.option("--certificate-chain", "chain", multiple=True, type=click.Path(dir_okay=False),
              help=_CHAIN_HELP)
@click.option("--trusted-key", "trusted", multiple=True, type=click.Path(),
              help="Only countersign if already signed by one of these keys.")
@click.option("--trusted-root", "roots", multiple=True, type=click.Path(dir_okay=False),
              help="Only countersign if already signed by a signer this root CA certifies.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def sign(bundle_path: str, key_path: str, passphrase_env: str | None, chain: tuple[str, ...],
         trusted: tuple[str, ...], roots: tuple[str, ...], as_json: bool) -> None:
    """Add a signature to BUNDLE (after checking its integrity)."""
    key = _load_key(key_path, passphrase_env, chain)
    with _hash_progress() as progress:
        report = api.sign(bundle_path, key,
                          trust=_policy(trusted, roots=roots) if trusted or roots else None,
                          progress=progress)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        _console().print(f"signed {bundle_path} with {key.public_key.key_type} key "
                         f"{_short(key.key_id)}")


def _trust_options(fn: Any) -> Any:
    """The trust and freshness options shared by verify and predict."""
    for option in reversed((
        click.option("--trusted-key", "trusted", multiple=True, type=click.Path(),
                     help="Trusted public key file or trust-store directory (repeatable)."),
        click.option("--threshold", type=click.IntRange(min=1),
                     help="Require signatures by at least this many distinct trusted keys."),
        click.option("--trusted-root", "roots", multiple=True,
                     type=click.Path(dir_okay=False), help=_ROOT_HELP),
        click.option("--min-version", help=_MIN_VERSION_HELP),
        click.option("--rollback-state", type=click.Path(dir_okay=False), help=_STATE_HELP),
    )):
        fn = option(fn)
    return fn


@cli.command()
@click.argument("bundle_path", metavar="BUNDLE", type=click.Path(dir_okay=False))
@_trust_options
@click.option("--allow-unsigned", is_flag=True,
              help="Check integrity only, without requiring a trusted signature.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def verify(bundle_path: str, trusted: tuple[str, ...], threshold: int | None,
           roots: tuple[str, ...], allow_unsigned: bool, min_version: str | None,
           rollback_state: str | None, as_json: bool) -> None:
    """Verify BUNDLE: exit 0 only if signed by a trusted key and every byte matches."""
    with _hash_progress() as progress:
        report = api.verify(bundle_path, progress=progress, trust=_policy(
            trusted, threshold, roots, min_version=min_version, rollback_state=rollback_state,
            allow_unsigned=allow_unsigned))
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    m = report.manifest.model
    out = _console()
    if report.verified:
        who = ", ".join(_signer_text(s) for s in report.signers)
        until = f"; expires {report.manifest.expires}" if report.manifest.expires else ""
        out.print(f"[green]OK[/green] {_safe(bundle_path)}: {_safe(repr(m.name))} "
                  f"v{_safe(m.version)} signed by {who}; "
                  f"{len(report.files)} files + manifest hashed{until}")
    else:
        out.print(f"[yellow]INTEGRITY OK, NOT SIGNED BY A TRUSTED KEY[/yellow] "
                  f"{_safe(bundle_path)}: {_safe(repr(m.name))} v{_safe(m.version)}; "
                  f"{len(report.files)} files + manifest hashed")


def _inspect_table(insp: api.Inspection) -> None:
    from rich.table import Table

    man = insp.manifest
    m = man.model
    out = _console()
    out.print(f"[bold]{_safe(m.name)}[/bold] v{_safe(m.version)}  ({_safe(m.framework)} "
              f"{_safe(m.framework_version)}, {_safe(m.task)}, via {_safe(m.converter)} "
              f"{_safe(m.converter_version)}, precision {_safe(m.precision)})")
    out.print("[yellow]UNVERIFIED[/yellow]: read without checking signatures or hashes; "
              "run `model-bundle verify` before trusting it")
    if m.description:
        out.print(_safe(m.description))
    out.print(f"ONNX IR {man.onnx.ir_version}, opsets "
              f"{', '.join(f'{k}={v}' for k, v in sorted(man.onnx.opsets.items()))}, "
              f"needs onnxruntime >= {man.onnx.min_onnxruntime}")
    io = Table(title="Inputs / outputs")
    for col in ("", "name", "dtype", "shape", "dynamic axes"):
        io.add_column(col)
    for kind, specs in (("in", man.inputs), ("out", man.outputs)):
        for s in specs:
            shape = "[" + ", ".join("?" if d is None else str(d) for d in s.shape) + "]"
            io.add_row(kind, _safe(s.name), _safe(s.dtype), _safe(shape),
                       _safe(", ".join(map(str, s.dynamic_axes))) or "-")
    out.print(io)
    if man.columns:
        out.print("Columns: " + ", ".join(f"{_safe(c.name)} ({_safe(c.kind)})"
                                          for c in man.columns))
    if man.methods:
        out.print("Methods: " + ", ".join(f"{_safe(k)} -> {_safe(v.output)}"
                                          for k, v in man.methods.items()))
    if man.parity:
        p = man.parity
        t = Table(title=f"Parity on {p.sample_rows} sample rows (atol {p.atol}, rtol {p.rtol})"
                  + (" [red]MISMATCH ACCEPTED[/red]" if p.accepted_mismatch else ""))
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
    out.print("Claimed signers (unverified): " +
              (", ".join(_short(k) + (f" (certificate {_safe(insp.claimed_identities[k])})"
                                      if k in insp.claimed_identities else "")
                         for k in insp.claimed_signers) or "none"))
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
            raise InputError(f"input {path}: .npy format version {version} is not supported "
                             "(1.0 and 2.0 are)")
        if dtype.hasobject:
            raise InputError(f"input {path}: object arrays are refused (they need pickle)")
        if dtype.itemsize == 0:
            raise InputError(f"input {path}: dtype {dtype} has zero-size elements")
        if any(d < 0 for d in shape):
            raise InputError(f"input {path}: negative dimension in shape {shape}")
        need = math.prod(shape) * dtype.itemsize
        have = os.fstat(f.fileno()).st_size - f.tell()
        if need != have:
            raise InputError(f"input {path}: the header's shape {shape} of {dtype} needs "
                             f"{need} bytes of data, the file holds {have} bytes")
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
                    raise InputError(f"input {path}: a list of row objects must hold only "
                                     "objects")
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
                raise InputError(f"input {path}: rows have different numbers of fields "
                                 f"({min(widths)} to {max(widths)})")
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


def _positive_seconds(ctx: click.Context, param: click.Parameter,
                      value: float | None) -> float | None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise click.BadParameter(f"{value} is not a positive number of seconds")
    return value


@cli.command()
@click.argument("bundle_path", metavar="BUNDLE", type=click.Path(dir_okay=False))
@_trust_options
@click.option("--allow-unsigned", is_flag=True, help="Run a bundle with no trusted signature.")
@click.option("--input", "input_path", required=True, type=click.Path(dir_okay=False),
              help="Input data: .npy, .csv (with a header row for tabular models) or .json.")
@click.option("--output", "output_path", type=click.Path(dir_okay=False),
              help="Write results to .npy, .csv or .json instead of printing them.")
@click.option("--method", type=click.Choice(["predict", "predict_proba", "transform",
                                             "decision_function", "run"]),
              default="predict", show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N")
@click.option("--timeout", type=float, metavar="SECONDS", callback=_positive_seconds,
              help="Stop the run after SECONDS (exit code 11); default: no limit.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def predict(bundle_path: str, trusted: tuple[str, ...], threshold: int | None,
            roots: tuple[str, ...], min_version: str | None, rollback_state: str | None,
            allow_unsigned: bool, input_path: str, output_path: str | None, method: str,
            device: str, timeout: float | None, as_json: bool) -> None:
    """Verify BUNDLE, then run it on an input file."""
    with _hash_progress() as progress:
        model = api.load(bundle_path, device=device, progress=progress, trust=_policy(
            trusted, threshold, roots, min_version=min_version, rollback_state=rollback_state,
            allow_unsigned=allow_unsigned))
    data = _read_input(input_path, model)
    outputs = model.run(data, timeout=timeout) if method == "run" else \
        {method: getattr(model, method)(data, timeout=timeout)}
    if output_path:
        _write_output(output_path, outputs)
    if as_json:
        doc: dict[str, Any] = {"providers": model.providers, "signers": model.signers,
                               "verified": model.report.verified}
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
@click.option("--key", "key_paths", multiple=True, type=click.Path(dir_okay=False),
              help="Private key(s) to sign with; unsigned without.")
@click.option("--passphrase-env", metavar="VAR", help=_PASSPHRASE_HELP)
@click.option("--certificate-chain", "chain", multiple=True, type=click.Path(dir_okay=False),
              help=_CHAIN_HELP + " Attached to the --key its leaf certifies.")
@click.option("--name", help="Model name (default: the file name).")
@click.option("--version", "model_version", default="1", show_default=True)
@click.option("--description", default="")
@click.option("--expires", "expires", metavar="TIME",
              help="Signed expiry: RFC 3339 UTC (2030-01-31T00:00:00Z) or a duration (90d, 12h).")
def export(onnx_path: str, bundle_path: str, key_paths: tuple[str, ...],
           passphrase_env: str | None, chain: tuple[str, ...], name: str | None,
           model_version: str, description: str, expires: str | None) -> None:
    """Pack an existing ONNX model (weights into safetensors) into a signed BUNDLE."""
    keys = [signing.load_private_key(k, _passphrase(passphrase_env, k, True)) for k in key_paths]
    manifest = api.save(onnx_path, bundle_path, signing_key=keys or None, name=name,
                        version=model_version, description=description,
                        certificate_chain=list(chain) or None, expires=_expires(expires))
    signed = "signed by " + ", ".join(_short(k.key_id) for k in keys) if keys else "UNSIGNED"
    _console().print(f"wrote {bundle_path}: {manifest.model.name!r} v{manifest.model.version}, "
                     f"{signed}")


@cli.command()
@click.argument("directory", metavar="DIR", type=click.Path(file_okay=False, exists=True))
@click.argument("bundle_path", metavar="BUNDLE", type=click.Path(dir_okay=False))
@click.option("--signature", "signatures", multiple=True, type=click.Path(dir_okay=False),
              help="A signature file over DIR (e.g. model_signing's model.sig), repeatable; "
                   "DIR/signatures/*.sig are kept too.")
def pack(directory: str, bundle_path: str, signatures: tuple[str, ...]) -> None:
    """Pack DIR (an unzipped bundle, maybe signed with model_signing) into BUNDLE.

    Every file is checked against DIR/manifest.json; verify BUNDLE afterwards.
    """
    from .export.pack import pack_directory

    manifest = pack_directory(directory, bundle_path, signatures=signatures)
    _console().print(f"wrote {_safe(bundle_path)}: {_safe(repr(manifest.model.name))} "
                     f"v{_safe(manifest.model.version)}, {len(manifest.files)} files; "
                     "run `model-bundle verify` to check its signatures")


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
        click.echo(f"error: unexpected {type(e).__name__}: {' '.join(str(e).split())[:300]}",
                   err=True)
        return EXIT_UNEXPECTED
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
