"""Store fixtures: a real S3 endpoint (moto's server, a subprocess on 127.0.0.1), a local
folder, signed test bundles."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import save_tiny

import bundle

HERE = Path(__file__).resolve().parent


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class S3Endpoint:
    """A running moto server: its URL, and buckets made on demand."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.options: dict[str, Any] = {
            "key": "testing",
            "secret": "testing",  # moto accepts any credentials
            "client_kwargs": {"endpoint_url": url, "region_name": "us-east-1"},
            "use_listings_cache": False,
        }

    def bucket(self) -> str:
        import boto3

        name = f"b{uuid.uuid4().hex[:20]}"
        boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        ).create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Endpoint]:
    """``python -m moto.server`` on a free loopback port, conditional writes made atomic.

    Why the wrapper: moto checks ``If-None-Match: *`` and then stores the object in two
    steps, so two of its request threads can both pass the check; S3 itself makes the
    conditional write atomic, which is what the store relies on. A lock around moto's
    PutObject gives moto S3's semantics (tests/store/moto_atomic.py). Skipped when moto
    is not installed (it is in the ``test`` extra, so CI runs these).
    """
    pytest.importorskip(
        "moto", reason="moto[server] is not installed (pip install 'model-bundle[test]')"
    )
    pytest.importorskip("s3fs", reason="s3fs is not installed (the 'store' extra)")
    port = _free_port()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    # Its request log goes to a file: a pipe nobody reads would fill and stall the server.
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    log_file = open(log_path, "wb")  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "moto_atomic.py"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                err = log_path.read_text(errors="replace")
                pytest.fail(f"moto server exited with {proc.returncode}: {err[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("moto server did not answer within 60 s")
                time.sleep(0.1)
        yield S3Endpoint(url)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log_file.close()


@pytest.fixture(scope="session")
def store_key() -> bundle.PrivateKey:
    """The key that signs the test bundles and alias records."""
    return bundle.generate_key()


@pytest.fixture(scope="session")
def tiny_bundles(
    tmp_path_factory: pytest.TempPathFactory, store_key: bundle.PrivateKey
) -> dict[str, Path]:
    """Versions 1, 2, 3 of model 'tiny' (different weights), signed by ``store_key``."""
    folder = tmp_path_factory.mktemp("bundles")
    return {
        v: save_tiny(folder / f"tiny-{v}.mbundle", store_key, seed=int(v), version=v)
        for v in ("1", "2", "3")
    }


@pytest.fixture
def policy(store_key: bundle.PrivateKey) -> bundle.TrustPolicy:
    return bundle.TrustPolicy(keys=store_key.public_key)


@pytest.fixture(params=["local", "s3"])
def store_location(
    request: pytest.FixtureRequest, tmp_path: Path
) -> tuple[str, dict[str, Any] | None]:
    """(url, storage_options) of an empty store: a local folder, then a fresh S3 bucket."""
    if request.param == "local":
        return str(tmp_path / "store"), None
    endpoint: S3Endpoint = request.getfixturevalue("s3_endpoint")
    return f"s3://{endpoint.bucket()}/models", endpoint.options


@pytest.fixture
def make_store(
    store_location: tuple[str, dict[str, Any] | None], tmp_path: Path, policy: bundle.TrustPolicy
) -> Any:
    """``make_store(**kw)``: a Store on the location, with its own cache and state file."""
    url, options = store_location
    counter = iter(range(1000))

    def make(**kw: Any) -> bundle.Store:
        n = next(counter)
        kw.setdefault("trust", policy)
        kw.setdefault("cache_dir", tmp_path / f"cache{n}")
        kw.setdefault("state", tmp_path / f"state{n}.json")
        return bundle.Store(url, storage_options=options, **kw)

    return make
