"""The serve command: the inference server with verified hot swap."""

from __future__ import annotations

import sys
from typing import Any

import click

from ..errors import (
    BundleError,
)
from ..trust.policy import TrustPolicy
from .app import (
    PASSPHRASE_HELP,
    cli,
    load_key,
    make_console,
    positive_seconds,
    trust_options,
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
@trust_options
@click.option("--allow-unsigned", is_flag=True, help="Serve bundles no trusted key signed.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--poll-interval",
    type=float,
    metavar="SECONDS",
    callback=positive_seconds,
    help="How often sources are checked (default: 1 s for files, 5 s for a store).",
)
@click.option(
    "--request-timeout",
    default=30.0,
    show_default=True,
    type=float,
    metavar="SECONDS",
    callback=positive_seconds,
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
@click.option("--passphrase-env", metavar="VAR", help=PASSPHRASE_HELP)
@click.option(
    "--graceful-timeout",
    default=30,
    show_default=True,
    type=click.IntRange(min=0),
    help="Seconds running requests get to finish on SIGTERM/SIGINT.",
)
def serve(
    bundle_paths: tuple[str, ...],
    trust: TrustPolicy,
    store_url: str | None,
    specs: tuple[str, ...],
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

    from .. import serve as serving

    if not bundle_paths and not specs:
        raise click.UsageError("give BUNDLE files, or --store URL with --model NAME@ALIAS")
    if specs and not store_url:
        raise click.UsageError("--model needs --store")
    if probation_window < 0:
        raise click.UsageError("--probation-window must be 0 (off) or positive")
    sources: list[Any] = [
        serving.FileSource(p, trust=trust, poll_interval=poll_interval or 1.0) for p in bundle_paths
    ]
    if specs:
        from ..store import Store

        assert store_url is not None  # --model without --store was refused above
        store = Store(store_url, trust=trust)
        key = load_key(rollback_key, passphrase_env) if rollback_key else None
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
    make_console(stderr=True).print(
        f"serving {', '.join(sorted(registry.slots))} on http://{host}:{port}/"
    )
    serving.serve(
        serving.create_app(registry=registry),
        host=host,
        port=port,
        graceful_timeout=graceful_timeout,
    )
