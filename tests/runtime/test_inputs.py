"""What ``Model.predict`` / ``run`` accept, convert and refuse, against scikit-learn's own answers.

An array already in the graph's dtype and shape goes to onnxruntime as it is (the
common call costs no conversion); anything else is converted or refused by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

import bundle

RNG = np.random.default_rng(0)
X = RNG.normal(size=(64, 3)).astype(np.float32)
Y = (X[:, 0] + X[:, 2] > 0).astype(np.int64)


@pytest.fixture(scope="module")
def fitted() -> LogisticRegression:
    return LogisticRegression().fit(X, Y)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory, fitted: LogisticRegression) -> bundle.Model:
    key = bundle.generate_key()
    path: Path = tmp_path_factory.mktemp("inputs") / "lr.mbundle"
    bundle.save(fitted, path, sample_input=X[:8], signing_key=key)
    return bundle.load(path, trusted_keys=key.public_key, device="cpu")


def test_a_ready_array_goes_to_onnxruntime_as_it_is(
    model: bundle.Model, fitted: LogisticRegression, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[dict[str, Any]] = []
    session = model._session
    real = session.run

    def spy(names: Any, feeds: dict[str, Any], *rest: Any) -> Any:
        seen.append(feeds)
        return real(names, feeds, *rest)

    monkeypatch.setattr(session, "run", spy)
    x = X[:10]
    np.testing.assert_array_equal(model.predict(x), fitted.predict(x))
    assert next(iter(seen[0].values())) is x  # no copy, no conversion
    xd = X[:10].astype(np.float64)  # another dtype: converted, same answer
    np.testing.assert_array_equal(model.predict(xd), fitted.predict(xd))
    assert next(iter(seen[1].values())).dtype == np.float32


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (np.zeros((4, 4), np.float32), r"axis 1 must be 3"),
        (np.zeros(3, np.float32), r"2-D"),
        (np.array([["a", "b", "c"]]), r"expects numbers"),
        ([[1.0, 2.0], [3.0]], r"rectangular"),
    ],
)
def test_wrong_inputs_are_named(model: bundle.Model, value: Any, message: str) -> None:
    with pytest.raises(bundle.InputError, match=message):
        model.predict(value)


def test_lists_and_integers_are_converted(model: bundle.Model, fitted: LogisticRegression) -> None:
    xi = np.rint(X[:10] * 3).astype(np.int32)
    np.testing.assert_array_equal(model.predict(xi), fitted.predict(xi.astype(np.float32)))
    np.testing.assert_array_equal(model.predict(X[:5].tolist()), fitted.predict(X[:5]))


def test_a_timeout_still_applies_on_the_fast_path(model: bundle.Model) -> None:
    with pytest.raises(ValueError, match="timeout"):
        model.predict(X[:2], timeout=-1)
    np.testing.assert_array_equal(model.predict(X[:2], timeout=30), model.predict(X[:2]))
