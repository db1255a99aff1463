"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import bundle

# --------------------------------------------------------------------------- sklearn tests
# Fixtures used by tests/export/test_sklearn.py (keep this block together; add others below).


@pytest.fixture(scope="session")
def signing_key() -> bundle.PrivateKey:
    """One ECDSA key for the whole session (key generation is not free)."""
    return bundle.generate_key()


@pytest.fixture
def save_load(
    tmp_path: Path,
    signing_key: bundle.PrivateKey,
) -> Callable[..., tuple[bundle.Manifest, bundle.Model]]:
    """``save_load(model, sample_input, **save_kw)``: save a signed bundle under
    ``tmp_path``, load it back verified against the key, return (manifest, model)."""
    counter = iter(range(1 << 30))

    def run(model: Any, sample_input: Any, **kw: Any) -> tuple[bundle.Manifest, bundle.Model]:
        path = tmp_path / f"model{next(counter)}.mbundle"
        manifest = bundle.save(
            model, path, sample_input=sample_input, signing_key=signing_key, **kw
        )
        return manifest, bundle.load(path, trusted_keys=signing_key.public_key)

    return run


# --------------------------------------------------------------------------- end sklearn tests
