"""Commands on legacy files: scan (without running them), migrate (what was approved)."""

from __future__ import annotations

import json

import click

from ..errors import (
    ApprovalError,
)
from .app import (
    PASSPHRASE_HELP,
    cli,
    inert,
    load_key,
    make_console,
    read_npy,
    short_id,
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
    from ..legacy import scan as scan_file

    report = scan_file(path)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        out = make_console()
        colour = {"tensors-only": "green", "no-code": "green", "needs-approval": "yellow"}
        out.print(
            f"[{colour.get(report.verdict, 'red')}]{report.verdict.upper()}[/] "
            f"{inert(path)}: {report.format}, {report.size} bytes, "
            f"sha256 {report.sha256[:16]}..."
        )
        for f in report.findings:
            mark = "[red]DANGER[/red] " if f.danger else ("tensor " if f.tensor else "needs  ")
            how = "called" if f.called else "imported"
            why = f" ({inert(f.danger)})" if f.danger else ""
            out.print(f"  {mark}{inert(f.target)} \\[{how}, {inert(f.where)}]{why}")
        for p in report.problems:
            out.print(f"  [red]unresolved[/red] {inert(p)}")
        for n in report.notes:
            out.print(f"  note: {inert(n)}")
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
@click.option("--passphrase-env", metavar="VAR", help=PASSPHRASE_HELP)
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
    from ..legacy import approvals_from_scan
    from ..legacy import migrate as migrate_file

    approved = list(approve)
    if approve_from:
        approved += approvals_from_scan(approve_from, path)
    key = load_key(key_path, passphrase_env) if key_path else None
    manifest = migrate_file(
        path,
        out,
        approve=approved,
        sample_input=read_npy(sample),
        signing_key=key,
        name=name,
        version=model_version,
        search_path=search_path,
    )
    if as_json:
        click.echo(json.dumps(manifest.to_dict(), indent=2))
        return
    signed = f"signed by {short_id(key.key_id)}" if key else "UNSIGNED"
    make_console().print(
        f"wrote {inert(out)}: {inert(repr(manifest.model.name))} "
        f"v{inert(manifest.model.version)} from {inert(path)}, parity passed, "
        f"{signed}"
    )
