"""The store command group: push, list, versions, promote, rollback, history, resolve,
pull, gc."""

from __future__ import annotations

import json
from typing import Any

import click

from .. import api
from ..errors import (
    StoreNotFoundError,
)
from .app import (
    PASSPHRASE_HELP,
    cli,
    inert,
    load_key,
    make_console,
    parse_expires,
    policy_from_options,
    short_id,
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
    from ..store import Store

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
        trust=policy_from_options(trusted, threshold),
        storage_options=options or None,
        state=state,
        cache_dir=cache_dir,
    )


def _emit(as_json: bool, doc: Any, text: str) -> None:
    if as_json:
        click.echo(json.dumps(doc, indent=2))
    else:
        make_console().print(text)


def _record_text(r: Any) -> str:
    until = f", expires {r.expires}" if r.expires else ""
    why = f" ({inert(r.reason)})" if r.reason else ""
    return (
        f"{r.seq:>4} {r.time} {r.action:<8} -> v{inert(r.target.version)} "
        f"{r.target.digest[:16]} by {', '.join(short_id(k) for k in r.signers)}{until}{why}"
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
    _emit(as_json, v.to_dict(), f"stored {inert(v.name)}:{inert(v.version)} as sha256:{v.digest}")


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
            f"{inert(n)}: versions {', '.join(map(inert, d['versions'])) or '-'}; aliases "
            f"{', '.join(map(inert, d['aliases'])) or '-'}"
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
        "\n".join(f"{inert(v.version):>10} sha256:{v.digest} {v.size} bytes" for v in vs),
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
            click.option("--passphrase-env", metavar="VAR", help=PASSPHRASE_HELP),
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
    keys = [load_key(k, passphrase_env) for k in key_paths]
    r = _open_store(url, **kw).promote(
        name, alias, version, signing_key=keys, reason=reason or "", expires=parse_expires(expires)
    )
    _emit(
        as_json,
        r.to_dict(),
        f"{inert(name)}@{inert(alias)} -> v{inert(r.target.version)} (record {r.seq})",
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
    keys = [load_key(k, passphrase_env) for k in key_paths]
    r = _open_store(url, **kw).rollback(
        name,
        alias,
        signing_key=keys,
        to=to,
        reason=reason or "rollback",
        expires=parse_expires(expires),
    )
    _emit(
        as_json,
        r.to_dict(),
        f"{inert(name)}@{inert(alias)} -> v{inert(r.target.version)} (record {r.seq}, rollback)",
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
        f"{inert(ref)} -> {inert(r.name or '?')}:{inert(r.version or '?')} sha256:{r.digest}",
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
        f"[green]OK[/green] {inert(ref)} verified: {inert(path)}",
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
