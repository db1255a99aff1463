"""Fixtures of the serve tests; the helpers they share are in serve_helpers.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from serve_helpers import Bundles, install


@pytest.fixture(scope="session")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Bundles:
    return Bundles(tmp_path_factory.mktemp("serve-bundles"))


@pytest.fixture
def served(tmp_path: Path, bundles: Bundles) -> Path:
    """A bundle path the server watches, holding good version 1."""
    path = tmp_path / "served.mbundle"
    install(bundles.good[1], path)
    return path
