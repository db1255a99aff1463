"""Commands on bundles: keygen, sign, verify, inspect, predict, export, pack, check,
convert-opset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from .. import api
from ..errors import (
    CompatibilityError,
    InputError,
    SelfTestError,
)
from ..trust import signing
from ..trust.policy import TrustPolicy
from .app import (
    CHAIN_HELP,
    PASSPHRASE_ENV,
    PASSPHRASE_HELP,
    ROOT_HELP,
    cli,
    hash_progress,
    inert,
    key_passphrase,
    load_key,
    make_console,
    new_passphrase,
    parse_expires,
    policy_from_options,
    positive_seconds,
    read_npy,
    short_id,
    signer_text,
    trust_options,
)


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
    passphrase = new_passphrase(passphrase_env, encrypt)
    key = signing.generate_key(key_type)
    key_path, pub_path = key.save(prefix, passphrase=passphrase, overwrite=force)
    make_console().print(
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
@click.option("--passphrase-env", metavar="VAR", help=PASSPHRASE_HELP)
@click.option(
    "--certificate-chain", "chain", multiple=True, type=click.Path(dir_okay=False), help=CHAIN_HELP
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
@click.option(
    "--copy",
    is_flag=True,
    help="Write a new file and rename it over BUNDLE instead of rewriting its tail in "
    "place (copies the whole bundle; other hard links keep the old file).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def sign(
    bundle_path: str,
    key_path: str,
    passphrase_env: str | None,
    chain: tuple[str, ...],
    trusted: tuple[str, ...],
    roots: tuple[str, ...],
    copy: bool,
    as_json: bool,
) -> None:
    """Add a signature to BUNDLE (after checking its integrity).

    Only the signatures and the zip directory at the end of the file are rewritten,
    behind an undo journal; an interrupted sign is rolled back by the next one or by
    `model-bundle repair`.
    """
    key = load_key(key_path, passphrase_env, chain)
    with hash_progress() as progress:
        report = api.sign(
            bundle_path,
            key,
            trust=policy_from_options(trusted, roots=roots) if trusted or roots else None,
            progress=progress,
            in_place=not copy,
        )
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        make_console().print(
            f"signed {bundle_path} with {key.public_key.key_type} key {short_id(key.key_id)}"
        )


@cli.command()
@click.argument("bundle_path", metavar="BUNDLE", type=click.Path(dir_okay=False))
def repair(bundle_path: str) -> None:
    """Roll back an interrupted in-place sign of BUNDLE from its journal."""
    if api.repair(bundle_path):
        click.echo(f"rolled {bundle_path} back to its bytes before the interrupted sign")
    else:
        click.echo(f"{bundle_path}: no interrupted sign to roll back")


@cli.command()
@click.argument("bundle_path", metavar="BUNDLE", type=click.Path(dir_okay=False))
@trust_options
@click.option(
    "--allow-unsigned",
    is_flag=True,
    help="Check integrity only, without requiring a trusted signature.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def verify(
    bundle_path: str,
    trust: TrustPolicy,
    as_json: bool,
) -> None:
    """Verify BUNDLE: exit 0 only if signed by a trusted key and every byte matches."""
    with hash_progress() as progress:
        report = api.verify(
            bundle_path,
            progress=progress,
            trust=trust,
        )
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    m = report.manifest.model
    out = make_console()
    if report.verified:
        who = ", ".join(signer_text(s) for s in report.signers)
        until = f"; expires {report.manifest.expires}" if report.manifest.expires else ""
        out.print(
            f"[green]OK[/green] {inert(bundle_path)}: {inert(repr(m.name))} "
            f"v{inert(m.version)} signed by {who}; "
            f"{len(report.files)} files + manifest hashed{until}"
        )
    else:
        out.print(
            f"[yellow]INTEGRITY OK, NOT SIGNED BY A TRUSTED KEY[/yellow] "
            f"{inert(bundle_path)}: {inert(repr(m.name))} v{inert(m.version)}; "
            f"{len(report.files)} files + manifest hashed"
        )


def _inspect_table(insp: api.Inspection) -> None:
    from rich.table import Table

    man = insp.manifest
    m = man.model
    out = make_console()
    out.print(
        f"[bold]{inert(m.name)}[/bold] v{inert(m.version)}  ({inert(m.framework)} "
        f"{inert(m.framework_version)}, {inert(m.task)}, via {inert(m.converter)} "
        f"{inert(m.converter_version)}, precision {inert(m.precision)})"
    )
    out.print(
        "[yellow]UNVERIFIED[/yellow]: read without checking signatures or hashes; "
        "run `model-bundle verify` before trusting it"
    )
    if m.description:
        out.print(inert(m.description))
    out.print(
        f"ONNX IR {man.onnx.ir_version}, opsets "
        f"{', '.join(f'{k}={v}' for k, v in sorted(man.onnx.opsets.items()))}, "
        f"needs onnxruntime >= {man.onnx.min_onnxruntime}"
    )
    if man.requires is not None:
        out.print(
            "Operators need opsets "
            + ", ".join(f"{inert(k)}={v}" for k, v in sorted(man.requires.min_opsets.items()))
            + f"; run on {inert(', '.join(man.requires.execution_providers))}"
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
            f"Derived from {inert(d.name)} v{inert(d.version)} (manifest "
            f"{d.manifest_sha256[:16]}...): {inert(d.change)}"
        )
    io = Table(title="Inputs / outputs")
    for col in ("", "name", "dtype", "shape", "dynamic axes"):
        io.add_column(col)
    for kind, specs in (("in", man.inputs), ("out", man.outputs)):
        for s in specs:
            shape = "[" + ", ".join("?" if d is None else str(d) for d in s.shape) + "]"
            io.add_row(
                kind,
                inert(s.name),
                inert(s.dtype),
                inert(shape),
                inert(", ".join(map(str, s.dynamic_axes))) or "-",
            )
    out.print(io)
    if man.columns:
        out.print(
            "Columns: " + ", ".join(f"{inert(c.name)} ({inert(c.kind)})" for c in man.columns)
        )
    if man.methods:
        out.print(
            "Methods: "
            + ", ".join(f"{inert(k)} -> {inert(v.output)}" for k, v in man.methods.items())
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
            t.add_row(inert(o.name), f"{o.max_abs:.3g}", f"{o.max_rel:.3g}", str(o.mismatches))
        out.print(t)
    else:
        out.print("Parity: not measured")
    ft = Table(title="Files")
    for col in ("path", "role", "size", "sha256"):
        ft.add_column(col)
    for f in man.files:
        ft.add_row(inert(f.path), inert(f.role), f"{f.size:,}", f.sha256[:16] + "...")
    out.print(ft)
    training = any(f.role == "training_state" for f in man.files)
    out.print(f"Training state: {'present' if training else 'none'}")
    if man.expires:
        out.print(f"Expires: {man.expires}")
    out.print(
        "Claimed signers (unverified): "
        + (
            ", ".join(
                short_id(k)
                + (
                    f" (certificate {inert(insp.claimed_identities[k])})"
                    if k in insp.claimed_identities
                    else ""
                )
                for k in insp.claimed_signers
            )
            or "none"
        )
    )
    for k, v in man.metadata.items():
        out.print(f"  {inert(k)}: {inert(v)}")


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


def _read_input(path: str, model: Any) -> Any:
    import csv

    import numpy as np

    suffix = Path(path).suffix.lower()
    try:
        if suffix == ".npy":
            return read_npy(path)
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


@cli.command()
@click.argument("bundle_path", metavar="BUNDLE", type=click.Path(dir_okay=False))
@trust_options
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
    callback=positive_seconds,
    help="Stop the run after SECONDS (exit code 11); default: no limit.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def predict(
    bundle_path: str,
    trust: TrustPolicy,
    input_path: str,
    output_path: str | None,
    method: str,
    device: str,
    timeout: float | None,
    as_json: bool,
) -> None:
    """Verify BUNDLE, then run it on an input file."""
    with hash_progress() as progress:
        model = api.load(
            bundle_path,
            device=device,
            progress=progress,
            trust=trust,
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
    out = make_console()
    if output_path:
        out.print(f"wrote {output_path} (ran on {', '.join(model.providers)})")
        return
    import numpy as np

    with np.printoptions(threshold=200, linewidth=100):
        for k, v in outputs.items():
            out.print(f"[bold]{inert(k)}[/bold] {v.dtype} {list(v.shape)}")
            out.print(inert(str(v)))


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
@click.option("--passphrase-env", metavar="VAR", help=PASSPHRASE_HELP)
@click.option(
    "--certificate-chain",
    "chain",
    multiple=True,
    type=click.Path(dir_okay=False),
    help=CHAIN_HELP + " Attached to the --key its leaf certifies.",
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
    keys = [signing.load_private_key(k, key_passphrase(passphrase_env, k, True)) for k in key_paths]
    manifest = api.save(
        onnx_path,
        bundle_path,
        signing_key=keys or None,
        name=name,
        version=model_version,
        description=description,
        certificate_chain=list(chain) or None,
        expires=parse_expires(expires),
    )
    signed = "signed by " + ", ".join(short_id(k.key_id) for k in keys) if keys else "UNSIGNED"
    make_console().print(
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
    from ..export.pack import pack_directory

    manifest = pack_directory(directory, bundle_path, signatures=signatures)
    make_console().print(
        f"wrote {inert(bundle_path)}: {inert(repr(manifest.model.name))} "
        f"v{inert(manifest.model.version)}, {len(manifest.files)} files; "
        "run `model-bundle verify` to check its signatures"
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
    "--trusted-root", "roots", multiple=True, type=click.Path(dir_okay=False), help=ROOT_HELP
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
            trust=policy_from_options(trusted, roots=roots, allow_unsigned=allow_unsigned),
        )
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--runtime") from e
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        out = make_console()
        need = report.requirements
        opsets = ", ".join(f"{k}={v}" for k, v in sorted(need.opsets.items()))
        effective = ", ".join(f"{k}={v}" for k, v in sorted(need.min_opsets.items()))
        out.print(
            f"{inert(bundle_path)}: IR {need.ir_version} (lowest possible "
            f"{need.lowest_ir_version}), opsets {inert(opsets)} (operators need "
            f"{inert(effective)}); loads on onnxruntime >= {need.onnxruntime or '?'}"
        )
        for p in report.problems:
            out.print(
                f"[red]CANNOT RUN[/red] on {inert(report.runtime)}: {inert(p.message)}\n"
                f"  what would do: {inert(p.fix)}"
            )
        if report.self_test is not None:
            word = "[green]passed[/green]" if report.self_test.passed else "[red]FAILED[/red]"
            out.print(f"smoke vectors {word}: {inert(report.self_test.describe())}")
        elif not report.problems and report.report.manifest.smoke is None:
            out.print(
                "no smoke vectors in this bundle (saved without a sample input, or "
                "before they existed): nothing re-run"
            )
        if report.ok:
            out.print(f"[green]OK[/green] {inert(report.runtime)} can run it")
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
@click.option("--passphrase-env", metavar="VAR", help=PASSPHRASE_HELP)
@click.option(
    "--trusted-key",
    "trusted",
    multiple=True,
    type=click.Path(),
    help="SRC must be signed by one of these keys (repeatable).",
)
@click.option(
    "--trusted-root", "roots", multiple=True, type=click.Path(dir_okay=False), help=ROOT_HELP
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
    keys = [signing.load_private_key(k, key_passphrase(passphrase_env, k, True)) for k in key_paths]
    manifest = api.convert_opset(
        src,
        dst,
        target_opset,
        signing_key=keys or None,
        trust=policy_from_options(trusted, roots=roots, allow_unsigned=allow_unsigned),
    )
    req = manifest.requires
    signed = "signed by " + ", ".join(short_id(k.key_id) for k in keys) if keys else "UNSIGNED"
    make_console().print(
        f"wrote {inert(dst)}: opset {target_opset}, IR {manifest.onnx.ir_version}, "
        f"loads on onnxruntime >= {req.onnxruntime if req else '?'}; smoke "
        f"vectors of {inert(src)} reproduced; {signed}"
    )
