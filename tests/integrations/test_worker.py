"""The engine-free core: references, the per-process cache, threads, batches."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
from integrations_helpers import Signed, tamper, torch_expected, weights_sample

import bundle
from bundle.format.archive import ZipReader
from bundle.format.manifest import MANIFEST_NAME
from bundle.integrations import BundleRef, Scorer, cache_stats, reference
from bundle.integrations.worker import load_model, manifest_for, release, session_options


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    release()


def test_digest_is_sha256_of_the_manifest_entry(pipeline_bundle: Signed) -> None:
    with ZipReader(pipeline_bundle.path) as r:
        raw = r.read(MANIFEST_NAME, max_size=1 << 20)
    ref = reference(pipeline_bundle.path, trusted_keys=pipeline_bundle.key.public_key)
    assert ref.digest == "sha256:" + hashlib.sha256(raw).hexdigest() == pipeline_bundle.digest


def test_reference_is_small_plain_data(torch_bundle: Signed) -> None:
    ref = reference(torch_bundle.path, trust=bundle.TrustPolicy(torch_bundle.key.public_key))
    blob = pickle.dumps(Scorer.create(ref, lineage="model"))
    assert len(blob) < 2048
    assert weights_sample(torch_bundle.path) not in blob
    assert ref.keys == (torch_bundle.key.public_key.pem(),)
    assert pickle.loads(blob).ref == ref


def test_loaded_once_per_process(pipeline_bundle: Signed) -> None:
    ref = reference(pipeline_bundle.path, trusted_keys=pipeline_bundle.key.public_key)
    before = cache_stats()
    first = load_model(ref)
    again = load_model(reference(pipeline_bundle.path, trusted_keys=pipeline_bundle.key.public_key))
    after = cache_stats()
    assert first is again
    assert after["fetches"] - before["fetches"] == 1
    assert after["verifications"] - before["verifications"] == 1
    assert after["hits"] - before["hits"] == 1


def test_threads_from_the_grant_and_spinning_off(torch_bundle: Signed) -> None:
    ref = reference(torch_bundle.path, trusted_keys=torch_bundle.key.public_key)
    for threads in (1, 2):
        model = load_model(ref, intra_op_threads=threads)
        so = model._session.get_session_options()
        assert so.intra_op_num_threads == threads
        assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    with pytest.raises(ValueError, match="at least 1"):
        session_options(0)
    with pytest.raises(ValueError, match="at least 1"):
        Scorer.create(ref, intra_op_threads=0)


def test_another_digest_is_refused(pipeline_bundle: Signed, torch_bundle: Signed) -> None:
    ref = reference(
        pipeline_bundle.path,
        digest=torch_bundle.digest,
        trusted_keys=pipeline_bundle.key.public_key,
    )
    with pytest.raises(bundle.IntegrityError, match="not the sha256:"):
        load_model(ref)
    with pytest.raises(bundle.IntegrityError):
        manifest_for(ref)
    # Remembered: the next task in this process does not fetch and verify again.
    before = cache_stats()
    with pytest.raises(bundle.IntegrityError):
        load_model(ref)
    assert cache_stats()["verifications"] == before["verifications"]


def test_tampered_and_untrusted_are_refused(pipeline_bundle: Signed, tmp_path: Path) -> None:
    bad = tamper(pipeline_bundle.path, tmp_path / "bad.mbundle")
    with pytest.raises(bundle.IntegrityError):
        load_model(
            reference(
                bad, digest=pipeline_bundle.digest, trusted_keys=pipeline_bundle.key.public_key
            )
        )
    stranger = bundle.generate_key().public_key
    with pytest.raises(bundle.SignatureError):
        load_model(reference(pipeline_bundle.path, trusted_keys=stranger))


def test_missing_bundle_is_fetch_error(pipeline_bundle: Signed, tmp_path: Path) -> None:
    with pytest.raises(bundle.FetchError, match="no bundle at"):
        reference(tmp_path / "absent.mbundle", trusted_keys=pipeline_bundle.key.public_key)
    ref = BundleRef(str(tmp_path / "absent.mbundle"), pipeline_bundle.digest)
    with pytest.raises(bundle.FetchError, match="every worker sees"):
        load_model(ref)


def test_wrong_arguments(pipeline_bundle: Signed, tmp_path: Path) -> None:
    key = pipeline_bundle.key.public_key
    with pytest.raises(ValueError, match="give digest="):
        reference("s3://bucket/churn.mbundle", trusted_keys=key)
    with pytest.raises(ValueError, match="store="):
        reference("churn@production", trusted_keys=key)
    with pytest.raises(ValueError, match="rollback_state"):
        reference(
            pipeline_bundle.path, trust=bundle.TrustPolicy(key, rollback_state=tmp_path / "r.json")
        )
    with pytest.raises(ValueError, match="64 hex"):
        reference(pipeline_bundle.path, digest="sha256:abc", trusted_keys=key)
    with pytest.raises(TypeError, match="not both"):
        reference(pipeline_bundle.path, trust=bundle.TrustPolicy(key), trusted_keys=key)


def test_pipeline_batch_scored_like_sklearn(pipeline_bundle: Signed) -> None:
    scorer = Scorer.create(
        pipeline_bundle.path, trusted_keys=pipeline_bundle.key.public_key, lineage="model"
    )
    df = pipeline_bundle.data
    out = scorer.score(df)
    np.testing.assert_array_equal(out["label"].to_numpy(), pipeline_bundle.model.predict(df))
    np.testing.assert_allclose(
        np.stack(out["probabilities"].to_numpy()),
        pipeline_bundle.model.predict_proba(df),
        rtol=1e-4,
        atol=1e-5,
    )
    assert set(out["model"]) == {pipeline_bundle.digest}
    assert list(out.columns[:4]) == list(df.columns)


def test_batch_that_does_not_fit_is_input_error(
    pipeline_bundle: Signed, torch_bundle: Signed
) -> None:
    scorer = Scorer.create(pipeline_bundle.path, trusted_keys=pipeline_bundle.key.public_key)
    with pytest.raises(bundle.InputError, match="missing column"):
        scorer.score(pipeline_bundle.data.drop(columns=["city"]))
    with pytest.raises(bundle.InputError, match="already has column"):
        scorer.score(pipeline_bundle.data.assign(label=1))
    tscorer = Scorer.create(torch_bundle.path, trusted_keys=torch_bundle.key.public_key)
    with pytest.raises(bundle.InputError, match="features="):
        tscorer.score({"other": torch_bundle.data})
    with pytest.raises(bundle.InputError, match="shape"):
        tscorer.score({tscorer.model().inputs[0].name: torch_bundle.data[:, :10]})


def test_tensor_model_from_columns_and_from_arrays(torch_bundle: Signed) -> None:
    import pandas as pd

    x = torch_bundle.data
    expected = torch_expected(torch_bundle, x)
    names = [f"f{i}" for i in range(x.shape[1])]
    scorer = Scorer.create(
        torch_bundle.path, trusted_keys=torch_bundle.key.public_key, features=names
    )
    out = scorer.score(pd.DataFrame(x, columns=names))
    output = scorer.model().outputs[0].name
    np.testing.assert_allclose(np.stack(out[output].to_numpy()), expected, rtol=1e-4, atol=1e-5)
    input_name = scorer.model().inputs[0].name
    plain = Scorer.create(
        torch_bundle.path, trusted_keys=torch_bundle.key.public_key, outputs={output: "y"}
    )
    got = plain.score({input_name: x})
    np.testing.assert_allclose(got["y"], expected, rtol=1e-4, atol=1e-5)


def test_store_alias_resolved_once_on_the_driver(pipeline_bundle: Signed, tmp_path: Path) -> None:
    from bundle.store import Store

    key = pipeline_bundle.key
    store = Store(tmp_path / "store", trust=bundle.TrustPolicy(key.public_key))
    store.push(pipeline_bundle.path)
    store.promote("churn", "production", "1", signing_key=key)
    ref = reference("churn@production", store=str(tmp_path / "store"), trusted_keys=key.public_key)
    assert ref.digest.removeprefix("sha256:") == store.resolve(
        "churn@production"
    ).digest.removeprefix("sha256:")
    assert ref.lineage == f"{ref.digest} churn@production#{ref.seq}"
    model = load_model(ref)
    np.testing.assert_array_equal(
        model.predict(pipeline_bundle.data), pipeline_bundle.model.predict(pipeline_bundle.data)
    )
