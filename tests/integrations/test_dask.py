"""Dask: map_partitions on a LocalCluster of two worker processes (127.0.0.1)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from integrations_helpers import Signed, torch_expected, weights_sample

import bundle

dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")
pd = pytest.importorskip("pandas")

from bundle.integrations import cache_stats, reference  # noqa: E402
from bundle.integrations import dask as bdask  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        worker_dashboard_address=None,
    )
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


def test_pipeline_scored_once_per_worker(client: Any, pipeline_bundle: Signed) -> None:
    df = pipeline_bundle.data
    ddf = dd.from_pandas(df, npartitions=6)
    scored = bdask.score(
        ddf,
        pipeline_bundle.path,
        digest=pipeline_bundle.digest,
        trusted_keys=pipeline_bundle.key.public_key,
        lineage="model",
    )
    assert list(scored.columns) == [*df.columns, "label", "probabilities", "model"]
    out = scored.compute().sort_index()
    np.testing.assert_array_equal(out["label"].to_numpy(), pipeline_bundle.model.predict(df))
    np.testing.assert_allclose(
        np.stack(out["probabilities"].to_numpy()),
        pipeline_bundle.model.predict_proba(df),
        rtol=1e-4,
        atol=1e-5,
    )
    assert set(out["model"]) == {pipeline_bundle.digest}
    stats = client.run(cache_stats)
    assert len(stats) == 2
    for s in stats.values():  # 6 partitions, 2 workers: each verified once, by the plugin
        assert (s["fetches"], s["verifications"]) == (1, 1), s
        assert s["cached"] == 1


def test_graph_carries_the_reference_not_the_model(client: Any, torch_bundle: Signed) -> None:
    import cloudpickle

    names = [f"f{i}" for i in range(torch_bundle.data.shape[1])]
    ddf = dd.from_pandas(pd.DataFrame(torch_bundle.data, columns=names), npartitions=4)
    scored = bdask.score(
        ddf, torch_bundle.path, trusted_keys=torch_bundle.key.public_key, features=names
    )
    graph = cloudpickle.dumps(dict(scored.__dask_graph__()))
    assert weights_sample(torch_bundle.path) not in graph
    # the input partitions are in the graph too; the model's ~70 kB of weights are not
    data_bytes = torch_bundle.data.nbytes
    assert len(graph) < data_bytes + 30_000, (len(graph), data_bytes)
    out = scored.compute()
    output = next(c for c in out.columns if c not in names)
    np.testing.assert_allclose(
        np.stack(out[output].to_numpy()),
        torch_expected(torch_bundle, torch_bundle.data),
        rtol=1e-4,
        atol=1e-5,
    )


def test_tampered_bundle_fails_with_its_error(
    client: Any, pipeline_bundle: Signed, tampered_pipeline: Signed
) -> None:
    ddf = dd.from_pandas(pipeline_bundle.data, npartitions=2)
    ref = reference(
        tampered_pipeline.path,
        digest=tampered_pipeline.digest,
        trusted_keys=pipeline_bundle.key.public_key,
    )
    with pytest.raises(bundle.IntegrityError):
        bdask.score(ddf, ref)  # the plugin verifies on every worker, before any task
    lazy = bdask.score(ddf, ref, preload=False)
    with pytest.raises(bundle.IntegrityError):
        lazy.compute()


def test_bad_batch_is_input_error_in_the_client(client: Any, pipeline_bundle: Signed) -> None:
    ddf = dd.from_pandas(pipeline_bundle.data.drop(columns=["city"]), npartitions=2)
    scored = bdask.score(ddf, pipeline_bundle.path, trusted_keys=pipeline_bundle.key.public_key)
    with pytest.raises(bundle.InputError, match="city"):
        scored.compute()


def test_arrow_list_outputs_with_their_meta(client: Any, pipeline_bundle: Signed) -> None:
    df = pipeline_bundle.data
    scored = bdask.score(
        dd.from_pandas(df, npartitions=3),
        pipeline_bundle.path,
        trusted_keys=pipeline_bundle.key.public_key,
        arrays="arrow",
    )
    assert isinstance(scored.dtypes["probabilities"], pd.ArrowDtype)
    out = scored.compute().sort_index()
    assert out.dtypes["probabilities"] == scored.dtypes["probabilities"]
    np.testing.assert_allclose(
        np.stack(out["probabilities"].to_numpy()),
        pipeline_bundle.model.predict_proba(df),
        rtol=1e-4,
        atol=1e-5,
    )
