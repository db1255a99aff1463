"""Ray Data: map_batches with an actor pool on a local Ray (num_cpus=2, 127.0.0.1)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from integrations_helpers import Signed, torch_expected, weights_sample

import bundle

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")
pd = pytest.importorskip("pandas")

from bundle.integrations import Scorer, cache_stats, reference  # noqa: E402
from bundle.integrations import ray as bray  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    # The actors get PYTHONPATH through the runtime env (Ray Data's actors do not inherit
    # the driver's environment): they must import this checkout and these tests.
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
        runtime_env={"env_vars": {"PYTHONPATH": os.environ["PYTHONPATH"]}},
    )
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    yield
    ray.shutdown()


class Probe(bray.BundlePredictor):
    """The library's predictor, plus which actor scored the batch, its counters then,
    and the threads its session runs with."""

    def __call__(self, batch: Any) -> Any:
        out = super().__call__(batch)
        s = cache_stats()
        assert self.model is not None
        threads = self.model._session.get_session_options().intra_op_num_threads
        worker = f"{os.getpid()}:{s['fetches']}:{s['verifications']}:{threads}"
        rows = len(out) if hasattr(out, "columns") else len(next(iter(out.values())))
        out["worker"] = np.full(rows, worker, dtype=object)
        return out


def _per_worker(column: Any) -> dict[str, tuple[int, ...]]:
    seen: dict[str, tuple[int, ...]] = {}
    for w in column:
        pid, *counts = w.split(":")
        seen[pid] = max(seen.get(pid, ()), tuple(int(c) for c in counts))
    return seen


def _chain(e: BaseException) -> list[BaseException]:
    """The exception and its causes: Ray wraps a worker's exception (in a class that is
    also the original's) under its own."""
    chain = [e]
    while True:
        last = chain[-1]
        nxt = last.__cause__ or getattr(last, "cause", None) or last.__context__
        if not isinstance(nxt, BaseException) or nxt in chain:
            return chain
        chain.append(nxt)


def test_pipeline_one_verification_per_actor(local_ray: None, pipeline_bundle: Signed) -> None:
    df = pipeline_bundle.data
    scorer = Scorer.create(
        pipeline_bundle.path,
        digest=pipeline_bundle.digest,
        trusted_keys=pipeline_bundle.key.public_key,
        lineage="model",
    )
    blob = ray.cloudpickle.dumps(scorer)  # what map_batches ships to every actor
    assert len(blob) < 2048
    assert weights_sample(pipeline_bundle.path) not in blob
    # six blocks from the start: a repartition task would wait for the CPUs the actors hold
    ds = ray.data.from_pandas([df.iloc[i : i + 100] for i in range(0, len(df), 100)])
    out = ds.map_batches(
        Probe,
        fn_constructor_args=(scorer,),
        batch_size=100,
        batch_format="pandas",
        num_cpus=1,
        compute=ray.data.ActorPoolStrategy(size=2),
    ).to_pandas()
    out = out.sort_values(["age", "income"]).reset_index(drop=True)
    expected = df.sort_values(["age", "income"]).reset_index(drop=True)
    np.testing.assert_array_equal(out["label"].to_numpy(), pipeline_bundle.model.predict(expected))
    np.testing.assert_allclose(
        np.stack(out["probabilities"].to_numpy()),
        pipeline_bundle.model.predict_proba(expected),
        rtol=1e-4,
        atol=1e-5,
    )
    assert set(out["model"]) == {pipeline_bundle.digest}
    workers = _per_worker(out["worker"])
    assert len(workers) == 2, workers
    assert all(v == (1, 1, 1) for v in workers.values()), workers  # fetch, verify, 1 CPU


def test_score_helper_threads_from_num_cpus(local_ray: None, torch_bundle: Signed) -> None:
    x = torch_bundle.data
    key = torch_bundle.key.public_key
    output = Scorer.create(torch_bundle.path, trusted_keys=key).model().outputs[0].name
    # from_numpy's tensor column "data" feeds the model's one input; no other operator
    # runs (one actor holds both CPUs, a task would wait for ever)
    out = bray.score(
        ray.data.from_numpy(x),
        torch_bundle.path,
        trusted_keys=key,
        features=["data"],
        concurrency=1,
        num_cpus=2,
        batch_format="numpy",
        batch_size=128,
        lineage="model",
    ).take_all()
    got = np.stack([r[output] for r in out])
    inputs = np.stack([r["data"] for r in out])
    np.testing.assert_allclose(got, torch_expected(torch_bundle, inputs), rtol=1e-4, atol=1e-5)
    assert {r["model"] for r in out} == {torch_bundle.digest}
    scorer = Scorer.create(torch_bundle.path, trusted_keys=key, features=["data"])
    probe = (
        ray.data.from_numpy(x[:10])
        .map_batches(
            Probe,
            fn_constructor_args=(scorer,),
            num_cpus=2,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=1),
        )
        .take_all()
    )
    assert {r["worker"].split(":")[3] for r in probe} == {"2"}  # the actor's 2 CPUs


def test_tampered_bundle_fails_the_job_with_its_error(
    local_ray: None, tampered_pipeline: Signed
) -> None:
    ref = reference(
        tampered_pipeline.path,
        digest=tampered_pipeline.digest,
        trusted_keys=tampered_pipeline.key.public_key,
    )
    ctx = ray.data.DataContext.get_current()
    ctx.raise_original_map_exception = True  # what the README tells users to set
    try:
        ds = ray.data.from_pandas(tampered_pipeline.data.iloc[:50])  # takes the context
        with pytest.raises(Exception) as info:
            bray.score(ds, ref).materialize()
    finally:
        ctx.raise_original_map_exception = False
    assert any(isinstance(e, bundle.IntegrityError) for e in _chain(info.value)), _chain(info.value)


def test_bad_batch_is_input_error(local_ray: None, pipeline_bundle: Signed) -> None:
    ds = ray.data.from_pandas(pipeline_bundle.data.iloc[:50].drop(columns=["city"]))
    with pytest.raises(Exception) as info:
        bray.score(
            ds, pipeline_bundle.path, trusted_keys=pipeline_bundle.key.public_key
        ).materialize()
    # Ray Data's default: the UDF's exception wrapped, its traceback in the message
    assert "bundle.errors.InputError: missing column(s) ['city']" in str(info.value)


def test_score_helper_arrow_batches(local_ray: None, pipeline_bundle: Signed) -> None:
    """The default batch format is Ray's own Arrow blocks: [N, 2] probabilities come
    back as an Arrow list column, the same values as scikit-learn's."""
    import pyarrow as pa

    df = pipeline_bundle.data
    out = bray.score(
        ray.data.from_pandas(df),
        pipeline_bundle.path,
        trusted_keys=pipeline_bundle.key.public_key,
        batch_size=200,
    ).to_arrow_refs()
    table = pa.concat_tables(ray.get(out))
    assert pa.types.is_list(table.schema.field("probabilities").type)
    got = table.to_pandas().sort_values(["age", "income"]).reset_index(drop=True)
    expected = df.sort_values(["age", "income"]).reset_index(drop=True)
    np.testing.assert_array_equal(got["label"].to_numpy(), pipeline_bundle.model.predict(expected))
    np.testing.assert_allclose(
        np.stack(got["probabilities"].to_numpy()),
        pipeline_bundle.model.predict_proba(expected),
        rtol=1e-4,
        atol=1e-5,
    )
