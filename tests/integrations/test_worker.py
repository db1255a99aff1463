"""The engine-free core: references, the per-process cache, threads, batches."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path
from typing import Any

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


def _arrow(df: Any) -> Any:
    import pyarrow as pa

    return pa.Table.from_pandas(df, preserve_index=False)


def test_arrow_batch_in_arrow_batch_out(pipeline_bundle: Signed) -> None:
    pa = pytest.importorskip("pyarrow")
    scorer = Scorer.create(
        pipeline_bundle.path, trusted_keys=pipeline_bundle.key.public_key, lineage="model"
    )
    df = pipeline_bundle.data
    table = _arrow(df)
    for batch in (table, table.to_batches(max_chunksize=len(df))[0]):
        out = scorer.score(batch)
        assert type(out) is type(batch)
        assert out.schema.names == [*df.columns, "label", "probabilities", "model"]
        # [N, 2] probabilities: an Arrow list column, not a Python object per row
        assert out.schema.field("probabilities").type == pa.list_(pa.float32())
        assert out.schema.field("model").type == pa.string()
        np.testing.assert_array_equal(
            out.column("label").to_numpy(), pipeline_bundle.model.predict(df)
        )
        probabilities = np.asarray(out.column("probabilities").to_pylist(), dtype=np.float32)
        np.testing.assert_allclose(
            probabilities, pipeline_bundle.model.predict_proba(df), rtol=1e-4, atol=1e-5
        )
        assert set(out.column("model").to_pylist()) == {pipeline_bundle.digest}


def test_arrow_batch_with_nulls_and_dictionary_scored_like_pandas(pipeline_bundle: Signed) -> None:
    pa = pytest.importorskip("pyarrow")
    scorer = Scorer.create(pipeline_bundle.path, trusted_keys=pipeline_bundle.key.public_key)
    df = pipeline_bundle.data.astype({"city": object})
    df.loc[3, "city"] = None
    df.loc[5, "age"] = np.nan
    table = _arrow(df)
    table = table.set_column(
        table.schema.get_field_index("city"), "city", table.column("city").dictionary_encode()
    )
    got = scorer.score(table)
    want = scorer.score(df)
    np.testing.assert_array_equal(got.column("label").to_numpy(), want["label"].to_numpy())
    assert pa.types.is_list(got.schema.field("probabilities").type)


def test_arrow_tensor_column_of_fixed_or_variable_lists(torch_bundle: Signed) -> None:
    pa = pytest.importorskip("pyarrow")
    x = torch_bundle.data
    expected = torch_expected(torch_bundle, x)
    scorer = Scorer.create(
        torch_bundle.path, trusted_keys=torch_bundle.key.public_key, features=["data"]
    )
    output = scorer.model().outputs[0].name
    flat = pa.array(x.reshape(-1))
    fixed = pa.FixedSizeListArray.from_arrays(flat, x.shape[1])
    offsets = pa.array(np.arange(len(x) + 1, dtype=np.int32) * x.shape[1])
    for column in (fixed, pa.ListArray.from_arrays(offsets, flat)):
        out = scorer.score(pa.table({"data": column}))
        got = np.asarray(out.column(output).to_pylist(), dtype=np.float32)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    ragged = pa.array([[1.0] * x.shape[1], [1.0] * (x.shape[1] - 1)], type=pa.list_(pa.float32()))
    with pytest.raises(bundle.InputError, match="different lengths"):
        scorer.score(pa.table({"data": ragged}))


def test_arrow_batch_that_does_not_fit_is_input_error(pipeline_bundle: Signed) -> None:
    pytest.importorskip("pyarrow")
    scorer = Scorer.create(pipeline_bundle.path, trusted_keys=pipeline_bundle.key.public_key)
    df = pipeline_bundle.data
    with pytest.raises(bundle.InputError, match="missing column"):
        scorer.score(_arrow(df.drop(columns=["city"])))
    with pytest.raises(bundle.InputError, match=r"'age' expects numbers"):
        scorer.score(_arrow(df.assign(age=df["city"])))
    with pytest.raises(bundle.InputError, match="already has column"):
        scorer.score(_arrow(df.assign(label=1)))


def test_pandas_arrays_layouts(pipeline_bundle: Signed) -> None:
    import pandas as pd

    key = pipeline_bundle.key.public_key
    df = pipeline_bundle.data
    cells = Scorer.create(pipeline_bundle.path, trusted_keys=key).score(df)
    arrow = Scorer.create(pipeline_bundle.path, trusted_keys=key, arrays="arrow").score(df)
    assert cells["probabilities"].dtype == object
    assert isinstance(arrow["probabilities"].dtype, pd.ArrowDtype)
    np.testing.assert_array_equal(
        np.stack(arrow["probabilities"].to_numpy()), np.stack(cells["probabilities"].to_numpy())
    )
    with pytest.raises(ValueError, match="arrays must be one of"):
        Scorer.create(pipeline_bundle.path, trusted_keys=key, arrays="columns")


def test_string_columns_converted_only_when_not_str(pipeline_bundle: Signed) -> None:
    """A column of str goes to onnxruntime as it is; anything else (None, NaN, numpy
    strings, numbers as categories) is converted with str() as before."""
    model = bundle.load(pipeline_bundle.path, trusted_keys=pipeline_bundle.key.public_key)
    df = pipeline_bundle.data
    as_str = df.assign(city=df["city"].astype(object))
    labels = model.predict(df)
    np.testing.assert_array_equal(model.predict(as_str), labels)
    np.testing.assert_array_equal(model.predict(df.assign(city=df["city"].to_numpy(str))), labels)
    with_none = as_str.copy()
    with_none.loc[0, "city"] = None
    np.testing.assert_array_equal(
        model.predict(with_none), model.predict(with_none.assign(city=with_none["city"].map(str)))
    )
    numbers = df.assign(city=np.arange(len(df)) % 3)
    np.testing.assert_array_equal(
        model.predict(numbers), model.predict(numbers.assign(city=numbers["city"].map(str)))
    )
    np.testing.assert_allclose(
        model.predict_proba(df), pipeline_bundle.model.predict_proba(df), rtol=1e-4, atol=1e-5
    )


def test_pandas_arrow_list_column_feeds_a_tensor_input(torch_bundle: Signed) -> None:
    import pandas as pd
    import pyarrow as pa

    x = torch_bundle.data
    offsets = pa.array(np.arange(len(x) + 1, dtype=np.int32) * x.shape[1])
    column = pa.ListArray.from_arrays(offsets, pa.array(x.reshape(-1)))
    df = pd.DataFrame({"data": pd.arrays.ArrowExtensionArray(column)})
    scorer = Scorer.create(
        torch_bundle.path, trusted_keys=torch_bundle.key.public_key, features=["data"]
    )
    out = scorer.score(df)
    output = scorer.model().outputs[0].name
    np.testing.assert_allclose(
        np.stack(out[output].to_numpy()), torch_expected(torch_bundle, x), rtol=1e-4, atol=1e-5
    )


def test_scoring_stats_count_batches_and_rows(pipeline_bundle: Signed) -> None:
    from bundle.integrations.worker import scoring_stats

    scorer = Scorer.create(pipeline_bundle.path, trusted_keys=pipeline_bundle.key.public_key)
    df = pipeline_bundle.data
    before = scoring_stats()
    scorer.score(df)
    scorer.score(_arrow(df.iloc[:100]))  # an Arrow batch is counted once, not twice
    after = scoring_stats()
    assert after["batches"] - before["batches"] == 2
    assert after["rows"] - before["rows"] == len(df) + 100
    assert after["seconds"] > before["seconds"]
    assert after["cpu_seconds"] >= before["cpu_seconds"]
