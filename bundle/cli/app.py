"""The command line's shared parts: the ``model-bundle`` group, exit codes, output,
passphrases, trust options, input files; and :func:`main`."""

from __future__ import annotations

import contextlib
import functools
import getpass
import math
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click

from .._version import __version__
from ..errors import (
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
from ..trust import signing
from ..trust.policy import TrustPolicy

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


def inert(value: object) -> str:
    """Text from a bundle, made inert for the terminal: control and format characters
    (ANSI escapes, bidi overrides) shown escaped, rich markup brackets escaped."""
    from rich.markup import escape

    text = str(value)
    if not text.isprintable():
        text = "".join(
            c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
        )
    return escape(text)


def make_console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


PROGRESS_MIN_BYTES = 100_000_000
"""Hashing less than this shows no progress bar (it takes well under a second)."""


@contextlib.contextmanager
def hash_progress() -> Iterator[Callable[[int, int], None]]:
    """A ``progress(advance, total)`` callback drawing a bar on stderr, when it is a
    terminal and the bundle is large enough for the wait to be noticed."""
    console = make_console(stderr=True)
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


def env_passphrase(var: str) -> bytes:
    value = os.environ.get(var)
    if value is None:
        raise KeyFileError(f"environment variable {var} is not set")
    if not value:
        raise KeyFileError(f"environment variable {var} is empty; a passphrase is needed")
    return value.encode("utf-8")


def key_passphrase(env: str | None, key_path: str, prompt: bool) -> bytes | None:
    """The passphrase of an existing key: --passphrase-env VAR, else $MODEL_BUNDLE_PASSPHRASE
    (only for an encrypted key), else a no-echo prompt when stdin is a terminal."""
    if env:
        return env_passphrase(env)
    if not prompt:
        return None
    data = Path(key_path).read_bytes()[:256] if Path(key_path).is_file() else b""
    if b"ENCRYPTED" not in data:
        return None
    if os.environ.get(PASSPHRASE_ENV) is not None:
        return env_passphrase(PASSPHRASE_ENV)
    if not sys.stdin.isatty():
        raise KeyFileError(
            f"{key_path} is encrypted: set {PASSPHRASE_ENV} or name a variable "
            "with --passphrase-env VAR (no terminal to prompt on)"
        )
    return getpass.getpass(f"Passphrase for {key_path}: ").encode("utf-8")


def new_passphrase(env: str | None, encrypt: bool) -> bytes | None:
    """The passphrase to encrypt a new key with: --passphrase-env VAR, else
    $MODEL_BUNDLE_PASSPHRASE if set, else (with --encrypt) typed twice at a prompt."""
    if env:
        return env_passphrase(env)
    if os.environ.get(PASSPHRASE_ENV) is not None:
        return env_passphrase(PASSPHRASE_ENV)
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


def load_key(key_path: str, env: str | None, chain: tuple[str, ...] = ()) -> signing.PrivateKey:
    key = signing.load_private_key(key_path, key_passphrase(env, key_path, True))
    return key.with_certificates(list(chain)) if chain else key


def parse_expires(value: str | None) -> str | None:
    """--expires: an RFC 3339 UTC time, or a duration from now such as 90d or 12h."""
    if value is None:
        return None
    import datetime as dt

    from ..format.versions import format_time

    units = {"d": "days", "h": "hours", "m": "minutes"}
    if value[:-1].isdigit() and value[-1:] in units:
        return format_time(dt.timedelta(**{units[value[-1]]: int(value[:-1])}))
    try:
        return format_time(value)
    except ValueError as e:
        raise click.BadParameter(
            f"{e}; or give a duration such as 90d, 12h", param_hint="--expires"
        ) from e


def policy_from_options(
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


def signer_text(s: Any) -> str:
    text = f"{s.key_type} {short_id(s.key_id)}"
    return text + (f" (certificate {inert(s.identity.describe())})" if s.identity else "")


PASSPHRASE_HELP = (
    f"Environment variable holding the key's passphrase (default: "
    f"{PASSPHRASE_ENV} if set; else prompted on a terminal)."
)
CHAIN_HELP = (
    "X.509 certificate(s) of the key, PEM or DER, leaf first then intermediates "
    "(repeatable, or one PEM file holding the chain); embedded in the signature."
)
ROOT_HELP = "Trusted root CA certificate (PEM/DER, repeatable): accept signers it certifies."
MIN_VERSION_HELP = "Refuse a bundle whose model version is lower (integers: 3, 1.10.2)."
STATE_HELP = (
    "Rollback record (JSON, created if missing; not a symlink): refuse a version "
    "lower than one already accepted for the model name from any trusted signer; "
    "record this one."
)


def short_id(key_id: str) -> str:
    return key_id[:16]


# --------------------------------------------------------------------------- commands


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="model-bundle")
def cli() -> None:
    """Signed, portable, pickle-free model bundles: keygen, sign, verify, inspect, predict."""


def trust_options(fn: Any) -> Any:
    """The trust and freshness options shared by verify, predict and serve, handed to the
    command as one ``trust: TrustPolicy`` (with the command's own ``--allow-unsigned``)."""

    @functools.wraps(fn)
    def command(
        *args: Any,
        trusted: tuple[str, ...],
        threshold: int | None,
        roots: tuple[str, ...],
        min_version: str | None,
        rollback_state: str | None,
        allow_unsigned: bool = False,
        **kwargs: Any,
    ) -> Any:
        trust = policy_from_options(
            trusted,
            threshold,
            roots,
            min_version=min_version,
            rollback_state=rollback_state,
            allow_unsigned=allow_unsigned,
        )
        return fn(*args, trust=trust, **kwargs)

    wrapped: Any = command
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
                help=ROOT_HELP,
            ),
            click.option("--min-version", help=MIN_VERSION_HELP),
            click.option("--rollback-state", type=click.Path(dir_okay=False), help=STATE_HELP),
        )
    ):
        wrapped = option(wrapped)
    return wrapped


def read_npy(path: str) -> Any:
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


def positive_seconds(
    ctx: click.Context, param: click.Parameter, value: float | None
) -> float | None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise click.BadParameter(f"{value} is not a positive number of seconds")
    return value


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
