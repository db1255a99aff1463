"""bundle.Store on a local folder and on a real S3 endpoint (moto's server on 127.0.0.1):
versions, signed aliases, resolution, loads, and every refusal the issue lists."""

from __future__ import annotations

import base64
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import save_tiny

import bundle
from bundle.store import log


def _put(store: bundle.Store, key: str, data: bytes) -> None:
    """Overwrite an object behind the store's back (an attacker with bucket access)."""
    store.backend.fs.pipe_file(store.backend.path(key), data)


def _rm(store: bundle.Store, key: str) -> None:
    store.backend.fs.rm_file(store.backend.path(key))


def _get(store: bundle.Store, key: str) -> bytes:
    return bytes(store.backend.fs.cat_file(store.backend.path(key)))


def _record_key(seq: int, alias: str = "production") -> str:
    return f"aliases/tiny/{alias}/{log.record_key(seq)}"


def _blob_keys(store: bundle.Store) -> list[str]:
    return store.backend.listdir("blobs/sha256")


X = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)


def _predict(model: bundle.Model) -> Any:
    return model.run({model.inputs[0].name: X})


# --------------------------------------------------------------------------- versions


def test_push_is_verified_immutable_and_idempotent(
    make_store: Any, tiny_bundles: dict[str, Any], store_key: bundle.PrivateKey, tmp_path: Path
) -> None:
    store = make_store()
    v1 = store.push(tiny_bundles["1"])
    assert (v1.name, v1.version, v1.size) == ("tiny", "1", tiny_bundles["1"].stat().st_size)
    import hashlib

    assert v1.digest == hashlib.sha256(tiny_bundles["1"].read_bytes()).hexdigest()
    assert store.push(tiny_bundles["1"]) == v1  # the same bytes again: a no-op
    store.push(tiny_bundles["2"])
    assert [v.version for v in store.versions("tiny")] == ["1", "2"]
    assert store.names() == ["tiny"]
    assert _get(store, f"blobs/sha256/{v1.digest}") == tiny_bundles["1"].read_bytes()

    # Other bytes under an existing name and version: refused, nothing changed.
    other = save_tiny(tmp_path / "other.mbundle", store_key, seed=7, version="1")
    with pytest.raises(bundle.StoreConflictError, match="immutable"):
        store.push(other)
    assert store.resolve("tiny:1").digest == v1.digest
    assert len(_blob_keys(store)) == 2


@pytest.mark.parametrize("case", ["unsigned", "untrusted"])
def test_push_stores_nothing_it_cannot_verify(make_store: Any, tmp_path: Path, case: str) -> None:
    store = make_store()
    key = None if case == "unsigned" else bundle.generate_key()
    path = save_tiny(tmp_path / "x.mbundle", key, version="1")
    with pytest.raises(bundle.SignatureError):
        store.push(path)
    assert store.names() == []
    assert _blob_keys(store) == []


def test_push_refuses_a_corrupt_bundle(
    make_store: Any, tiny_bundles: dict[str, Any], tmp_path: Path
) -> None:
    store = make_store()
    data = bytearray(tiny_bundles["1"].read_bytes())
    data[200] ^= 1  # inside the first (graph) entry
    bad = tmp_path / "bad.mbundle"
    bad.write_bytes(bytes(data))
    with pytest.raises(bundle.BundleError):
        store.push(bad)
    assert _blob_keys(store) == []


# --------------------------------------------------------------------------- aliases


def test_promote_resolve_history_rollback(
    make_store: Any, tiny_bundles: dict[str, Any], store_key: bundle.PrivateKey
) -> None:
    store = make_store()
    digests = {v: store.push(p).digest for v, p in tiny_bundles.items()}
    r0 = store.promote("tiny", "production", "1", signing_key=store_key, reason="first")
    r1 = store.promote("tiny", "production", "2", signing_key=store_key)
    r2 = store.promote("tiny", "production", f"sha256:{digests['3']}", signing_key=store_key)
    assert [r.seq for r in (r0, r1, r2)] == [0, 1, 2]
    assert r2.previous == r1.target
    assert r2.previous_record == r1.record_sha256
    assert r0.reason == "first"
    assert r0.signers == (store_key.key_id,)

    fresh = make_store()  # another client: reads and verifies everything itself
    got = fresh.resolve("tiny@production")
    assert (got.version, got.digest) == ("3", digests["3"])
    assert [r.target.version for r in fresh.history("tiny", "production")] == ["1", "2", "3"]

    # Rolling back twice goes two steps back, never forward to what was left.
    assert store.rollback("tiny", "production", signing_key=store_key).target.version == "2"
    assert store.rollback("tiny", "production", signing_key=store_key).target.version == "1"
    assert store.rollback("tiny", "production", signing_key=store_key, to="3").target.version == "3"
    hist = fresh.history("tiny", "production")
    assert [(r.action, r.target.version) for r in hist] == [
        ("promote", "1"),
        ("promote", "2"),
        ("promote", "3"),
        ("rollback", "2"),
        ("rollback", "1"),
        ("rollback", "3"),
    ]
    assert fresh.aliases("tiny") == ["production"]


def test_load_runs_what_the_alias_names(
    make_store: Any, tiny_bundles: dict[str, Any], store_key: bundle.PrivateKey, policy: Any
) -> None:
    store = make_store()
    for p in tiny_bundles.values():
        store.push(p)
    store.promote("tiny", "production", "2", signing_key=store_key)
    model = make_store().load("tiny@production")
    want = bundle.load(tiny_bundles["2"], trust=policy)
    assert model.manifest.model.version == "2"
    for a, b in zip(_predict(model).values(), _predict(want).values(), strict=True):
        np.testing.assert_array_equal(a, b)
    by_version = make_store().load("tiny:3")
    assert by_version.manifest.model.version == "3"


@pytest.mark.parametrize(
    ("ref", "error"),
    [
        ("nobody@production", bundle.StoreNotFoundError),
        ("tiny@canary", bundle.StoreNotFoundError),
        ("tiny:9", bundle.StoreNotFoundError),
        ("nobody:1", bundle.StoreNotFoundError),
        ("sha256:" + "0" * 64, bundle.StoreNotFoundError),
        ("tiny", ValueError),
        ("../x@production", ValueError),
        ("tiny@a/b", ValueError),
    ],
)
def test_unknown_references(
    make_store: Any, tiny_bundles: dict[str, Any], store_key: Any, ref: str, error: type[Exception]
) -> None:
    store = make_store()
    store.push(tiny_bundles["1"])
    store.promote("tiny", "production", "1", signing_key=store_key)
    with pytest.raises(error):
        store.resolve(ref)


def test_promote_refuses_unknown_targets_and_keys(
    make_store: Any, tiny_bundles: dict[str, Any], store_key: Any
) -> None:
    store = make_store()
    store.push(tiny_bundles["1"])
    with pytest.raises(bundle.StoreNotFoundError):
        store.promote("tiny", "production", "2", signing_key=store_key)
    with pytest.raises(bundle.StoreNotFoundError):
        store.rollback("tiny", "production", signing_key=store_key)
    with pytest.raises(bundle.KeyFileError):
        store.promote("tiny", "production", "1", signing_key=[])
    # A record signed by a key the policy does not trust is refused before it is kept.
    with pytest.raises(bundle.SignatureError):
        store.promote("tiny", "production", "1", signing_key=bundle.generate_key())
    assert store.aliases("tiny") == []


# --------------------------------------------------------------------------- bad records


def _signed_record(
    store: bundle.Store,
    seq: int,
    version: str,
    key: Any,
    previous: Any = None,
    alias: str = "production",
    **kw: Any,
) -> bytes:
    v = store.resolve(f"tiny:{version}")
    st = log.build_record(
        "tiny",
        alias,
        seq,
        "promote",
        log.Target(v.digest, version, v.size),
        previous,
        time=store.trust.freshness.time(),
        **kw,
    )
    return log.sign_record(st, [key])


@pytest.fixture
def promoted(make_store: Any, tiny_bundles: dict[str, Any], store_key: Any) -> bundle.Store:
    """A store with tiny@production promoted 1, 2, 3 (seq 0..2)."""
    store: bundle.Store = make_store()
    for p in tiny_bundles.values():
        store.push(p)
    for v in ("1", "2", "3"):
        store.promote("tiny", "production", v, signing_key=store_key)
    return store


def test_unsigned_record_is_refused(promoted: bundle.Store, make_store: Any) -> None:
    env = json.loads(_get(promoted, _record_key(2)))
    env["signatures"] = []
    _put(promoted, _record_key(2), json.dumps(env).encode())
    with pytest.raises(bundle.SignatureError, match="unsigned"):
        make_store().resolve("tiny@production")


def test_untrusted_record_is_refused(promoted: bundle.Store, make_store: Any) -> None:
    stranger = bundle.generate_key()
    tip = promoted.history("tiny", "production")[-1]
    _put(promoted, _record_key(3), _signed_record(promoted, 3, "1", stranger, tip))
    with pytest.raises(bundle.SignatureError, match="0 trusted key"):
        make_store().resolve("tiny@production")


def test_edited_record_is_refused(promoted: bundle.Store, make_store: Any) -> None:
    env = json.loads(_get(promoted, _record_key(1)))
    payload = json.loads(base64.b64decode(env["payload"]))
    payload["predicate"]["reason"] = "edited"
    env["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    _put(promoted, _record_key(1), json.dumps(env).encode())
    with pytest.raises(bundle.SignatureError, match="record 1"):
        make_store().resolve("tiny@production")


def test_deleted_record_is_a_gap(promoted: bundle.Store, make_store: Any) -> None:
    _rm(promoted, _record_key(1))
    with pytest.raises(bundle.StoreLogError, match="gap"):
        make_store().resolve("tiny@production")


def test_record_copied_from_another_alias_is_refused(
    promoted: bundle.Store, make_store: Any, store_key: Any
) -> None:
    promoted.promote("tiny", "staging", "3", signing_key=store_key)
    _put(promoted, _record_key(0), _get(promoted, _record_key(0, "staging")))
    with pytest.raises(bundle.StoreLogError, match="moved from elsewhere"):
        make_store().resolve("tiny@production")


def test_fork_is_refused(promoted: bundle.Store, make_store: Any, store_key: Any) -> None:
    """A validly signed record 1 put in place of the real one (a trusted key signing two
    histories): the chain to record 2 breaks."""
    first = promoted.history("tiny", "production")[0]
    _put(
        promoted,
        _record_key(1),
        _signed_record(promoted, 1, "3", store_key, first, reason="other history"),
    )
    with pytest.raises(bundle.StoreLogError, match="fork"):
        make_store().resolve("tiny@production")


def test_replayed_or_frozen_alias_is_refused_with_state(
    promoted: bundle.Store, make_store: Any, tmp_path: Path
) -> None:
    state = tmp_path / "client-state.json"
    client = make_store(state=state)
    assert client.resolve("tiny@production").version == "3"
    # An attacker deletes the newest record: the log looks whole, one step older.
    _rm(promoted, _record_key(2))
    with pytest.raises(bundle.FreshnessError, match="replayed or frozen"):
        make_store(state=state).resolve("tiny@production")
    # Without the state file the same log verifies (the state is what catches it).
    assert make_store(state=None).resolve("tiny@production").version == "2"


def test_rewritten_history_is_refused_with_state(
    promoted: bundle.Store, make_store: Any, store_key: Any, tmp_path: Path
) -> None:
    state = tmp_path / "client-state.json"
    make_store(state=state).resolve("tiny@production")
    # The whole log replaced by another valid chain of the same length.
    hist = promoted.history("tiny", "production")
    r1 = hist[1]
    fake = _signed_record(promoted, 2, "1", store_key, r1, reason="rewritten")
    _put(promoted, _record_key(2), fake)
    with pytest.raises(bundle.StoreLogError, match="rewritten"):
        make_store(state=state).resolve("tiny@production")


def test_expired_alias_is_refused(
    make_store: Any, tiny_bundles: dict[str, Any], store_key: Any
) -> None:
    import datetime as dt

    store = make_store()
    store.push(tiny_bundles["1"])
    store.promote("tiny", "production", "1", signing_key=store_key, expires="2030-01-01T00:00:00Z")
    later = bundle.TrustPolicy(
        keys=store_key.public_key, now=dt.datetime(2031, 1, 1, tzinfo=dt.timezone.utc)
    )
    with pytest.raises(bundle.FreshnessError, match="expired"):
        make_store(trust=later).resolve("tiny@production")
    assert make_store().resolve("tiny@production").version == "1"


# --------------------------------------------------------------------------- bytes


def test_blob_that_does_not_match_its_digest(
    promoted: bundle.Store, make_store: Any, tiny_bundles: dict[str, Any]
) -> None:
    digest = promoted.resolve("tiny:3").digest
    _put(promoted, f"blobs/sha256/{digest}", tiny_bundles["1"].read_bytes())
    client = make_store()
    with pytest.raises(bundle.IntegrityError, match="hash to"):
        client.load("tiny@production")
    assert not list((client.cache.directory / "sha256").iterdir())  # nothing kept


def test_cache_entry_changed_on_disk(promoted: bundle.Store, make_store: Any) -> None:
    client = make_store()
    client.load("tiny@production")
    entry = client.cache.path(client.resolve("tiny@production").digest)
    data = bytearray(entry.read_bytes())
    data[-30] ^= 1
    entry.write_bytes(bytes(data))
    with pytest.raises(bundle.IntegrityError, match="changed on disk"):
        client.load("tiny@production")
    assert client.load("tiny@production").manifest.model.version == "3"  # fetched again


@pytest.mark.parametrize("where", ["blob", "version"])
def test_push_interrupted_midway_leaves_nothing_half_written(
    make_store: Any, tiny_bundles: dict[str, Any], monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    store = make_store()
    backend = store.backend

    class Interrupted(BaseException):
        pass

    if where == "blob":
        # The upload dies after half of the bytes went out.
        real = backend.fs.put_file if store.url.startswith("s3://") else None

        def dying_upload(key: str, local: Path) -> None:
            if real is not None:
                raise Interrupted  # an S3 PutObject is atomic: it happens or it does not
            data = local.read_bytes()
            tmp = Path(backend.path(".tmp")) / "x.part"
            tmp.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(data[: len(data) // 2])
            raise Interrupted

        monkeypatch.setattr(backend, "upload", dying_upload)
    else:
        real_create = backend.create

        def dying_create(key: str, data: bytes) -> bool:
            if key.startswith("versions/"):
                raise Interrupted
            return bool(real_create(key, data))

        monkeypatch.setattr(backend, "create", dying_create)
    with pytest.raises(Interrupted):
        store.push(tiny_bundles["1"])
    monkeypatch.undo()
    assert store.versions("tiny") == []
    with pytest.raises(bundle.StoreNotFoundError):
        store.resolve("tiny:1")
    blobs = _blob_keys(store)
    assert blobs == ([] if where == "blob" else [store.cache.add(tiny_bundles["1"])[1]])
    # gc removes what the interrupted push left (after the grace period), and a new push
    # completes.
    assert store.gc(grace=3600).deleted == ()
    report = store.gc(grace=0)
    assert list(report.deleted) == blobs
    assert _blob_keys(store) == []
    v = store.push(tiny_bundles["1"])
    assert make_store().load("tiny:1").manifest.model.version == v.version


def test_gc_keeps_what_records_reference(
    promoted: bundle.Store, make_store: Any, tmp_path: Path, store_key: Any
) -> None:
    orphan = save_tiny(tmp_path / "orphan.mbundle", store_key, seed=9, version="9")
    digest = promoted.cache.add(orphan)[1]
    promoted.backend.upload(f"blobs/sha256/{digest}", orphan)
    dry = promoted.gc(grace=0, dry_run=True)
    assert dry.deleted == (digest,)
    assert dry.kept == 3
    assert digest in _blob_keys(promoted)
    assert promoted.gc(grace=0).deleted == (digest,)
    assert len(_blob_keys(promoted)) == 3
    assert make_store().load("tiny@production").manifest.model.version == "3"


# --------------------------------------------------------------------------- other places


def test_memory_store(
    tiny_bundles: dict[str, Any], store_key: Any, policy: Any, tmp_path: Path
) -> None:
    store = bundle.Store("memory://store-test", trust=policy, cache_dir=tmp_path / "c")
    store.push(tiny_bundles["1"])
    store.promote("tiny", "production", "1", signing_key=store_key)
    assert store.load("tiny@production").manifest.model.version == "1"


def test_unwritable_protocol_is_refused(
    policy: Any, tmp_path: Path, tiny_bundles: dict[str, Any]
) -> None:
    store = bundle.Store("http://127.0.0.1:9/nothing", trust=policy, cache_dir=tmp_path)
    with pytest.raises(bundle.StoreError, match="exclusively"):
        store.backend.create("x", b"")


def test_bundle_load_from_s3_and_http(
    s3_endpoint: Any, tiny_bundles: dict[str, Any], policy: Any, tmp_path: Path
) -> None:
    bucket = s3_endpoint.bucket()
    data = tiny_bundles["2"].read_bytes()
    import s3fs

    fs = s3fs.S3FileSystem(**s3_endpoint.options)
    fs.pipe_file(f"{bucket}/m/tiny.mbundle", data)
    model = bundle.load(
        f"s3://{bucket}/m/tiny.mbundle",
        trust=policy,
        storage_options=s3_endpoint.options,
        cache_dir=tmp_path / "c",
    )
    assert model.manifest.model.version == "2"
    # The same object over plain HTTP(S): a presigned URL, as one hands out to a job.
    import boto3

    url = boto3.client(
        "s3",
        endpoint_url=s3_endpoint.url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    ).generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "m/tiny.mbundle"}, ExpiresIn=600
    )
    assert url.startswith("http://127.0.0.1:")
    model = bundle.load(url, trust=policy, cache_dir=tmp_path / "h")
    assert model.manifest.model.version == "2"
    # Bytes that are not a bundle signed by a trusted key: refused after the fetch.
    with pytest.raises(bundle.SignatureError):
        bundle.load(
            f"s3://{bucket}/m/tiny.mbundle",
            trusted_keys=bundle.generate_key().public_key,
            storage_options=s3_endpoint.options,
            cache_dir=tmp_path / "c",
        )
    with pytest.raises(bundle.StoreNotFoundError):
        bundle.load(
            f"s3://{bucket}/m/none.mbundle",
            trust=policy,
            storage_options=s3_endpoint.options,
            cache_dir=tmp_path / "c",
        )


# --------------------------------------------------------------------------- the race


@pytest.mark.slow
def test_two_processes_racing_on_one_alias(
    store_location: Any,
    make_store: Any,
    tiny_bundles: dict[str, Any],
    store_key: Any,
    tmp_path: Path,
) -> None:
    """2 writers x N promotions of one alias: 2N records, seq 0..2N-1, no gaps, no
    duplicates, each record's previous the record before it, each writer's N all there."""
    import os
    import subprocess
    import sys
    import time

    n = int(os.environ.get("STORE_RACE_N", "20"))
    url, options = store_location
    store = make_store()
    store.push(tiny_bundles["1"])
    store.push(tiny_bundles["2"])
    key_path = tmp_path / "key.pem"
    key_path.write_bytes(store_key.private_pem())
    start = tmp_path / "go"
    racer = Path(__file__).with_name("racer.py")
    env = {**os.environ, "PYTHONPATH": str(Path(bundle.__file__).parents[1])}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(racer),
                url,
                json.dumps(options or {}),
                str(key_path),
                w,
                str(n),
                str(start),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        for w in ("a", "b")
    ]
    time.sleep(0.5)
    start.touch()
    won = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err.decode()[-3000:]
        won.append(json.loads(out))
    hist = make_store().history("tiny", "production")  # verifies signatures and chain
    assert [r.seq for r in hist] == list(range(2 * n))
    assert sorted(won[0] + won[1]) == list(range(2 * n))  # each seq won by exactly one
    for before, after in itertools.pairwise(hist):
        assert after.previous == before.target
        assert after.previous_record == before.record_sha256
    for w, seqs in zip("ab", won, strict=True):
        assert [hist[s].reason for s in seqs] == [f"{w}:{i}" for i in range(n)]


@pytest.mark.slow
def test_online_update_example_runs(tmp_path: Path) -> None:
    """examples/online_update.py end to end: restore from production, train, push,
    promote to staging and production, roll back -- it exits 0 only if all verified."""
    import os
    import subprocess
    import sys

    pytest.importorskip("torch")
    root = Path(bundle.__file__).parents[1]
    res = subprocess.run(
        [sys.executable, str(root / "examples" / "online_update.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(root)},
        check=False,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "2 rollback v1 'incident 42'" in res.stdout


def test_one_cache_shared_by_concurrent_processes(
    tmp_path: Path, tiny_bundles: dict[str, Any], store_key: Any, policy: Any
) -> None:
    """Two processes fetching and loading the same digests into one cache at once: every
    load verifies, and the entries end whole (temp file + rename, hashed on use)."""
    import os
    import subprocess
    import sys
    import textwrap

    url = str(tmp_path / "store")
    store = bundle.Store(url, trust=policy, cache_dir=tmp_path / "seed")
    for v in ("1", "2", "3"):
        store.push(tiny_bundles[v])
    key_pub = tmp_path / "k.pub"
    key_pub.write_bytes(store_key.public_key.pem())
    child = textwrap.dedent("""
        import sys, bundle
        url, cache, pub = sys.argv[1:4]
        for i in range(15):
            s = bundle.Store(url, trust=bundle.TrustPolicy(keys=pub), cache_dir=cache)
            v = str(1 + i % 3)
            assert s.load(f"tiny:{v}").manifest.model.version == v
        print("ok")
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(bundle.__file__).parents[1])}
    cache = tmp_path / "shared-cache"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", child, url, str(cache), str(key_pub)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        for _ in range(2)
    ]
    for p in procs:
        _out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-2000:]
    entries = sorted(p.name for p in (cache / "sha256").iterdir())
    assert entries == sorted(store.resolve(f"tiny:{v}").digest for v in ("1", "2", "3"))
    cached = bundle.Store(url, trust=policy, cache_dir=cache)
    for v in ("1", "2", "3"):
        assert cached.cache.get(cached.resolve(f"tiny:{v}").digest) is not None
